//! Calls the gRPC services in process, with the same metadata and deadline
//! a gRPC caller gives them, so authentication, deadlines, validation and
//! errors are exactly those of gRPC. A unary method goes straight to the
//! service trait through [`Dispatch`] (the generated `_dispatch` modules);
//! server streaming, and a method `Dispatch` does not know, go through the
//! tonic services the gRPC listener serves, as gRPC-framed requests with a
//! raw-bytes codec.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use nordlys_proto::dispatch::Dispatched;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Status, Streaming};

/// Passes message bytes through untouched: the JSON side has encoded them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The public services' unary methods called with encoded messages.
pub(crate) trait Dispatch: Send + Sync + std::fmt::Debug {
    /// The call of `path` (`/package.Service/Method`), or the request back
    /// when `path` is not a unary method this dispatches.
    fn unary(&self, path: &str, request: tonic::Request<Bytes>) -> Dispatched<'_>;
}

/// The in-process gRPC services.
#[derive(Debug, Clone)]
pub(crate) struct Invoker {
    routes: Routes,
    direct: Option<Arc<dyn Dispatch>>,
}

impl Invoker {
    pub(crate) fn new(routes: Routes, direct: Option<Arc<dyn Dispatch>>) -> Invoker {
        Invoker { routes, direct }
    }

    fn request(metadata: MetadataMap, timeout: Duration, message: Bytes) -> tonic::Request<Bytes> {
        let mut request =
            tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
        request.set_timeout(timeout);
        request
    }

    async fn client(&self) -> Result<tonic::client::Grpc<Routes>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.routes.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
        Ok(grpc)
    }

    /// A unary call to `path` (`/package.Service/Method`); the answer's
    /// metadata and message bytes.
    pub(crate) async fn unary(
        &self,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Bytes,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let request = Self::request(metadata, timeout, message);
        let request = match &self.direct {
            Some(direct) => match direct.unary(path, request) {
                Dispatched::Call(call) => return Self::bounded(timeout, call).await,
                Dispatched::Elsewhere(request) => request,
            },
            None => request,
        };
        let path = path
            .parse()
            .map_err(|_| Status::internal(format!("bad gRPC path {path:?}")))?;
        let mut grpc = self.client().await?;
        Self::bounded(timeout, grpc.unary(request, path, RawCodec)).await
    }

    /// The services bound their own work by the deadline; this bounds a
    /// service that would not.
    async fn bounded(
        timeout: Duration,
        call: impl std::future::Future<Output = Result<tonic::Response<Bytes>, Status>>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded("the call's deadline passed"))??;
        let (metadata, message, _) = response.into_parts();
        Ok((metadata, message))
    }

    /// A server-streaming call; the answer's metadata and message stream.
    /// Without a `timeout` the stream lasts until the service ends it.
    pub(crate) async fn server_streaming(
        &self,
        path: &str,
        metadata: MetadataMap,
        timeout: Option<Duration>,
        message: Bytes,
    ) -> Result<(MetadataMap, Streaming<Bytes>), Status> {
        let path = path
            .parse()
            .map_err(|_| Status::internal(format!("bad gRPC path {path:?}")))?;
        let mut grpc = self.client().await?;
        let request = match timeout {
            Some(timeout) => Self::request(metadata, timeout, message),
            None => tonic::Request::from_parts(metadata, tonic::Extensions::default(), message),
        };
        let response = grpc.server_streaming(request, path, RawCodec).await?;
        let (metadata, stream, _) = response.into_parts();
        Ok((metadata, stream))
    }
}
