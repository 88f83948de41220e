//! The route from the gateway to a region: direct gRPC to the region's
//! daemons when it can, the region's NATS queue group when it cannot.
//!
//! Per region, a tower stack: the advertised gRPC endpoints (from NATS
//! micro discovery) feed a power-of-two-choices balancer; an endpoint whose
//! transport fails is ejected and comes back after a cool-down; a call whose
//! direct attempt fails at the transport level (or that finds no healthy
//! endpoint) falls back to NATS. Every internal call is idempotent (reads,
//! deletes, and creates carrying a request id that regiond dedupes), so a
//! retry never does the work twice; retries draw on a tower retry budget so
//! a sick region is not hammered. The caller's deadline bounds every
//! attempt together.

mod direct;
mod eject;
mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nordlys_transport::metadata::{set_timeout, timeout_of};
use nordlys_transport::{BoxError, NatsChannel};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::codegen::http;
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Request, Status};
use tower::retry::budget::{Budget, TpsBudget};

use crate::discovery::Instance;
use direct::{DirectService, RegionDirect};
pub use metrics::Metrics;

/// Which transport calls to a region take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    /// Direct gRPC, falling back to NATS (the default).
    #[default]
    Auto,
    /// NATS only.
    Nats,
    /// Direct gRPC only.
    Grpc,
}

impl std::str::FromStr for RouteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<RouteMode, String> {
        match s {
            "auto" => Ok(RouteMode::Auto),
            "nats" => Ok(RouteMode::Nats),
            "grpc" => Ok(RouteMode::Grpc),
            other => Err(format!("route mode {other:?} is not auto, nats or grpc")),
        }
    }
}

/// Marks a status made on our side of a failed direct transport.
const TRANSPORT_FAILURE: &str = "nordlys-transport-failure";

/// Routes calls to regions.
#[derive(Debug)]
pub(crate) struct Mesh {
    nats: NatsChannel,
    mode: RouteMode,
    overrides: HashMap<String, RouteMode>,
    regions: RwLock<HashMap<String, Arc<RegionDirect>>>,
    budget: TpsBudget,
    metrics: Arc<Metrics>,
    eject_for: Duration,
}

impl Mesh {
    pub(crate) fn new(
        nats: NatsChannel,
        mode: RouteMode,
        overrides: HashMap<String, RouteMode>,
        eject_for: Duration,
    ) -> Mesh {
        Mesh {
            nats,
            mode,
            overrides,
            regions: RwLock::new(HashMap::new()),
            // Retries may add 20% to the load, plus 10 per second.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            metrics: Arc::new(Metrics::default()),
            eject_for,
        }
    }

    /// The mesh counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn mode_for(&self, region: &str) -> RouteMode {
        self.overrides.get(region).copied().unwrap_or(self.mode)
    }

    /// Takes in what discovery saw: each region's advertised endpoints.
    pub(crate) fn sync(&self, snapshot: &[(String, Vec<Instance>)]) {
        for (region, instances) in snapshot {
            if self.mode_for(region) == RouteMode::Nats {
                continue;
            }
            let existing = self
                .regions
                .read()
                .ok()
                .and_then(|r| r.get(region).cloned());
            let direct = match existing {
                Some(direct) => direct,
                None => {
                    let (direct, mut ejected) = RegionDirect::new(region, self.eject_for);
                    let direct = Arc::new(direct);
                    let (weak, metrics) = (Arc::downgrade(&direct), self.metrics.clone());
                    tokio::spawn(async move {
                        while let Some(id) = ejected.recv().await {
                            let Some(direct) = weak.upgrade() else { break };
                            direct.eject(&id, &metrics);
                        }
                    });
                    if let Ok(mut regions) = self.regions.write() {
                        regions.insert(region.clone(), direct.clone());
                    }
                    direct
                }
            };
            direct.sync(instances, &self.metrics);
        }
    }

    fn direct(&self, region: &str) -> Option<DirectService> {
        self.regions.read().ok()?.get(region)?.service()
    }

    /// Calls `method` of `region`'s daemons.
    pub(crate) async fn call<Req, Resp>(
        &self,
        region: &str,
        method: &str,
        request: Request<Req>,
    ) -> Result<Resp, Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
    {
        let mode = self.mode_for(region);
        let (mut metadata, _, message) = request.into_parts();
        let timeout = timeout_of(&metadata).unwrap_or(Duration::from_secs(10));
        let started = Instant::now();
        self.budget.deposit();

        if mode != RouteMode::Nats {
            let mut attempts = 0;
            loop {
                let Some(service) = self.direct(region) else {
                    if mode == RouteMode::Grpc {
                        return Err(Status::unavailable(format!(
                            "region {region} has no healthy direct gRPC endpoint"
                        )));
                    }
                    break;
                };
                attempts += 1;
                self.metrics.direct();
                let mut left = metadata.clone();
                let remaining = timeout.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    return Err(Status::deadline_exceeded("the call's deadline passed"));
                }
                set_timeout(&mut left, remaining);
                let attempt = Request::from_parts(left, Default::default(), message.clone());
                let outcome =
                    tokio::time::timeout(remaining, direct_unary(service, method, attempt))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Status::deadline_exceeded(format!(
                                "region {region} did not answer within {timeout:?}"
                            )))
                        });
                match outcome {
                    Err(status) if status.metadata().contains_key(TRANSPORT_FAILURE) => {
                        // The endpoint is ejected by now; try another one in
                        // grpc mode, fall back to NATS in auto mode.
                        if mode == RouteMode::Grpc && attempts < 3 && self.budget.withdraw() {
                            self.metrics.retry();
                            continue;
                        }
                        if mode == RouteMode::Grpc {
                            return Err(Status::unavailable(format!(
                                "region {region}: direct gRPC failed: {}",
                                status.message()
                            )));
                        }
                        tracing::debug!(%region, method, error = %status.message(), "direct gRPC failed; falling back to NATS");
                        self.metrics.fallback();
                        break;
                    }
                    other => return other,
                }
            }
        }

        self.metrics.nats();
        let remaining = timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded("the call's deadline passed"));
        }
        set_timeout(&mut metadata, remaining);
        self.nats
            .unary(
                format!("nordlys.v1.{region}.RegiondService.{method}"),
                Request::from_parts(metadata, Default::default(), message),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                if s.code() == Code::Unavailable && s.message().starts_with("no responders") {
                    Status::unavailable(format!(
                        "region {region} is unavailable: no instance answers"
                    ))
                } else {
                    s
                }
            })
    }
}

/// One unary call over the balanced direct service. Errors of the service
/// itself (connect, reset, broken connection) come back marked
/// [`TRANSPORT_FAILURE`]; statuses the daemon sent come back as sent.
fn direct_unary<Req, Resp>(
    service: DirectService,
    method: &str,
    request: Request<Req>,
) -> BoxFuture<'static, Result<Resp, Status>>
where
    Req: Message + 'static,
    Resp: Message + Default + 'static,
{
    let path =
        http::uri::PathAndQuery::try_from(format!("/nordlys.regiond.v1.RegiondService/{method}"));
    Box::pin(async move {
        let path = path.map_err(|_| Status::internal("bad method name"))?;
        let mut grpc = tonic::client::Grpc::new(Marked(service));
        grpc.ready().await.map_err(|e| transport_failure(&*e))?;
        grpc.unary(request, path, tonic_prost::ProstCodec::default())
            .await
            .map(tonic::Response::into_inner)
    })
}

/// The direct service with its own failures turned into marked statuses.
#[derive(Debug, Clone)]
struct Marked(DirectService);

impl tower::Service<http::Request<tonic::body::Body>> for Marked {
    type Response = <DirectService as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| -> BoxError { Box::new(transport_failure(&*e)) })
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            future
                .await
                .map_err(|e| -> BoxError { Box::new(transport_failure(&*e)) })
        })
    }
}

fn transport_failure(error: &(dyn std::error::Error + Send + Sync)) -> Status {
    let mut status = Status::unavailable(format!("direct gRPC transport failed: {error}"));
    status
        .metadata_mut()
        .insert(TRANSPORT_FAILURE, AsciiMetadataValue::from_static("1"));
    status
}
