//! The NATS micro service: registration, serving, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::quota::v1::quota_controller_server::QuotaController;
use nordlys_transport::{unary, BoxError, MicroServiceBuilder};

use crate::config::Config;
use crate::ops::OpsLog;
use crate::store::Store;
use crate::Controller;

/// The micro service name.
pub const SERVICE_NAME: &str = "nordlys-quota";
/// The subject prefix of the endpoints: `{PREFIX}.{Method}`.
pub const PREFIX: &str = "nordlys.quota.v1.QuotaController";

/// Connects to NATS, opens (or creates) the bucket, serves until SIGINT or
/// SIGTERM, then stops taking requests, drains those in flight and returns.
/// `ready` is called with the micro service id once requests are served,
/// and the metrics listener's address when `metrics_listen` is on.
pub async fn run(
    config: Config,
    ready: impl FnOnce(&str, Option<std::net::SocketAddr>),
) -> Result<(), BoxError> {
    // Listen for signals before saying "ready": a SIGTERM right after the
    // ready line must shut down cleanly, not kill the process.
    let shutdown = nordlys_transport::shutdown_signal();
    // The listener lives as long as the process: it shows the drain too.
    let metrics = match config.metrics_listen() {
        Some(addr) => Some(
            nordlys_metrics::MetricsListener::start(addr, crate::metrics::METRICS.registry())
                .await
                .map_err(|e| format!("metrics_listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let at = metrics.as_ref().map(|m| m.local_addr());
    run_until(config, |id| ready(id, at), shutdown).await
}

/// As [`run`], but serves until `shutdown` resolves: for running the quota
/// service inside another program (the bench runs the whole stack in one
/// process this way).
pub async fn run_until(
    config: Config,
    ready: impl FnOnce(&str),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let config = config.checked()?;
    if !config.nats.has_credentials() {
        tracing::warn!("INSECURE: the NATS connection has no credentials (--insecure-dev); any client of that NATS server can call the quota service as the gateway; for local development only");
    }
    let nats = config
        .nats
        .clone()
        .or_inbox_prefix(nordlys_transport::permissions::quota(&config.bucket).inbox_prefix);
    let client = nordlys_transport::connect_with(&config.nats_url, SERVICE_NAME, &nats).await?;
    let buckets = config.nats.buckets(client.clone());
    let store = Store::open(buckets.clone(), &config.bucket).await?;
    let ops = OpsLog::open(buckets, &config.bucket).await?;
    let grace = Duration::from_secs(config.shutdown_grace);
    let bucket = config.bucket.clone();
    let interval = config.reconcile_interval();
    let controller = Arc::new(Controller::new(store, ops, client.clone(), config));

    // One endpoint per RPC, named after the method; each calls the trait
    // method, exactly as a gRPC server would.
    macro_rules! endpoints {
        ($builder:expr, $($name:literal => $method:ident),* $(,)?) => {
            $builder
            $(.endpoint($name, {
                let c = controller.clone();
                unary(move |request| {
                    let c = c.clone();
                    async move { c.$method(request).await }
                })
            }))*
        };
    }
    let builder = MicroServiceBuilder::new(
        client.clone(),
        SERVICE_NAME,
        env!("CARGO_PKG_VERSION"),
        PREFIX,
    )
    .description("Nordlys quota and ACL controller")
    .metadata("bucket", bucket)
    .observer(crate::metrics::METRICS.nats_observer());
    let service = endpoints!(builder,
        "Authenticate" => authenticate,
        "Reserve" => reserve,
        "Commit" => commit,
        "Release" => release,
        "Free" => free,
        "CreateOrganization" => create_organization,
        "GetOrganization" => get_organization,
        "ListOrganizations" => list_organizations,
        "CreateMember" => create_member,
        "ListMembers" => list_members,
        "DeleteMember" => delete_member,
        "CreateApiKey" => create_api_key,
        "ListApiKeys" => list_api_keys,
        "DeleteApiKey" => delete_api_key,
        "GetQuota" => get_quota,
        "ListQuotas" => list_quotas,
        "UpdateQuota" => update_quota,
        "ReconcileQuotas" => reconcile_quotas,
        "RequestTierChange" => request_tier_change,
        "ApproveTierChange" => approve_tier_change,
    )
    // Returns once the server has the subscriptions: ready means reachable.
    .start()
    .await?;
    let id = service.id().await;
    tracing::info!(id = %id, prefix = PREFIX, "serving");
    ready(&id);

    // Periodic reconciliation, stopped with the service.
    let reconciler = interval.map(|interval| {
        let c = controller.clone();
        tokio::spawn(async move { c.reconcile_periodically(interval).await })
    });

    shutdown.await;
    if let Some(task) = reconciler {
        task.abort();
    }
    tracing::info!("shutting down: draining in-flight requests");
    service.shutdown(grace).await;
    client.drain().await?;
    tracing::info!("stopped");
    Ok(())
}
