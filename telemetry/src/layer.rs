//! The server span of every HTTP or gRPC request: one tower layer at the
//! `http::Request` level, for tonic servers and axum routers alike.
//!
//! The span continues the caller's trace (`traceparent`, `tracestate`) and
//! ends when the response body does: a gRPC status comes in the trailers
//! (or in the headers of a trailers-only answer), so the body is watched.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{exporting, extract, passthrough, set_error, set_parent, HeaderCarrier, TARGET};

/// The gRPC codes that make a server span an error (the others are the
/// caller's fault, or no fault at all).
const GRPC_SERVER_ERRORS: [i64; 6] = [2, 4, 12, 13, 14, 15];

/// Which conventions a listener's spans follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// Opens the server span of each request. See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    protocol: Protocol,
}

impl TraceLayer {
    /// For a gRPC listener: `rpc.*` attributes, the gRPC status.
    pub fn grpc() -> TraceLayer {
        TraceLayer {
            protocol: Protocol::Grpc,
        }
    }

    /// For an HTTP listener: `http.*` and `url.path`, the HTTP status.
    pub fn http() -> TraceLayer {
        TraceLayer {
            protocol: Protocol::Http,
        }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService {
            inner,
            protocol: self.protocol,
        }
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    protocol: Protocol,
}

/// `/package.Service/Method` split into service and method.
fn grpc_parts(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

fn server_span<B>(protocol: Protocol, request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    match protocol {
        Protocol::Grpc => {
            let (service, method) = grpc_parts(path);
            tracing::info_span!(
                target: TARGET,
                "grpc.server",
                otel.name = path.strip_prefix('/').unwrap_or(path),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
            )
        }
        Protocol::Http => {
            let method = request.method().as_str();
            tracing::info_span!(
                target: TARGET,
                "http.server",
                otel.name = method,
                otel.kind = "server",
                http.request.method = method,
                url.path = path,
            )
        }
    }
}

/// Names the current HTTP server span after its route template
/// (`http.route`, and the span name `{method} {route}`): the router knows
/// the template, the layer only the path.
pub fn record_route(method: &http::Method, route: &str) {
    if !exporting() {
        return;
    }
    use opentelemetry::trace::TraceContextExt;
    let span = tracing::Span::current();
    span.set_attribute("http.route", route.to_owned());
    // The span has started (entering it does that), so the name is
    // changed on the OpenTelemetry span itself.
    span.context()
        .span()
        .update_name(format!("{method} {route}"));
}

impl<S, B, RB> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Body,
{
    type Response = http::Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Most internal calls carry a context; a public one may not, and
        // then there is nothing to parse.
        let remote = if request.headers().contains_key(crate::TRACEPARENT) {
            extract(&HeaderCarrier(request.headers()))
        } else {
            opentelemetry::Context::new()
        };
        let span = if exporting() {
            server_span(self.protocol, &request)
        } else {
            tracing::Span::none()
        };
        set_parent(&span, &remote);
        let context = passthrough(remote);
        let inner = {
            let _entered = span.enter();
            let _attached = context.clone().map(|c| c.attach());
            self.inner.call(request)
        };
        ResponseFuture {
            inner: crate::instrument(inner, span, context),
            protocol: self.protocol,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`TraceService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: crate::Traced<F>,
        protocol: Protocol,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let protocol = *this.protocol;
        let result = ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.span().clone();
        Poll::Ready(match result {
            Ok(response) => {
                let mut finished = false;
                if exporting() {
                    match protocol {
                        Protocol::Http => {
                            let status = response.status().as_u16();
                            span.set_attribute("http.response.status_code", i64::from(status));
                            if status >= 500 {
                                set_error(&span, status.to_string());
                            }
                        }
                        // A trailers-only answer: the status is in the headers.
                        Protocol::Grpc => {
                            if let Some(code) = grpc_status(response.headers()) {
                                record_grpc_status(&span, code, response.headers());
                                finished = true;
                            }
                        }
                    }
                }
                let watch = protocol == Protocol::Grpc && !finished;
                Ok(response.map(|body| TracedBody {
                    inner: body,
                    span,
                    watch,
                }))
            }
            Err(e) => {
                set_error(&span, "the request failed before an answer");
                Err(e)
            }
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn record_grpc_status(span: &tracing::Span, code: i64, headers: &http::HeaderMap) {
    span.set_attribute("rpc.grpc.status_code", code);
    if GRPC_SERVER_ERRORS.contains(&code) {
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        set_error(span, message);
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds the server span open until it ends,
    /// reading the gRPC status from its trailers.
    #[derive(Debug)]
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: tracing::Span,
        watch: bool,
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if *this.watch {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        if let Some(code) = grpc_status(trailers) {
                            record_grpc_status(this.span, code, trailers);
                        }
                        *this.watch = false;
                    }
                }
                Some(Err(_)) => {
                    set_error(this.span, "the response body failed");
                    *this.watch = false;
                }
                None => *this.watch = false,
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_parts("/nordlys.v1.ProjectService/CreateProject"),
            ("nordlys.v1.ProjectService", "CreateProject")
        );
        assert_eq!(grpc_parts("/odd"), ("odd", ""));
    }
}
