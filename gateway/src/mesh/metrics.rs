//! Counters of the mesh: calls per route, fallbacks, retries, ejections.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Mesh counters, rendered in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Metrics {
    direct: AtomicU64,
    nats: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
    ejections: AtomicU64,
}

impl Metrics {
    pub(crate) fn direct(&self) {
        self.direct.fetch_add(1, Relaxed);
    }
    pub(crate) fn nats(&self) {
        self.nats.fetch_add(1, Relaxed);
    }
    pub(crate) fn fallback(&self) {
        self.fallbacks.fetch_add(1, Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    pub(crate) fn ejection(&self) {
        self.ejections.fetch_add(1, Relaxed);
    }

    /// Calls sent over (direct gRPC, NATS).
    pub fn calls(&self) -> (u64, u64) {
        (self.direct.load(Relaxed), self.nats.load(Relaxed))
    }

    /// Fallbacks to NATS, retries, ejections.
    pub fn faults(&self) -> (u64, u64, u64) {
        (
            self.fallbacks.load(Relaxed),
            self.retries.load(Relaxed),
            self.ejections.load(Relaxed),
        )
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (direct, nats) = self.calls();
        let (fallbacks, retries, ejections) = self.faults();
        let _ = writeln!(
            out,
            "# HELP nordlys_gateway_region_calls_total Calls to regional daemons, by route."
        );
        let _ = writeln!(out, "# TYPE nordlys_gateway_region_calls_total counter");
        let _ = writeln!(
            out,
            "nordlys_gateway_region_calls_total{{route=\"grpc\"}} {direct}"
        );
        let _ = writeln!(
            out,
            "nordlys_gateway_region_calls_total{{route=\"nats\"}} {nats}"
        );
        for (name, help, value) in [
            (
                "fallbacks",
                "Calls that fell back from direct gRPC to NATS.",
                fallbacks,
            ),
            ("retries", "Calls retried under the retry budget.", retries),
            (
                "ejections",
                "Direct endpoints ejected after a failure.",
                ejections,
            ),
        ] {
            let _ = writeln!(out, "# HELP nordlys_gateway_{name}_total {help}");
            let _ = writeln!(out, "# TYPE nordlys_gateway_{name}_total counter");
            let _ = writeln!(out, "nordlys_gateway_{name}_total {value}");
        }
        out
    }
}
