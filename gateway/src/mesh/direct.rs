//! The direct gRPC route to one region: every advertised regiond endpoint
//! as a [`DirectChannel`] (one HTTP/2 connection), fed by discovery into a
//! power-of-two-choices balancer over each endpoint's requests in flight.
//!
//! tower's `Balance` needs `&mut self` and so a `Buffer` in front of it to
//! be shared: a task hop and a channel send each way on every call, which
//! cost more than the whole balancing decision. [`DirectService`] is
//! instead a cheap `Clone` tower service that reads the current endpoint
//! set, picks the less loaded of two random endpoints, and calls a clone of
//! its channel from the caller's own task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Service, ServiceExt};

use super::eject::Eject;
use super::metrics::Metrics;
use crate::discovery::Instance;
use nordlys_transport::{BoxError, DirectChannel, DirectOptions};

/// One endpoint in the balancer.
#[derive(Debug)]
struct Member {
    id: String,
    service: Eject<DirectChannel>,
    /// Calls sent and not yet answered: the load p2c compares.
    in_flight: AtomicUsize,
}

/// The endpoints calls may go to now; replaced whole on every change, so a
/// call reads one consistent set without holding a lock while it runs.
type Members = Arc<[Arc<Member>]>;

#[derive(Debug)]
struct Known {
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
    members: Arc<RwLock<Members>>,
    ejections: UnboundedSender<String>,
    known: Mutex<HashMap<String, Known>>,
    eject_for: Duration,
    /// Mutual TLS for the endpoints' connections; `None`: plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl RegionDirect {
    /// An empty region; [`RegionDirect::sync`] fills it. Returns the
    /// receiver of ejection reports, which [`RegionDirect::eject`] consumes.
    pub(crate) fn new(
        region: &str,
        eject_for: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> (RegionDirect, UnboundedReceiver<String>) {
        let (ejections, ejected) = mpsc::unbounded_channel();
        (
            RegionDirect {
                region: region.to_string(),
                members: Arc::new(RwLock::new(Arc::from(Vec::new()))),
                ejections,
                known: Mutex::new(HashMap::new()),
                eject_for,
                tls,
            },
            ejected,
        )
    }

    /// The balanced service, when at least one endpoint is in it.
    pub(crate) fn service(&self) -> Option<DirectService> {
        let members = self.members.read().ok()?.clone();
        (!members.is_empty()).then_some(DirectService { members })
    }

    /// Makes the balancer match what discovery sees: new endpoints in,
    /// vanished ones out, ejected ones back after their cool-down.
    pub(crate) fn sync(&self, instances: &[Instance], metrics: &Metrics) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let now = Instant::now();
        let advertised: HashMap<&str, &str> = instances
            .iter()
            .filter(|i| !i.grpc_endpoint.is_empty())
            .map(|i| (i.id.as_str(), i.grpc_endpoint.as_str()))
            .collect();
        let mut removed = Vec::new();
        known.retain(|id, k| {
            let keep = advertised.get(id.as_str()) == Some(&k.endpoint.as_str());
            if !keep && k.active {
                removed.push(id.clone());
            }
            keep
        });
        let mut added = Vec::new();
        for (id, endpoint) in advertised {
            let k = known.entry(id.to_string()).or_insert_with(|| Known {
                endpoint: endpoint.to_string(),
                active: false,
                ejected_until: None,
            });
            let cooled = k.ejected_until.is_none_or(|until| now >= until);
            if !k.active && cooled {
                match self.connect(id, endpoint) {
                    Ok(service) => {
                        added.push(Arc::new(Member {
                            id: id.to_string(),
                            service,
                            in_flight: AtomicUsize::new(0),
                        }));
                        k.active = true;
                        k.ejected_until = None;
                    }
                    Err(e) => {
                        tracing::warn!(region = %self.region, %endpoint, error = %e, "unusable gRPC endpoint");
                        k.ejected_until = Some(now + self.eject_for);
                        metrics.ejection(&self.region);
                    }
                }
            }
        }
        if !removed.is_empty() || !added.is_empty() {
            self.replace(|m| !removed.contains(&m.id), added);
        }
    }

    /// Takes a failed endpoint out of the balancer for the cool-down.
    pub(crate) fn eject(&self, id: &str, metrics: &Metrics) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if let Some(k) = known.get_mut(id) {
            if k.active {
                k.active = false;
                k.ejected_until = Some(Instant::now() + self.eject_for);
                self.replace(|m| m.id != id, Vec::new());
                metrics.ejection(&self.region);
                tracing::warn!(region = %self.region, id, endpoint = %k.endpoint, "ejected a failing gRPC endpoint");
            }
        }
    }

    /// Publishes a new member set: those of the current one `keep` accepts,
    /// then `added`. Called with `known` locked, so changes do not race.
    fn replace(&self, keep: impl Fn(&Member) -> bool, added: Vec<Arc<Member>>) {
        let Ok(mut members) = self.members.write() else {
            return;
        };
        let next: Vec<Arc<Member>> = members
            .iter()
            .filter(|m| keep(m))
            .cloned()
            .chain(added)
            .collect();
        *members = Arc::from(next);
    }

    fn connect(&self, id: &str, endpoint: &str) -> Result<Eject<DirectChannel>, BoxError> {
        // Defaults: a 500 ms connect timeout (TLS handshake included), and
        // a PING every second that must be answered within two (a peer that
        // stopped answering without closing). With mesh TLS the endpoint's
        // host is the name regiond's certificate must carry.
        let options = DirectOptions {
            tls: self.tls.clone(),
            ..DirectOptions::default()
        };
        let channel = DirectChannel::lazy(endpoint, options)?;
        Ok(Eject::new(channel, id.to_string(), self.ejections.clone()))
    }
}

/// The balanced direct service of one region, as it was when taken: the
/// power of two choices over the requests in flight of each endpoint.
#[derive(Debug, Clone)]
pub(crate) struct DirectService {
    members: Members,
}

impl DirectService {
    /// The less loaded of two distinct random members (the only one, if
    /// there is one).
    fn pick(&self) -> Option<Arc<Member>> {
        let n = self.members.len();
        let chosen = match n {
            0 => return None,
            1 => &self.members[0],
            _ => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                // A second index distinct from the first.
                let b = (a + rng.random_range(1..n)) % n;
                let (ma, mb) = (&self.members[a], &self.members[b]);
                if mb.in_flight.load(Ordering::Relaxed) < ma.in_flight.load(Ordering::Relaxed) {
                    mb
                } else {
                    ma
                }
            }
        };
        Some(chosen.clone())
    }
}

/// Counts a call in flight on its member until dropped.
struct InFlight(Arc<Member>);

impl InFlight {
    fn new(member: Arc<Member>) -> InFlight {
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(member)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static>>;

impl Service<http::Request<Body>> for DirectService {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: the endpoint is chosen per call, and its channel's
    /// own readiness is awaited inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> ResponseFuture {
        let Some(member) = self.pick() else {
            return Box::pin(async { Err("no direct gRPC endpoint".into()) });
        };
        // Counted from now, not from the first poll, so calls made together
        // see each other's load.
        let guard = InFlight::new(member);
        Box::pin(async move {
            let mut service = guard.0.service.clone();
            let response = service.ready().await?.call(request).await?;
            drop(guard);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, in_flight: usize) -> Arc<Member> {
        let (ejections, _) = mpsc::unbounded_channel();
        // Never connected: a port nothing listens on.
        let channel =
            DirectChannel::lazy("127.0.0.1:9", DirectOptions::default()).expect("a valid endpoint");
        Arc::new(Member {
            id: id.to_string(),
            service: Eject::new(channel, id.to_string(), ejections),
            in_flight: AtomicUsize::new(in_flight),
        })
    }

    fn service(members: Vec<Arc<Member>>) -> DirectService {
        DirectService {
            members: Arc::from(members),
        }
    }

    #[tokio::test]
    async fn of_two_the_less_loaded_is_always_picked() {
        let s = service(vec![member("busy", 5), member("idle", 0)]);
        for _ in 0..200 {
            assert_eq!(s.pick().map(|m| m.id.clone()).as_deref(), Some("idle"));
        }
    }

    #[tokio::test]
    async fn the_most_loaded_of_several_is_never_picked_and_the_rest_share() {
        let s = service(vec![
            member("a", 1),
            member("b", 1),
            member("c", 1),
            member("hot", 9),
        ]);
        let mut seen = HashMap::new();
        for _ in 0..2000 {
            let id = s.pick().map(|m| m.id.clone()).unwrap_or_default();
            *seen.entry(id).or_insert(0) += 1;
        }
        assert!(!seen.contains_key("hot"), "{seen:?}");
        for id in ["a", "b", "c"] {
            assert!(seen.get(id).copied().unwrap_or(0) > 300, "{seen:?}");
        }
    }

    #[tokio::test]
    async fn in_flight_counts_while_a_call_runs_and_not_after() {
        let m = member("a", 0);
        let guard = InFlight::new(m.clone());
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_empty_set_picks_nothing() {
        assert!(service(Vec::new()).pick().is_none());
    }
}
