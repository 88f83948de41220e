//! The direct gRPC side: the same [`Handlers`] as the NATS endpoints, served
//! by tonic, so gateways can skip the NATS hop when they can reach us.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use nordlys_proto::pb::nordlys::regiond::v1::regiond_service_server::RegiondServiceServer;
use nordlys_transport::BoxError;
use tokio::task::JoinHandle;

use crate::Handlers;

/// Binds `addr` and serves `handlers` until `shutdown` resolves (then
/// drains). Returns the endpoint to advertise (`advertise`, or the bound
/// address) and the server task.
pub(crate) async fn serve(
    addr: SocketAddr,
    advertise: &str,
    handlers: Arc<Handlers>,
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
    let server = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(RegiondServiceServer::from_arc(handlers))
            .serve_with_incoming_shutdown(nordlys_transport::coalesced_incoming(listener), shutdown)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((endpoint, server))
}
