//! A tower layer for gRPC servers: times each call and reads its status at
//! the HTTP level, from the `grpc-status` of a trailers-only answer or of
//! the trailers, so handlers count nothing themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::{split_path, Call, Observer};

/// Wraps a gRPC server's service in [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    observer: Observer,
}

impl std::fmt::Debug for GrpcMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcMetricsLayer")
    }
}

impl GrpcMetricsLayer {
    /// Calls `observer` once per finished call.
    pub fn new(observer: Observer) -> Self {
        GrpcMetricsLayer { observer }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    observer: Observer,
}

impl<S> std::fmt::Debug for GrpcMetrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcMetrics")
    }
}

impl<S, B, RB> tower::Service<Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Body<Data = Bytes>,
{
    type Response = Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut pending = Pending {
            observer: self.observer.clone(),
            path: request.uri().path().to_owned(),
            started: Instant::now(),
            done: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    // A trailers-only answer (every error tonic makes
                    // before the handler answers) has its status here.
                    if let Some(code) = status_of(response.headers()) {
                        pending.finish(code);
                    }
                    Ok(response.map(|inner| MeteredBody { inner, pending }))
                }
                Err(e) => {
                    pending.finish(Code::Unknown);
                    Err(e)
                }
            }
        })
    }
}

/// A call not yet finished; one dropped unfinished (the client went away,
/// the connection broke) counts as CANCELLED.
struct Pending {
    observer: Observer,
    path: String,
    started: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // Only paths a service answered are labels: anything else a client
        // sends would make a new series each.
        let (service, method) = match split_path(&self.path) {
            Some(names) if code != Code::Unimplemented => names,
            _ => ("unknown", "unknown"),
        };
        (self.observer)(&Call {
            service,
            method,
            code,
            elapsed: self.started.elapsed(),
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn status_of(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(code))
}

pin_project_lite::pin_project! {
    /// An answer's body that reports the call when its trailers pass.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B> std::fmt::Debug for MeteredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeteredBody")
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    this.pending.finish(code);
                }
            }
            // The stream broke off: the caller never learns the status.
            Some(Err(_)) => this.pending.finish(Code::Unknown),
            // An end without a status is not a gRPC answer.
            None => this.pending.finish(Code::Unknown),
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
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{Service, ServiceExt};

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, String, Code)>>>;

    fn layer() -> (GrpcMetricsLayer, Seen) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let observer: Observer = Arc::new(move |call: &Call<'_>| {
            if let Ok(mut seen) = sink.lock() {
                seen.push((call.service.into(), call.method.into(), call.code));
            }
        });
        (GrpcMetricsLayer::new(observer), seen)
    }

    #[tokio::test]
    async fn status_from_trailers_and_from_headers() {
        let (layer, seen) = layer();
        // An answer with its status in the trailers.
        let mut service = tower::Layer::layer(
            &layer,
            tower::service_fn(|_: Request<()>| async {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "5".parse().expect("value"));
                let frames = futures_frames(vec![
                    Frame::data(Bytes::from_static(b"x")),
                    Frame::trailers(trailers),
                ]);
                Ok::<_, std::convert::Infallible>(Response::new(StreamBody::new(frames)))
            }),
        );
        let request = Request::builder()
            .uri("/nordlys.v1.ProjectService/GetProject")
            .body(())
            .expect("request");
        let response = service.ready().await.expect("ready").call(request).await;
        let body = response.expect("response").into_body();
        assert!(
            seen.lock().expect("lock").is_empty(),
            "not before the trailers"
        );
        let _ = body.collect().await;
        assert_eq!(
            *seen.lock().expect("lock"),
            [(
                "nordlys.v1.ProjectService".to_owned(),
                "GetProject".to_owned(),
                Code::NotFound
            )]
        );

        // A trailers-only answer; an unserved path is not a label.
        let mut service = tower::Layer::layer(
            &layer,
            tower::service_fn(|_: Request<()>| async {
                let mut response = Response::new(Full::new(Bytes::new()));
                response
                    .headers_mut()
                    .insert("grpc-status", "12".parse().expect("value"));
                Ok::<_, std::convert::Infallible>(response)
            }),
        );
        let request = Request::builder()
            .uri("/random.Thing/Whatever")
            .body(())
            .expect("request");
        let response = service.ready().await.expect("ready").call(request).await;
        drop(response);
        assert_eq!(
            seen.lock().expect("lock").last().cloned(),
            Some(("unknown".into(), "unknown".into(), Code::Unimplemented))
        );
    }

    #[tokio::test]
    async fn an_abandoned_answer_counts_as_cancelled() {
        let (layer, seen) = layer();
        let mut service = tower::Layer::layer(
            &layer,
            tower::service_fn(|_: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"x",
                ))))
            }),
        );
        let request = Request::builder().uri("/s.S/M").body(()).expect("request");
        let response = service.ready().await.expect("ready").call(request).await;
        drop(response);
        assert_eq!(
            *seen.lock().expect("lock"),
            [("s.S".to_owned(), "M".to_owned(), Code::Cancelled)]
        );
    }

    fn futures_frames(
        frames: Vec<Frame<Bytes>>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> {
        futures::stream::iter(frames.into_iter().map(Ok))
    }
}
