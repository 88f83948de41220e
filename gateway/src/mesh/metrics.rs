//! Series of the mesh: calls to regions by route and status, their
//! latency, fallbacks, retries and ejections (Prometheus, registered into
//! the gateway's registry by [`crate::metrics::GatewayMetrics`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One attempt's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Attempt {
    region: String,
    method: String,
    code: &'static str,
    route: &'static str,
}

/// One attempt's labels for its latency (no code: a histogram per code
/// would multiply the series for little).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Timed {
    region: String,
    method: String,
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Region {
    region: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The mesh's series, plus plain totals for the shutdown log.
#[derive(Debug)]
pub struct Metrics {
    calls: Family<Attempt, Counter>,
    durations: Histograms<Timed>,
    fallbacks: Family<Region, Counter>,
    retries: Family<Region, Counter>,
    ejections: Family<Region, Counter>,
    direct: AtomicU64,
    nats: AtomicU64,
    fallback_total: AtomicU64,
    retry_total: AtomicU64,
    ejection_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            calls: Family::default(),
            durations: Family::new_with_constructor(
                nordlys_metrics::latency_histogram as fn() -> Histogram,
            ),
            fallbacks: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            direct: AtomicU64::new(0),
            nats: AtomicU64::new(0),
            fallback_total: AtomicU64::new(0),
            retry_total: AtomicU64::new(0),
            ejection_total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Adds the series to `registry` (the families are shared, not copied).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "nordlys_gateway_region_calls",
            "Attempts of calls to regional daemons, by region, method, gRPC code and route (grpc: direct, nats: the region's queue group)",
            self.calls.clone(),
        );
        registry.register(
            "nordlys_gateway_region_call_duration_seconds",
            "Time of one attempt of a call to a regional daemon, by region, method and route",
            self.durations.clone(),
        );
        registry.register(
            "nordlys_gateway_fallbacks",
            "Calls that fell back from direct gRPC to NATS, by region",
            self.fallbacks.clone(),
        );
        registry.register(
            "nordlys_gateway_retries",
            "Attempts retried under the retry budget, by region",
            self.retries.clone(),
        );
        registry.register(
            "nordlys_gateway_ejections",
            "Direct endpoints ejected after a failure, by region",
            self.ejections.clone(),
        );
    }

    /// One attempt over `direct` gRPC or NATS, answered with `code`.
    pub(crate) fn attempt(
        &self,
        region: &str,
        method: &str,
        direct: bool,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        let route = if direct { "grpc" } else { "nats" };
        if direct {
            self.direct.fetch_add(1, Relaxed);
        } else {
            self.nats.fetch_add(1, Relaxed);
        }
        self.calls
            .get_or_create(&Attempt {
                region: region.to_owned(),
                method: method.to_owned(),
                code: nordlys_metrics::code_name(code),
                route,
            })
            .inc();
        self.durations
            .get_or_create(&Timed {
                region: region.to_owned(),
                method: method.to_owned(),
                route,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn fallback(&self, region: &str) {
        self.fallback_total.fetch_add(1, Relaxed);
        self.fallbacks.get_or_create(&labels(region)).inc();
    }

    pub(crate) fn retry(&self, region: &str) {
        self.retry_total.fetch_add(1, Relaxed);
        self.retries.get_or_create(&labels(region)).inc();
    }

    pub(crate) fn ejection(&self, region: &str) {
        self.ejection_total.fetch_add(1, Relaxed);
        self.ejections.get_or_create(&labels(region)).inc();
    }

    /// Attempts sent over (direct gRPC, NATS).
    pub fn calls(&self) -> (u64, u64) {
        (self.direct.load(Relaxed), self.nats.load(Relaxed))
    }

    /// Fallbacks to NATS, retries, ejections.
    pub fn faults(&self) -> (u64, u64, u64) {
        (
            self.fallback_total.load(Relaxed),
            self.retry_total.load(Relaxed),
            self.ejection_total.load(Relaxed),
        )
    }
}

fn labels(region: &str) -> Region {
    Region {
        region: region.to_owned(),
    }
}
