//! Outlier ejection: an endpoint whose transport fails is taken out of the
//! balancer at once (the caller retries elsewhere), and put back by
//! discovery after a cool-down if it is still advertised.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::mpsc::UnboundedSender;
use tower::Service;

/// Wraps one endpoint's service; reports its id on `ejections` when a call
/// fails at the transport level (refused, reset, broken connection).
#[derive(Debug, Clone)]
pub(crate) struct Eject<S> {
    inner: S,
    id: String,
    ejections: UnboundedSender<String>,
}

impl<S> Eject<S> {
    pub(crate) fn new(inner: S, id: String, ejections: UnboundedSender<String>) -> Eject<S> {
        Eject {
            inner,
            id,
            ejections,
        }
    }
}

impl<S, Req> Service<Req> for Eject<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                let _ = self.ejections.send(self.id.clone());
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            id: Some(self.id.clone()),
            ejections: self.ejections.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`Eject`].
    #[derive(Debug)]
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<String>,
        ejections: UnboundedSender<String>,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if out.is_err() {
            if let Some(id) = this.id.take() {
                let _ = this.ejections.send(id);
            }
        }
        Poll::Ready(out)
    }
}
