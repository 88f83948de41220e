//! The Nordlys regional daemon.
//!
//! One `regiond` serves one region: it keeps (or, with real backends,
//! drives) that region's projects, users, memberships, networks and access
//! rules, and answers the gateway as the NATS micro service
//! `nordlys-regiond` on `nordlys.v1.{region}.RegiondService.{Method}`, and
//! over direct gRPC (the same handlers), advertised as `grpc_endpoint`.
//!
//! - [`Handlers`]: the `RegiondService` implementation (identity, validation,
//!   tenancy), independent of the transport.
//! - [`backend`]: the [`Backend`](backend::Backend) trait and its
//!   implementations ([`MemoryBackend`](backend::MemoryBackend) and
//!   [`KvBackend`](backend::KvBackend) for now).
//! - [`service`]: the NATS micro service registration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nordlys_transport::BoxError> {
//! use std::sync::Arc;
//! use nordlys_regiond::{backend::MemoryBackend, service, Handlers};
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let handlers = Arc::new(Handlers::new("sto1", Arc::new(MemoryBackend::new("sto1"))));
//! // No direct gRPC endpoint in this example: gateways use NATS.
//! let running = service::start(client, handlers, "").await?;
//! // ... later
//! running.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod config;
mod grpc;
mod handlers;
pub mod metrics;
pub mod service;
mod settle;
mod status;

use std::io::Write;
use std::sync::Arc;

use nordlys_transport::BoxError;

pub use config::{BackendKind, Config};
pub use handlers::{Handlers, SettleOptions, DEFAULT_LIST_LIMIT};
pub use status::{BEING_DELETED, REGION_REFUSED, UNSUPPORTED_IN_REGION, USER_NOT_IN_REGION};

/// Builds the configured backend.
pub async fn open_backend(
    config: &Config,
    buckets: &nordlys_transport::Buckets,
) -> Result<Arc<dyn backend::Backend>, BoxError> {
    let backend: Arc<dyn backend::Backend> = match config.backend {
        BackendKind::Memory => Arc::new(backend::MemoryBackend::new(&config.region)),
        BackendKind::Kv => {
            Arc::new(backend::KvBackend::open(buckets.clone(), &config.region).await?)
        }
        #[cfg(feature = "openstack")]
        BackendKind::Openstack => {
            Arc::new(backend::OpenStackBackend::connect(&config.region, &config.openstack).await?)
        }
        #[cfg(not(feature = "openstack"))]
        BackendKind::Openstack => {
            return Err("this regiond was built without the `openstack` feature".into())
        }
        #[cfg(feature = "kube")]
        BackendKind::Kube => {
            Arc::new(backend::KubeBackend::connect(&config.region, &config.kube).await?)
        }
        #[cfg(not(feature = "kube"))]
        BackendKind::Kube => return Err("this regiond was built without the `kube` feature".into()),
    };
    // A tier changed in the config reaches the existing projects here.
    let reconciling = Arc::clone(&backend);
    tokio::spawn(async move {
        match reconciling.reconcile_tiers().await {
            // Tests and operators wait for this line after a restart.
            Ok(n) => tracing::info!(projects = n, "quota tiers checked"),
            Err(e) => tracing::warn!(error = %e, "cannot apply quota tiers"),
        }
    });
    Ok(backend)
}

/// Serves until SIGINT or SIGTERM, then drains calls in flight. Prints the
/// ready line scripts and the test harness wait for on stdout.
pub async fn run(config: Config) -> Result<(), BoxError> {
    // Listen for signals before saying "ready": a SIGTERM right after the
    // ready line must shut down cleanly, not kill the process.
    let shutdown = nordlys_transport::shutdown_signal();
    let region = config.region.clone();
    // The listener lives as long as the process: it shows the drain too.
    let metrics = match config.metrics_listen() {
        Some(addr) => Some(
            nordlys_metrics::MetricsListener::start(addr, metrics::METRICS.registry())
                .await
                .map_err(|e| format!("metrics_listen {addr}: {e}"))?,
        ),
        None => None,
    };
    // Scripts and the test harness find the metrics port on the ready line.
    let metrics_field = metrics
        .as_ref()
        .map(|m| format!(" metrics={}", m.local_addr()))
        .unwrap_or_default();
    run_until(
        config,
        |id| {
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "nordlys-regiond ready region={region} id={id}{metrics_field}"
            )?;
            stdout.flush()
        },
        shutdown,
    )
    .await
}

/// Serves until `shutdown` resolves, then drains calls in flight; tells
/// `ready` the service id once it serves on both transports, and stops at
/// once if `ready` fails (nobody would know it serves). For running regiond
/// inside another program (the bench runs the whole stack in one process
/// this way).
pub async fn run_until(
    config: Config,
    ready: impl FnOnce(&str) -> std::io::Result<()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    // TLS before anything connects: a bad file stops start-up, named.
    let (mesh_tls, _reloading) = load_mesh_tls(&config)?;
    // Configs built in code (the bench) are checked as loaded ones are,
    // the refusal of a connection without credentials included.
    config.validate()?;
    if !config.nats.has_credentials() {
        tracing::warn!("INSECURE: the NATS connection has no credentials (--insecure-dev); any client of that NATS server can call this region as the gateway, for any organization; for local development only");
    }
    let nats = config.nats.clone().or_inbox_prefix(
        nordlys_transport::permissions::regiond(
            &config.region,
            nordlys_transport::permissions::JetStreamApi::Local,
        )
        .inbox_prefix,
    );
    let client = nordlys_transport::connect_with(
        &config.nats_url,
        &format!("nordlys-regiond {}", config.region),
        &nats,
    )
    .await?;
    let buckets = config.nats.buckets(client.clone());
    let backend = open_backend(&config, &buckets).await?;
    let handlers = Arc::new(
        Handlers::settled(
            config.region.clone(),
            backend,
            client.clone(),
            SettleOptions {
                in_memory: config.backend == BackendKind::Memory,
                grace: config.settle_grace(),
                interval: config.settle_interval(),
                remove_orphans: config.remove_orphans,
                buckets,
            },
        )
        .await?,
    );
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let (grpc_endpoint, grpc_server) = match config.grpc_listen() {
        Some(addr) => {
            let (endpoint, server) = grpc::serve(
                addr,
                &config.grpc_advertise,
                handlers.clone(),
                mesh_tls,
                async {
                    let _ = grpc_stopped.await;
                },
            )
            .await?;
            (endpoint, Some(server))
        }
        None => (String::new(), None),
    };
    // Returns once the server has our subscriptions: ready means reachable.
    let service = service::start(client.clone(), handlers, &grpc_endpoint).await?;
    let id = service.id().await;
    tracing::info!(region = %config.region, backend = config.backend.as_str(), %id, nats = %config.nats_url, grpc = %grpc_endpoint, "serving");
    ready(&id)?;
    shutdown.await;
    tracing::info!("shutting down: draining calls in flight");
    // Both transports stop taking calls and drain the ones in flight.
    let _ = stop_grpc.send(());
    service.shutdown(config.shutdown_grace()).await;
    if let Some(server) = grpc_server {
        if tokio::time::timeout(config.shutdown_grace(), server)
            .await
            .is_err()
        {
            tracing::warn!("gRPC calls still running after the grace period");
        }
    }
    client.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Aborts the certificate reloading task when dropped.
#[derive(Debug)]
struct Reloading(Option<tokio::task::JoinHandle<()>>);

impl Drop for Reloading {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The direct port's mutual TLS from `[mesh_tls]`, its certificate reloaded
/// on SIGHUP and when its files change; says loudly when it is plaintext.
fn load_mesh_tls(
    config: &Config,
) -> Result<(Option<Arc<rustls::ServerConfig>>, Reloading), BoxError> {
    let mesh = config
        .mesh_tls
        .load()
        .map_err(|e| format!("[mesh_tls]: {e}"))?;
    match mesh {
        Some(mesh) => {
            let server = mesh.server_config()?;
            let task = mesh.cert().watch(config.mesh_tls.reload_interval());
            if config.grpc_listen().is_some() {
                tracing::info!(
                    ca_file = ?config.mesh_tls.ca_file,
                    "the direct gRPC port requires mutual TLS: clients need a certificate of the mesh CA"
                );
            }
            Ok((Some(server), Reloading(Some(task))))
        }
        None => {
            if config.grpc_listen().is_some() {
                tracing::warn!(
                    "the direct gRPC port is PLAINTEXT and unauthenticated: no [mesh_tls] is set; \
                     for local development only"
                );
            }
            Ok((None, Reloading(None)))
        }
    }
}
