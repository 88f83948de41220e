//! Calling a tonic service's unary methods with encoded messages, without
//! HTTP/2 framing: what the generated `<service>_dispatch` modules use.
//!
//! The HTTP/JSON side of the gateway transcodes a request to protobuf bytes
//! and needs the answer as bytes. Going through the tonic server in process
//! builds an HTTP request, frames the message, routes it, and unframes it
//! again both ways; that was about a tenth of the gateway's CPU per JSON
//! call. These calls hand the decoded message straight to the same trait
//! method the gRPC server calls, with the same metadata.

use std::future::Future;
use std::pin::Pin;

use prost::bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};

/// A unary call in flight, answering the encoded response message.
pub type UnaryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send + 'a>>;

/// What a generated `<service>_dispatch::unary` gives.
pub enum Dispatched<'a> {
    /// The call, under way.
    Call(UnaryFuture<'a>),
    /// Not a unary method of that service: the request, untouched.
    Elsewhere(Request<Bytes>),
}

impl std::fmt::Debug for Dispatched<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dispatched::Call(_) => f.write_str("Dispatched::Call"),
            Dispatched::Elsewhere(request) => f
                .debug_tuple("Dispatched::Elsewhere")
                .field(request)
                .finish(),
        }
    }
}

/// Decodes the request message, calls `method`, encodes the answer.
/// Metadata and extensions pass through both ways, as through tonic.
pub fn call<'a, Req, Resp, F, Fut>(request: Request<Bytes>, method: F) -> UnaryFuture<'a>
where
    Req: Message + Default + 'a,
    Resp: Message + 'a,
    F: FnOnce(Request<Req>) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'a,
{
    Box::pin(async move {
        let (metadata, extensions, bytes) = request.into_parts();
        // tonic's server answers an undecodable message with INTERNAL too.
        let message = Req::decode(bytes)
            .map_err(|e| Status::internal(format!("cannot decode the request message: {e}")))?;
        let response = method(Request::from_parts(metadata, extensions, message)).await?;
        let (metadata, message, extensions) = response.into_parts();
        Ok(Response::from_parts(
            metadata,
            Bytes::from(message.encode_to_vec()),
            extensions,
        ))
    })
}
