//! The gateway's Prometheus series, served at `GET /metrics` on its HTTP
//! port: public calls by service, method, code and protocol (counted by a
//! tower layer on the gRPC listener and by the HTTP handler), and the
//! mesh's (see [`crate::mesh::Metrics`]).

use std::sync::Arc;
use std::time::Duration;

use nordlys_metrics::{Call, GrpcMetricsLayer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a public call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Public {
    service: String,
    method: String,
    code: &'static str,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublicTimed {
    service: String,
    method: String,
    protocol: &'static str,
}

/// Every series of the gateway, in one registry.
#[derive(Debug)]
pub(crate) struct GatewayMetrics {
    registry: Registry,
    requests: Family<Public, Counter>,
    durations: Family<PublicTimed, Histogram, fn() -> Histogram>,
}

impl GatewayMetrics {
    /// The public series, and the mesh's registered beside them.
    pub(crate) fn new(
        mesh: &crate::mesh::Metrics,
        events: &crate::events::Events,
    ) -> GatewayMetrics {
        let mut registry = Registry::default();
        let requests = Family::<Public, Counter>::default();
        let durations =
            Family::new_with_constructor(nordlys_metrics::latency_histogram as fn() -> Histogram);
        registry.register(
            "nordlys_gateway_requests",
            "Public calls by service, method, gRPC code and protocol (grpc or http)",
            requests.clone(),
        );
        registry.register(
            "nordlys_gateway_request_duration_seconds",
            "Time of public calls, from the request to the status, by service, method and protocol",
            durations.clone(),
        );
        mesh.register(&mut registry);
        events.register(&mut registry);
        GatewayMetrics {
            registry,
            requests,
            durations,
        }
    }

    /// Counts one public call.
    pub(crate) fn observe(
        &self,
        protocol: Protocol,
        service: &str,
        method: &str,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        let protocol = protocol.as_str();
        self.requests
            .get_or_create(&Public {
                service: service.to_owned(),
                method: method.to_owned(),
                code: nordlys_metrics::code_name(code),
                protocol,
            })
            .inc();
        self.durations
            .get_or_create(&PublicTimed {
                service: service.to_owned(),
                method: method.to_owned(),
                protocol,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The layer counting the gRPC listener's calls.
    pub(crate) fn grpc_layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        let metrics = Arc::clone(self);
        GrpcMetricsLayer::new(Arc::new(move |call: &Call<'_>| {
            metrics.observe(
                Protocol::Grpc,
                call.service,
                call.method,
                call.code,
                call.elapsed,
            )
        }))
    }

    /// The series as text, and its content type (see [`nordlys_metrics::encode`]).
    pub(crate) fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        nordlys_metrics::encode(&self.registry, accept)
    }
}
