//! The direct gRPC route to one region: every advertised regiond endpoint
//! as a tonic channel, fed by discovery into a power-of-two-choices
//! balancer (tower `Balance` over `PendingRequests` load), shared through
//! a `Buffer`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};

use super::eject::Eject;
use super::metrics::Metrics;
use crate::discovery::Instance;

type EndpointService = PendingRequests<Eject<Channel>>;
type Discovered = Result<Change<String, EndpointService>, Infallible>;

/// The balanced, shareable direct service of one region.
pub(crate) type DirectService = Buffer<
    http::Request<Body>,
    <Balance<UnboundedReceiverStream<Discovered>, http::Request<Body>> as tower::Service<
        http::Request<Body>,
    >>::Future,
>;

#[derive(Debug)]
struct Member {
    endpoint: String,
    /// In the balancer now.
    active: bool,
    /// Out of the balancer until then, after a failure.
    ejected_until: Option<Instant>,
}

/// One region's direct endpoints.
#[derive(Debug)]
pub(crate) struct RegionDirect {
    region: String,
    service: DirectService,
    changes: UnboundedSender<Discovered>,
    ejections: UnboundedSender<String>,
    members: Mutex<HashMap<String, Member>>,
    eject_for: Duration,
}

impl RegionDirect {
    /// An empty region; [`RegionDirect::sync`] fills it. Returns the
    /// receiver of ejection reports, which [`RegionDirect::eject`] consumes.
    pub(crate) fn new(
        region: &str,
        eject_for: Duration,
    ) -> (RegionDirect, UnboundedReceiver<String>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let balance = Balance::new(UnboundedReceiverStream::new(rx));
        let service = Buffer::new(balance, 1024);
        let (ejections, ejected) = mpsc::unbounded_channel();
        (
            RegionDirect {
                region: region.to_string(),
                service,
                changes,
                ejections,
                members: Mutex::new(HashMap::new()),
                eject_for,
            },
            ejected,
        )
    }

    /// The balanced service, when at least one endpoint is in it (an empty
    /// balancer would wait for one instead of failing).
    pub(crate) fn service(&self) -> Option<DirectService> {
        let members = self.members.lock().ok()?;
        members
            .values()
            .any(|m| m.active)
            .then(|| self.service.clone())
    }

    /// Makes the balancer match what discovery sees: new endpoints in,
    /// vanished ones out, ejected ones back after their cool-down.
    pub(crate) fn sync(&self, instances: &[Instance], metrics: &Metrics) {
        let Ok(mut members) = self.members.lock() else {
            return;
        };
        let now = Instant::now();
        let advertised: HashMap<&str, &str> = instances
            .iter()
            .filter(|i| !i.grpc_endpoint.is_empty())
            .map(|i| (i.id.as_str(), i.grpc_endpoint.as_str()))
            .collect();
        members.retain(|id, member| {
            let keep = advertised.get(id.as_str()) == Some(&member.endpoint.as_str());
            if !keep && member.active {
                let _ = self.changes.send(Ok(Change::Remove(id.clone())));
            }
            keep
        });
        for (id, endpoint) in advertised {
            let member = members.entry(id.to_string()).or_insert_with(|| Member {
                endpoint: endpoint.to_string(),
                active: false,
                ejected_until: None,
            });
            let cooled = member.ejected_until.is_none_or(|until| now >= until);
            if !member.active && cooled {
                match self.connect(id, endpoint) {
                    Ok(service) => {
                        let _ = self
                            .changes
                            .send(Ok(Change::Insert(id.to_string(), service)));
                        member.active = true;
                        member.ejected_until = None;
                    }
                    Err(e) => {
                        tracing::warn!(region = %self.region, %endpoint, error = %e, "unusable gRPC endpoint");
                        member.ejected_until = Some(now + self.eject_for);
                        metrics.ejection();
                    }
                }
            }
        }
    }

    /// Takes a failed endpoint out of the balancer for the cool-down.
    pub(crate) fn eject(&self, id: &str, metrics: &Metrics) {
        let Ok(mut members) = self.members.lock() else {
            return;
        };
        if let Some(member) = members.get_mut(id) {
            if member.active {
                member.active = false;
                member.ejected_until = Some(Instant::now() + self.eject_for);
                let _ = self.changes.send(Ok(Change::Remove(id.to_string())));
                metrics.ejection();
                tracing::warn!(region = %self.region, id, endpoint = %member.endpoint, "ejected a failing gRPC endpoint");
            }
        }
    }

    fn connect(
        &self,
        id: &str,
        endpoint: &str,
    ) -> Result<EndpointService, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // Find a peer that stopped answering without closing.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(PendingRequests::new(
            Eject::new(channel, id.to_string(), self.ejections.clone()),
            CompleteOnResponse::default(),
        ))
    }
}
