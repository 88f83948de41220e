//! `GET /metrics` on a port of its own, for daemons without an HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// A serving metrics listener; stops when dropped.
#[derive(Debug)]
pub struct MetricsListener {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsListener {
    /// Binds `addr` and serves `registry` at `GET /metrics` in a task.
    pub async fn start(addr: SocketAddr, registry: Arc<Registry>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .with_state(registry);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics listener failed");
            }
        });
        tracing::info!(%addr, "metrics listening");
        Ok(MetricsListener { addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = crate::encode(&registry, accept);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
