//! The quota service's Prometheus series, served at `GET /metrics` on
//! `metrics_listen`: calls by method and code, reservations by outcome,
//! compare-and-set conflicts of the store, reconciler corrections, group
//! commit sizes.
//!
//! One set per process: the handlers, the store and the reconciler count
//! into it without a handle threaded through each of them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The API's full name, the `service` label of every call.
pub(crate) const SERVICE: &str = "nordlys.quota.v1.QuotaController";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    service: &'static str,
    method: String,
    code: &'static str,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcTimed {
    service: &'static str,
    method: String,
    route: &'static str,
}

/// What became of a reservation call.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The label values, as they are exported.
pub(crate) enum Outcome {
    /// Reserve granted (newly or again).
    reserved,
    /// Reserve refused: over a limit.
    refused,
    /// Commit applied to a pending reservation.
    committed,
    /// Release applied.
    released,
    /// A commit found its reservation gone from a region: it had lapsed
    /// at its TTL (or was released) before the commit came. Counted
    /// instead of `committed`.
    lapsed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reservation {
    outcome: Outcome,
}

/// Every series of this process.
#[derive(Debug)]
pub struct QuotaMetrics {
    registry: Arc<Registry>,
    calls: Family<Rpc, Counter>,
    durations: Family<RpcTimed, Histogram, fn() -> Histogram>,
    reservations: Family<Reservation, Counter>,
    conflicts: Counter,
    contention: Counter,
    corrections: Counter,
    groups: Histogram,
}

/// This process's series.
pub static METRICS: LazyLock<QuotaMetrics> = LazyLock::new(QuotaMetrics::new);

impl QuotaMetrics {
    fn new() -> QuotaMetrics {
        let mut registry = Registry::default();
        let calls = Family::<Rpc, Counter>::default();
        let durations =
            Family::new_with_constructor(nordlys_metrics::latency_histogram as fn() -> Histogram);
        let reservations = Family::<Reservation, Counter>::default();
        let (conflicts, contention, corrections) =
            (Counter::default(), Counter::default(), Counter::default());
        // 1, 2, 4 ... 512 operations per write.
        let groups = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1.0, 2.0, 10,
        ));
        registry.register(
            "nordlys_quota_requests",
            "Calls served, by service, method, gRPC code and route (nats: the micro service endpoint)",
            calls.clone(),
        );
        registry.register(
            "nordlys_quota_request_duration_seconds",
            "Time of calls served, by service, method and route",
            durations.clone(),
        );
        registry.register(
            "nordlys_quota_reservations",
            "Reservation calls by outcome: reserved, refused (over a limit), committed, released, lapsed (a commit found its reservation gone)",
            reservations.clone(),
        );
        registry.register(
            "nordlys_quota_store_conflicts",
            "Compare-and-set writes of the KV store that found the revision moved (another instance wrote first) and were retried",
            conflicts.clone(),
        );
        registry.register(
            "nordlys_quota_store_contention_failures",
            "Store updates given up after too many compare-and-set conflicts",
            contention.clone(),
        );
        registry.register(
            "nordlys_quota_reconcile_corrections",
            "Usage corrected by the reconciler to what the regions hold",
            corrections.clone(),
        );
        registry.register(
            "nordlys_quota_group_commit_operations",
            "Operations applied by one compare-and-set of a quota document (group commit)",
            groups.clone(),
        );
        QuotaMetrics {
            registry: Arc::new(registry),
            calls,
            durations,
            reservations,
            conflicts,
            contention,
            corrections,
            groups,
        }
    }

    /// The registry, for the metrics listener.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// The observer of the NATS endpoints.
    pub(crate) fn nats_observer(&'static self) -> nordlys_transport::Observer {
        Arc::new(move |method: &str, code, elapsed: Duration| {
            self.calls
                .get_or_create(&Rpc {
                    service: SERVICE,
                    method: method.to_owned(),
                    code: nordlys_metrics::code_name(code),
                    route: "nats",
                })
                .inc();
            self.durations
                .get_or_create(&RpcTimed {
                    service: SERVICE,
                    method: method.to_owned(),
                    route: "nats",
                })
                .observe(elapsed.as_secs_f64());
        })
    }

    pub(crate) fn reservation(&self, outcome: Outcome) {
        self.reservations
            .get_or_create(&Reservation { outcome })
            .inc();
    }

    pub(crate) fn conflict(&self) {
        self.conflicts.inc();
    }

    pub(crate) fn contention(&self) {
        self.contention.inc();
    }

    pub(crate) fn correction(&self) {
        self.corrections.inc();
    }

    pub(crate) fn group(&self, operations: usize) {
        self.groups.observe(operations as f64);
    }
}
