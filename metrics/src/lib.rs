//! Prometheus metrics shared by the Nordlys daemons.
//!
//! Each daemon keeps its own series (in its `metrics` module) in a
//! [`prometheus_client`] registry; this crate holds what they share:
//!
//! - [`encode`]: the registry as the Prometheus text format (0.0.4), or as
//!   OpenMetrics when the scraper asks for it in `Accept`.
//! - [`MetricsListener`]: a small HTTP listener serving `GET /metrics`, for
//!   the daemons without an HTTP port of their own (regiond, quota).
//! - [`GrpcMetricsLayer`]: a tower layer for tonic servers that times every
//!   call and reads its gRPC status from the answer's headers or trailers,
//!   so no handler has to count anything.
//! - [`code_name`] and [`latency_histogram`]: label values and buckets all
//!   daemons use alike, so their series can be put side by side.

mod layer;
mod listener;

use std::time::Duration;

pub use layer::{GrpcMetrics, GrpcMetricsLayer, MeteredBody};
pub use listener::MetricsListener;
pub use prometheus_client;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One finished call, as an observer of a server sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The full gRPC service name (`nordlys.v1.ProjectService`), or
    /// `unknown` for a path no service serves.
    pub service: &'a str,
    /// The method (`GetProject`), or `unknown`.
    pub method: &'a str,
    /// The gRPC status the caller got.
    pub code: tonic::Code,
    /// From the request to the status.
    pub elapsed: Duration,
}

/// What a server calls with every finished call.
pub type Observer = std::sync::Arc<dyn Fn(&Call<'_>) + Send + Sync>;

/// Latency buckets in seconds, from half a millisecond (a direct call on
/// loopback) to ten seconds (past any deadline the gateway gives).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram over [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The name of a gRPC code as the gRPC spec spells it (`NOT_FOUND`), the
/// label value every daemon uses.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The OpenMetrics content type, served when `Accept` asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` as text, with its content type: OpenMetrics when `accept`
/// names `application/openmetrics-text`, else the Prometheus text format
/// 0.0.4, which every scraper reads.
pub fn encode(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut body = String::new();
    let openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    // Writing into a String cannot fail; a metric's own encoder failing
    // would leave a truncated body, which the scraper reports.
    if openmetrics {
        if let Err(e) = text::encode(&mut body, registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        (OPENMETRICS_CONTENT_TYPE, body)
    } else {
        if let Err(e) = prometheus_text::encode(&mut body, registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        (prometheus_text::CONTENT_TYPE, body)
    }
}

/// Splits a gRPC path `/package.Service/Method` into service and method.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/nordlys.v1.ProjectService/GetProject"),
            Some(("nordlys.v1.ProjectService", "GetProject"))
        );
        assert_eq!(split_path("/nope"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("a/b"), None);
    }

    #[test]
    fn text_format_by_default_openmetrics_when_asked() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("nordlys_test_calls", "Calls", counter.clone());
        counter.inc();
        let (kind, body) = encode(&registry, None);
        assert!(kind.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("# TYPE nordlys_test_calls_total counter"));
        assert!(body.contains("nordlys_test_calls_total 1"));
        assert!(!body.contains("# EOF"));
        let (kind, body) = encode(
            &registry,
            Some("application/openmetrics-text;version=1.0.0"),
        );
        assert_eq!(kind, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"));
    }

    #[test]
    fn codes_are_named_as_grpc_spells_them() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }
}
