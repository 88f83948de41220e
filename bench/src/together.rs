//! The real paths with quota, regiond and the gateways as tasks in the
//! bench process: one tokio runtime, the topology of floors (a)-(e). Beside
//! the separate processes, this tells what the Nordlys code costs apart
//! from what three processes cost.
//!
//! They get a nats-server of their own, so that this regiond and quota do
//! not join the queue groups of the separate processes.

use std::net::SocketAddr;
use std::time::Duration;

use nordlys_gateway::{Listening, RouteMode};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::procs::NatsServer;
use crate::stack::{Gateway, REGION};

/// How long a service task may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// quota, regiond and gateways running in this process; they drain and
/// stop when this is dropped.
#[derive(Debug)]
pub(crate) struct Together {
    /// Dropping it resolves every service's shutdown future.
    _stop: watch::Sender<()>,
    pub(crate) nats: NatsServer,
    /// One gateway per route mode asked for, with the mode's name.
    pub(crate) gateways: Vec<(String, Gateway)>,
}

impl Together {
    /// Starts nats-server, quota, regiond (memory backend) and one gateway
    /// per mode of `routes`.
    pub(crate) async fn start(routes: &[String], operator_key: &str) -> Result<Together, String> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let (stop, stopped) = watch::channel(());
        let shutdown = move || {
            let mut stopped = stopped.clone();
            async move {
                // Err: the sender is gone, which is the signal.
                let _ = stopped.changed().await;
            }
        };

        let quota = nordlys_quota::config::Config::load(
            None,
            &nordlys_quota::config::Overrides {
                nats_url: Some(url.clone()),
                insecure_dev: true,
                ..Default::default()
            },
        )
        .map_err(|e| format!("quota config: {e}"))?;
        serve("quota", |ready| {
            nordlys_quota::service::run_until(quota, |_| ready(()), shutdown())
        })
        .await?;

        let regiond = nordlys_regiond::Config::load(
            None,
            &nordlys_regiond::config::Overrides {
                nats_url: Some(url.clone()),
                region: Some(REGION.to_owned()),
                backend: Some(nordlys_regiond::BackendKind::Memory),
                grpc_listen: Some("127.0.0.1:0".to_owned()),
                grpc_advertise: None,
                metrics_listen: None,
                insecure_dev: true,
            },
        )
        .map_err(|e| format!("regiond config: {e}"))?;
        serve("regiond", |ready| {
            nordlys_regiond::run_until(
                regiond,
                |_| {
                    ready(());
                    Ok(())
                },
                shutdown(),
            )
        })
        .await?;

        let mut gateways = Vec::new();
        for route in routes {
            let mode: RouteMode = route.parse()?;
            let config = nordlys_gateway::Config {
                nats_url: url.clone(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                operator_key: operator_key.to_owned(),
                regions: vec![REGION.to_owned()],
                route: mode,
                ..Default::default()
            };
            let at: Listening = serve("gateway", |ready| {
                nordlys_gateway::Gateway::run_until(config, ready, shutdown())
            })
            .await?;
            gateways.push((
                route.clone(),
                Gateway::serving(at.grpc, at.http, operator_key).await?,
            ));
        }
        Ok(Together {
            _stop: stop,
            nats,
            gateways,
        })
    }
}

/// Spawns a service task and waits for what it hands to `ready`, or for
/// its error if it ends first.
async fn serve<T, F>(
    name: &str,
    run: impl FnOnce(Box<dyn FnOnce(T) + Send>) -> F,
) -> Result<T, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<(), nordlys_transport::BoxError>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let ready: Box<dyn FnOnce(T) + Send> = Box::new(move |value| {
        let _ = tx.send(value);
    });
    let task: JoinHandle<Result<(), String>> = {
        let future = run(ready);
        let name = name.to_owned();
        tokio::spawn(async move { future.await.map_err(|e| format!("{name}: {e}")) })
    };
    match tokio::time::timeout(READY_TIMEOUT, rx).await {
        Ok(Ok(value)) => Ok(value),
        // The task ended without saying ready: its error says why.
        Ok(Err(_)) => Err(match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => format!("{name} stopped before it was ready"),
            Err(e) => format!("{name} panicked: {e}"),
        }),
        Err(_) => {
            task.abort();
            Err(format!("{name} not ready within {READY_TIMEOUT:?}"))
        }
    }
}
