//! regiond's Prometheus series, served at `GET /metrics` on
//! `metrics_listen`: calls by method, code and route (the direct gRPC
//! listener or the NATS endpoint), OpenStack HTTP calls by OpenStack
//! service and status, and the settle sweeper's work.
//!
//! One set per process: the handlers, the backends and the sweeper count
//! into it without a handle threaded through each of them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use nordlys_metrics::Call;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The internal API's full name, the `service` label of every call.
pub(crate) const SERVICE: &str = "nordlys.regiond.v1.RegiondService";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    service: String,
    method: String,
    code: &'static str,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcTimed {
    service: String,
    method: String,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenStack {
    service: &'static str,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenStackTimed {
    service: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// How an OpenStack call failed.
#[cfg_attr(not(feature = "openstack"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenStackFailure {
    /// With this HTTP status, or (`None`) without an answer.
    Status(Option<u16>),
    /// Dropped before an answer: the caller's deadline passed.
    Cancelled,
}

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(nordlys_metrics::latency_histogram as fn() -> Histogram)
}

/// Every series of this process.
#[derive(Debug)]
pub struct RegiondMetrics {
    registry: Arc<Registry>,
    calls: Family<Rpc, Counter>,
    durations: Histograms<RpcTimed>,
    openstack_requests: Family<OpenStack, Counter>,
    openstack_errors: Family<OpenStack, Counter>,
    openstack_durations: Histograms<OpenStackTimed>,
    swept: Counter,
    sweep_failures: Counter,
    giveback_deferred: Counter,
}

/// This process's series.
pub static METRICS: LazyLock<RegiondMetrics> = LazyLock::new(RegiondMetrics::new);

impl RegiondMetrics {
    fn new() -> RegiondMetrics {
        let mut registry = Registry::default();
        let m = RegiondMetrics {
            registry: Arc::new(Registry::default()),
            calls: Family::default(),
            durations: histograms(),
            openstack_requests: Family::default(),
            openstack_errors: Family::default(),
            openstack_durations: histograms(),
            swept: Counter::default(),
            sweep_failures: Counter::default(),
            giveback_deferred: Counter::default(),
        };
        registry.register(
            "nordlys_regiond_requests",
            "Calls served, by service, method, gRPC code and route (grpc: the direct listener, nats: the micro service endpoint)",
            m.calls.clone(),
        );
        registry.register(
            "nordlys_regiond_request_duration_seconds",
            "Time of calls served, by service, method and route",
            m.durations.clone(),
        );
        registry.register(
            "nordlys_regiond_openstack_requests",
            "OpenStack HTTP calls, by OpenStack service (identity, network) and HTTP status (none: no answer)",
            m.openstack_requests.clone(),
        );
        registry.register(
            "nordlys_regiond_openstack_errors",
            "OpenStack HTTP calls that failed, by OpenStack service and HTTP status (none: no answer)",
            m.openstack_errors.clone(),
        );
        registry.register(
            "nordlys_regiond_openstack_request_duration_seconds",
            "Time of OpenStack HTTP calls, by OpenStack service",
            m.openstack_durations.clone(),
        );
        registry.register(
            "nordlys_regiond_settle_notes_swept",
            "Quota settle notes the sweeper settled (their call did not)",
            m.swept.clone(),
        );
        registry.register(
            "nordlys_regiond_settle_sweep_failures",
            "Settle notes the sweeper could not settle yet (it tries again next pass)",
            m.sweep_failures.clone(),
        );
        registry.register(
            "nordlys_regiond_quota_giveback_deferred",
            "Quota give-backs after a delete that failed and were left to the sweeper",
            m.giveback_deferred.clone(),
        );
        RegiondMetrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// The registry, for the metrics listener.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// One call served over `route` (`grpc` or `nats`).
    pub(crate) fn call(
        &self,
        route: &'static str,
        service: &str,
        method: &str,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&Rpc {
                service: service.to_owned(),
                method: method.to_owned(),
                code: nordlys_metrics::code_name(code),
                route,
            })
            .inc();
        self.durations
            .get_or_create(&RpcTimed {
                service: service.to_owned(),
                method: method.to_owned(),
                route,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The observer of the NATS endpoints.
    pub(crate) fn nats_observer(&'static self) -> nordlys_transport::Observer {
        Arc::new(move |method: &str, code, elapsed| {
            self.call("nats", SERVICE, method, code, elapsed)
        })
    }

    /// The layer counting the direct gRPC listener's calls.
    pub(crate) fn grpc_layer(&'static self) -> nordlys_metrics::GrpcMetricsLayer {
        nordlys_metrics::GrpcMetricsLayer::new(Arc::new(move |call: &Call<'_>| {
            self.call("grpc", call.service, call.method, call.code, call.elapsed)
        }))
    }

    /// One OpenStack HTTP call to `service` (`keystone`, `neutron`, `nova`
    /// or `cinder`, named here by the service type: identity, network,
    /// compute, volume).
    #[cfg_attr(not(feature = "openstack"), allow(dead_code))]
    pub(crate) fn openstack(
        &self,
        service: &str,
        outcome: Result<(), OpenStackFailure>,
        elapsed: Duration,
    ) {
        let service = match service {
            "keystone" => "identity",
            "neutron" => "network",
            "nova" => "compute",
            "cinder" => "volume",
            _ => "other",
        };
        let status = match outcome {
            Ok(()) => "2xx".to_owned(),
            Err(OpenStackFailure::Status(Some(code))) => code.to_string(),
            Err(OpenStackFailure::Status(None)) => "none".to_owned(),
            Err(OpenStackFailure::Cancelled) => "cancelled".to_owned(),
        };
        let labels = OpenStack { service, status };
        self.openstack_requests.get_or_create(&labels).inc();
        if outcome.is_err() {
            self.openstack_errors.get_or_create(&labels).inc();
        }
        self.openstack_durations
            .get_or_create(&OpenStackTimed { service })
            .observe(elapsed.as_secs_f64());
    }

    /// The sweeper settled a note.
    pub(crate) fn swept(&self) {
        self.swept.inc();
    }

    /// The sweeper could not settle a note yet.
    pub(crate) fn sweep_failed(&self) {
        self.sweep_failures.inc();
    }

    /// A give-back after a delete failed and is left to the sweeper.
    pub(crate) fn giveback_deferred(&self) {
        self.giveback_deferred.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openstack_calls_are_named_by_service_type() {
        let m = RegiondMetrics::new();
        m.openstack("keystone", Ok(()), Duration::from_millis(3));
        m.openstack(
            "neutron",
            Err(OpenStackFailure::Status(Some(409))),
            Duration::from_millis(3),
        );
        m.openstack(
            "neutron",
            Err(OpenStackFailure::Status(None)),
            Duration::from_millis(3),
        );
        m.openstack(
            "keystone",
            Err(OpenStackFailure::Cancelled),
            Duration::from_millis(3),
        );
        let (_, text) = nordlys_metrics::encode(&m.registry, None);
        assert!(text.contains(
            "nordlys_regiond_openstack_requests_total{service=\"identity\",status=\"2xx\"} 1"
        ));
        assert!(text.contains(
            "nordlys_regiond_openstack_errors_total{service=\"network\",status=\"409\"} 1"
        ));
        assert!(text.contains(
            "nordlys_regiond_openstack_errors_total{service=\"network\",status=\"none\"} 1"
        ));
        assert!(text.contains(
            "nordlys_regiond_openstack_errors_total{service=\"identity\",status=\"cancelled\"} 1"
        ));
        assert!(text.contains(
            "nordlys_regiond_openstack_request_duration_seconds_count{service=\"network\"} 2"
        ));
        assert!(!text.contains(
            "nordlys_regiond_openstack_errors_total{service=\"identity\",status=\"2xx\"}"
        ));
    }
}
