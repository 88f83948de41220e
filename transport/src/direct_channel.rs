//! A unary gRPC client on one HTTP/2 connection, driven from the caller's
//! task.
//!
//! A tonic `Channel` puts four tasks between a call and the socket: its
//! `Buffer` worker, hyper's dispatch task, and per call a task that pipes
//! the request body and one that hands the response back, before h2's
//! connection task writes the frames. Each is a wake and a poll per call;
//! in a profile of the gateway on the direct route they were 13 % of its
//! CPU. [`DirectChannel`] opens the stream with h2's own `SendRequest`
//! from the caller's task, sends the whole message with the headers, and
//! reads the answer there too: the connection task is the only hop left.
//!
//! It is for unary calls: the request body is collected before it is sent.
//! A connection that breaks is not reconnected: every later call fails at
//! once, so the balancer ejects the endpoint and discovery brings it back
//! with a new channel after the cool-down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::OnceCell;
use tonic::codegen::http;
use tonic::Status;

use crate::coalesce::connect_tcp;
use crate::BoxError;

// hyper's client defaults (tonic's too): the spec's 64 KiB windows would
// stall large answers on a fast link.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// How a [`DirectChannel`] connects and watches its connection.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// Longest wait for the TCP connection, the TLS handshake and the
    /// HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// A PING is sent this often, idle or not.
    pub keep_alive_interval: Duration,
    /// A PING not answered within this closes the connection: it finds a
    /// peer that stopped answering without closing.
    pub keep_alive_timeout: Duration,
    /// TLS for the connection (the mesh's, from
    /// [`MeshTls::client_config`](crate::tls::MeshTls::client_config)); the
    /// server name checked is the endpoint's host. `None`: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for DirectOptions {
    fn default() -> DirectOptions {
        DirectOptions {
            connect_timeout: Duration::from_millis(500),
            keep_alive_interval: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// A unary gRPC client on one HTTP/2 connection to `host:port`, opened by
/// the first call. Cheap to clone: clones share the connection, which
/// closes when the last clone is dropped and its calls have ended.
#[derive(Debug, Clone)]
pub struct DirectChannel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    authority: http::uri::Authority,
    options: DirectOptions,
    /// The connection, or why there is none.
    send: OnceCell<Result<h2::client::SendRequest<Bytes>, String>>,
}

impl DirectChannel {
    /// A channel to `endpoint` (`host:port`); nothing is opened until the
    /// first call.
    pub fn lazy(endpoint: &str, options: DirectOptions) -> Result<DirectChannel, BoxError> {
        let authority: http::uri::Authority = endpoint
            .parse()
            .map_err(|e| format!("bad gRPC endpoint {endpoint:?}: {e}"))?;
        if authority.port_u16().is_none() {
            return Err(format!("gRPC endpoint {endpoint:?} has no port").into());
        }
        Ok(DirectChannel {
            inner: Arc::new(Inner {
                authority,
                options,
                send: OnceCell::new(),
            }),
        })
    }
}

impl Inner {
    /// The connection's request handle, connecting first if no call has.
    /// A failed connect is kept, like a broken connection: every later
    /// call fails at once rather than waiting on a connect of its own.
    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
        let connected =
            self.send
                .get_or_init(|| async {
                    let connected =
                        match tokio::time::timeout(self.options.connect_timeout, self.connect())
                            .await
                        {
                            Ok(Ok(send)) => return Ok(send),
                            Ok(Err(e)) => format!("direct gRPC to {}: {e}", self.authority),
                            Err(_) => format!(
                                "direct gRPC to {}: no connection within {:?}",
                                self.authority, self.options.connect_timeout
                            ),
                        };
                    // Once per channel: a refused TLS handshake or a closed
                    // port should be seen in the log, not only as a fallback.
                    tracing::warn!(error = %connected, "direct gRPC connect failed");
                    Err(connected)
                })
                .await;
        match connected {
            Ok(send) => Ok(send.clone()),
            Err(message) => Err(Status::unavailable(message.clone())),
        }
    }

    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
        let port = self.authority.port_u16().unwrap_or(80);
        let host = self.authority.host().trim_matches(['[', ']']);
        let io = connect_tcp(host, port).await?;
        match &self.options.tls {
            None => self.handshake(io).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, io)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                self.handshake(tls).await
            }
        }
    }

    /// The HTTP/2 handshake on `io`, and the connection's task.
    async fn handshake<T>(&self, io: T) -> Result<h2::client::SendRequest<Bytes>, BoxError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let ping_pong = connection.ping_pong();
        let (every, within) = (
            self.options.keep_alive_interval,
            self.options.keep_alive_timeout,
        );
        let authority = self.authority.clone();
        tokio::spawn(async move {
            tokio::select! {
                outcome = connection => {
                    if let Err(e) = outcome {
                        tracing::debug!(%authority, error = %e, "direct gRPC connection ended");
                    }
                }
                () = keep_alive(ping_pong, every, within) => {
                    // Dropping the connection fails its streams at once.
                    tracing::debug!(%authority, "direct gRPC peer did not answer a PING; closing");
                }
            }
        });
        Ok(send)
    }

    async fn call(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let send = self.sender().await?;
        let (mut parts, body) = request.into_parts();
        // tonic's client gives the path only; h2 needs :scheme and :authority.
        let mut uri = http::uri::Parts::from(parts.uri);
        uri.scheme = Some(if self.options.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        uri.authority = Some(self.authority.clone());
        parts.uri = http::Uri::from_parts(uri)
            .map_err(|e| Status::internal(format!("bad request URI: {e}")))?;
        // A unary body is one message; sent with the headers it leaves in
        // the same write.
        let message = body
            .collect()
            .await
            .map_err(|e| Status::from_error(e.into()))?
            .to_bytes();
        let mut send = send.ready().await.map_err(|e| self.failed(e))?;
        let empty = message.is_empty();
        let (response, mut stream) = send
            .send_request(http::Request::from_parts(parts, ()), empty)
            .map_err(|e| self.failed(e))?;
        if !empty {
            stream
                .send_data(message, true)
                .map_err(|e| self.failed(e))?;
        }
        let response = response.await.map_err(|e| self.failed(e))?;
        let authority = self.authority.clone();
        Ok(response.map(|recv| {
            tonic::body::Body::new(Answer {
                recv,
                data_done: false,
                authority,
            })
        }))
    }

    fn failed(&self, error: h2::Error) -> Status {
        failure(&self.authority, error)
    }
}

/// The status of a failed stream: a reset the peer sent keeps its code as
/// gRPC maps it (CANCEL is CANCELLED, REFUSED_STREAM is UNAVAILABLE...);
/// a connection that failed or closed is UNAVAILABLE, as the gRPC spec
/// says of transport failures and unanswered PINGs.
fn failure(authority: &http::uri::Authority, error: h2::Error) -> Status {
    if error.is_reset() && error.is_remote() {
        Status::from_error(Box::new(error))
    } else {
        Status::unavailable(format!("direct gRPC to {authority}: {error}"))
    }
}

/// Pings every `every`; returns when a PING is not answered within
/// `within` (or cannot be sent). Never returns without a PING handle.
async fn keep_alive(ping_pong: Option<h2::PingPong>, every: Duration, within: Duration) {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(within, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The answer's body: h2's receive stream, returning the window for each
/// chunk read, then the trailers (grpc-status).
struct Answer {
    recv: h2::RecvStream,
    data_done: bool,
    authority: http::uri::Authority,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // The chunk is ours now: let the peer send more.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(failure(&self.authority, e)))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(failure(&self.authority, e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, BoxError>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for DirectChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: h2's own readiness (the peer's stream limit) is
    /// awaited inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> ResponseFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(request).await.map_err(BoxError::from) })
    }
}
