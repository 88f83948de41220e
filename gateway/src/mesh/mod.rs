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

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use nordlys_transport::{BoxError, NatsChannel};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::codegen::http;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;

use crate::call::Outgoing;
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

/// regiond's internal gRPC service.
const REGIOND_SERVICE: &str = "nordlys.regiond.v1.RegiondService";

/// Marks a status made on our side of a failed direct transport.
const TRANSPORT_FAILURE: &str = "nordlys-transport-failure";

/// Routes calls to regions.
#[derive(Debug)]
pub(crate) struct Mesh {
    nats: NatsChannel,
    mode: RouteMode,
    overrides: HashMap<String, RouteMode>,
    regions: RwLock<HashMap<String, Arc<RegionDirect>>>,
    /// How many instances discovery last saw in each region.
    instances: RwLock<HashMap<String, usize>>,
    budget: TpsBudget,
    metrics: Arc<Metrics>,
    eject_for: Duration,
    read_attempt: Duration,
    /// Mutual TLS for direct connections (`[mesh_tls]`); `None`: plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Mesh {
    pub(crate) fn new(
        nats: NatsChannel,
        mode: RouteMode,
        overrides: HashMap<String, RouteMode>,
        eject_for: Duration,
        read_attempt: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Mesh {
        Mesh {
            nats,
            mode,
            overrides,
            regions: RwLock::new(HashMap::new()),
            instances: RwLock::new(HashMap::new()),
            // Retries may add 20% to the load, plus 10 per second.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            metrics: Arc::new(Metrics::default()),
            eject_for,
            read_attempt,
            tls,
        }
    }

    /// The mesh series.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn mode_for(&self, region: &str) -> RouteMode {
        self.overrides.get(region).copied().unwrap_or(self.mode)
    }

    /// Takes in what discovery saw: each region's advertised endpoints.
    pub(crate) fn sync(&self, snapshot: &[(String, Vec<Instance>)]) {
        if let Ok(mut counts) = self.instances.write() {
            *counts = snapshot
                .iter()
                .map(|(region, instances)| (region.clone(), instances.len()))
                .collect();
        }
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
                    let (direct, mut ejected) =
                        RegionDirect::new(region, self.eject_for, self.tls.clone());
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

    /// Whether another attempt could reach another instance: not when
    /// discovery saw exactly one, whose hedge would only repeat the same
    /// slow work beside the first (a cloud that is slow under load gets
    /// slower still).
    fn could_answer_elsewhere(&self, region: &str) -> bool {
        self.instances
            .read()
            .ok()
            .and_then(|counts| counts.get(region).copied())
            != Some(1)
    }

    fn direct(&self, region: &str) -> Option<DirectService> {
        self.regions.read().ok()?.get(region)?.service()
    }

    /// Calls `method` of `region`'s daemons.
    ///
    /// The attempts follow the route mode: `auto` tries direct gRPC, then
    /// NATS; `grpc` tries direct gRPC up to three times; `nats` NATS up to
    /// twice. A further attempt is made after a failure of the transport
    /// (never after an answer of the daemon), and only within the retry
    /// budget. Reads of a region with more than one instance are also
    /// hedged: when an attempt has not answered within `read_attempt` (or
    /// half the time left) the next one starts beside it, and the first
    /// answer wins. A daemon that hangs or a request lost with a killed
    /// instance costs that long, and a daemon that is merely slow (its
    /// cloud under load) still answers, where abandoning its attempt would
    /// start the same slow work over. Writes
    /// are never hedged: a second attempt racing a slow first one would meet
    /// it half done.
    pub(crate) async fn call<Req, Resp>(
        &self,
        region: &str,
        method: &str,
        outgoing: Outgoing<'_, Req>,
    ) -> Result<Resp, Status>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
    {
        use Route::{Direct, Nats};
        let plan: &[Route] = match self.mode_for(region) {
            RouteMode::Auto => &[Direct, Nats, Nats],
            RouteMode::Grpc => &[Direct, Direct, Direct],
            RouteMode::Nats => &[Nats, Nats],
        };
        let hedge = (method.starts_with("Get") || method.starts_with("List"))
            && self.could_answer_elsewhere(region);
        let timeout = outgoing.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.budget.deposit();

        let mut payload: Option<Bytes> = None;
        let mut attempts = FuturesUnordered::new();
        let mut last = None;
        'routes: for (i, route) in plan.iter().enumerate() {
            if i > 0 {
                // Auto mode moving from gRPC to NATS is the fallback, not a retry.
                let fallback = *route == Nats && plan[i - 1] == Direct;
                if fallback {
                    self.metrics.fallback(region);
                } else if self.budget.withdraw() {
                    self.metrics.retry(region);
                } else {
                    break;
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            match self.attempt(*route, region, method, &outgoing, remaining, &mut payload) {
                Some(attempt) => attempts.push(attempt),
                None if self.mode_for(region) == RouteMode::Grpc => {
                    return Err(Status::unavailable(format!(
                        "region {region} has no healthy direct gRPC endpoint"
                    )))
                }
                None => continue,
            }
            let hedge_at = (hedge && i + 1 < plan.len())
                .then(|| tokio::time::Instant::now() + (remaining / 2).min(self.read_attempt));
            loop {
                let outcome = match hedge_at {
                    Some(at) => tokio::select! {
                        outcome = attempts.next() => outcome,
                        () = tokio::time::sleep_until(at) => {
                            tracing::debug!(%region, method, "no answer yet; hedging on the next route");
                            continue 'routes;
                        }
                    },
                    None => attempts.next().await,
                };
                match outcome {
                    // Every attempt in flight failed in transport.
                    None => continue 'routes,
                    Some(Ok(answer)) => return Ok(answer),
                    Some(Err(status)) if retryable(&status) => {
                        tracing::debug!(%region, method, error = %status.message(), "attempt failed in transport");
                        last = Some(status);
                    }
                    Some(Err(status)) => return Err(status),
                }
            }
        }
        // No route left to try: what is still in flight may yet answer.
        while let Ok(Some(outcome)) = tokio::time::timeout_at(deadline, attempts.next()).await {
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(status) if retryable(&status) => last = Some(status),
                Err(status) => return Err(status),
            }
        }
        if !attempts.is_empty() {
            last = None;
        }
        Err(match last {
            Some(s) if NatsChannel::is_no_responders(&s) => Status::unavailable(format!(
                "region {region} is unavailable: no instance answers"
            )),
            Some(s) if s.metadata().contains_key(TRANSPORT_FAILURE) => {
                Status::unavailable(format!("region {region}: {}", s.message()))
            }
            Some(s) => s,
            None => Status::deadline_exceeded(format!(
                "region {region} did not answer within {timeout:?}"
            )),
        })
    }

    /// One attempt of `method` on `route`, given `remaining` of the
    /// deadline; `None` when the route is direct and the region has no
    /// healthy endpoint. Each attempt is counted in the mesh series.
    fn attempt<'a, Req, Resp>(
        &'a self,
        route: Route,
        region: &'a str,
        method: &'a str,
        outgoing: &Outgoing<'_, Req>,
        remaining: Duration,
        payload: &mut Option<Bytes>,
    ) -> Option<BoxFuture<'a, Result<Resp, Status>>>
    where
        Req: Message + Clone + 'static,
        Resp: Message + Default + 'static,
    {
        let started = Instant::now();
        let direct = route == Route::Direct;
        let call: BoxFuture<'a, Result<Resp, Status>> = match route {
            Route::Direct => {
                let service = self.direct(region)?;
                // One CLIENT span per attempt; regiond's server span is its child.
                let span = nordlys_telemetry::grpc_client_span(REGIOND_SERVICE, method);
                let mut headers = outgoing.metadata(remaining).into_headers();
                nordlys_telemetry::inject_headers(&span, &mut headers);
                let attempt = Request::from_parts(
                    MetadataMap::from_headers(headers),
                    Default::default(),
                    outgoing.message.clone(),
                );
                Box::pin(async move {
                    let outcome =
                        tokio::time::timeout(remaining, direct_unary(service, method, attempt))
                            .instrument(span.clone())
                            .await
                            .unwrap_or_else(|_| {
                                Err(Status::deadline_exceeded(format!(
                                    "region {region} did not answer within {remaining:?}"
                                )))
                            });
                    let (code, message) = match &outcome {
                        Ok(_) => (0, ""),
                        Err(status) => (status.code() as i32, status.message()),
                    };
                    nordlys_telemetry::record_outcome(&span, code, message);
                    outcome
                })
            }
            Route::Nats => {
                // Straight to headers and bytes, the message encoded once for
                // every NATS attempt: no metadata to build and take apart
                // again, no deadline to write and parse back. The NATS
                // request's own timer bounds the attempt.
                let payload = payload
                    .get_or_insert_with(|| Bytes::from(outgoing.message.encode_to_vec()))
                    .clone();
                let headers = outgoing.nats_headers(remaining);
                let subject = nats_subject(region, method);
                Box::pin(async move {
                    self.nats
                        .unary_encoded(subject, headers, payload, remaining)
                        .await
                        .map(tonic::Response::into_inner)
                })
            }
        };
        Some(Box::pin(async move {
            let outcome = call.await;
            let code = match &outcome {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            self.metrics
                .attempt(region, method, direct, code, started.elapsed());
            outcome
        }))
    }
}

/// The NATS subject of `method` of `region`'s daemons.
fn nats_subject(region: &str, method: &str) -> String {
    const PREFIX: &str = "nordlys.v1.";
    const SERVICE: &str = ".RegiondService.";
    let mut subject =
        String::with_capacity(PREFIX.len() + region.len() + SERVICE.len() + method.len());
    subject.push_str(PREFIX);
    subject.push_str(region);
    subject.push_str(SERVICE);
    subject.push_str(method);
    subject
}

/// One transport to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Nats,
}

/// Failures of the way there, not answers of a daemon: worth another try.
fn retryable(status: &Status) -> bool {
    status.metadata().contains_key(TRANSPORT_FAILURE) || NatsChannel::is_no_responders(status)
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
    let path = http::uri::PathAndQuery::try_from(format!("/{REGIOND_SERVICE}/{method}"));
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

fn transport_failure(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Status {
    // DirectChannel fails with a status; its message is the readable part.
    let message = match error.downcast_ref::<Status>() {
        Some(status) => status.message().to_owned(),
        None => error.to_string(),
    };
    let mut status = Status::unavailable(format!("direct gRPC transport failed: {message}"));
    status
        .metadata_mut()
        .insert(TRANSPORT_FAILURE, AsciiMetadataValue::from_static("1"));
    status
}
