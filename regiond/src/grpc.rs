//! The direct gRPC side: the same [`Handlers`] as the NATS endpoints, served
//! by tonic, so gateways can skip the NATS hop when they can reach us.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use nordlys_proto::pb::nordlys::regiond::v1::regiond_service_server::RegiondServiceServer;
use nordlys_transport::tls::TlsIncoming;
use nordlys_transport::BoxError;
use tokio::task::JoinHandle;

use crate::Handlers;

/// Binds `addr` and serves `handlers` until `shutdown` resolves (then
/// drains), over mutual TLS when `tls` is given (from
/// [`MeshTls::server_config`](nordlys_transport::tls::MeshTls::server_config):
/// clients without a certificate of the mesh CA are refused at the
/// handshake, and logged). Returns the endpoint to advertise (`advertise`,
/// or the bound address) and the server task.
pub(crate) async fn serve(
    addr: SocketAddr,
    advertise: &str,
    handlers: Arc<Handlers>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(String, JoinHandle<()>), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let endpoint = if advertise.is_empty() {
        bound.to_string()
    } else {
        advertise.to_string()
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RegiondServiceServer<Handlers>>().await;
    let router = tonic::transport::Server::builder()
        // The SERVER span of each call, a child of the gateway's CLIENT span.
        .layer(nordlys_telemetry::layer::TraceLayer::grpc())
        .layer(crate::metrics::METRICS.grpc_layer())
        .add_service(health_service)
        .add_service(RegiondServiceServer::from_arc(handlers));
    let server = match tls {
        Some(config) => {
            let incoming = TlsIncoming::new(listener, config, "mesh gRPC")?;
            tokio::spawn(async move {
                let result = router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            })
        }
        None => tokio::spawn(async move {
            let incoming = nordlys_transport::coalesced_incoming(listener);
            let result = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }),
    };
    Ok((endpoint, server))
}
