//! `--telemetry`: what exporting traces costs. The same stack (release
//! binaries, kv backend, one daemon per region) with no OTLP endpoint, and
//! with every daemon exporting its spans over OTLP/gRPC to a receiver in
//! the bench process that counts and drops them; creates then reads, the
//! two setups alternating round by round.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use nordlys_tests::{Stack, StackOpts};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::stack::Binaries;
use crate::topology::{creates_and_reads, print_pair, Cell, Plan};

/// An OTLP trace receiver that counts spans and keeps none.
#[derive(Debug, Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves the sink on a loopback port; its endpoint URL.
async fn start_sink(sink: Sink) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("OTLP receiver: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("OTLP receiver: {e}"))?;
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(incoming)
            .await;
    });
    Ok(format!("http://{addr}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Export {
    Off,
    On,
}

impl Export {
    fn label(self) -> &'static str {
        match self {
            Export::Off => "no OTLP endpoint",
            Export::On => "exporting every span over OTLP/gRPC",
        }
    }
}

pub(crate) async fn run(bins: &Binaries, plan: Plan) -> Result<(), String> {
    if plan.rounds == 0 || plan.concurrency == 0 || plan.calls == 0 || plan.seconds <= 0.0 {
        return Err("--telemetry needs positive rounds, concurrency, calls and seconds".into());
    }
    std::env::set_var("NORDLYS_BIN_DIR", &bins.dir);
    let sink = Sink::default();
    let endpoint = start_sink(sink.clone()).await?;
    let setups = [Export::Off, Export::On];
    let mut cells: Vec<Vec<Cell>> = vec![Vec::new(); setups.len()];
    let mut spans = [0u64; 2];
    for round in 0..plan.rounds {
        // ABBA: each setup goes first in every other round, so an order
        // effect (a warmer machine for the second) cancels out.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let setup = setups[i];
            let env = match setup {
                Export::Off => Vec::new(),
                Export::On => vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone())],
            };
            let before = sink.spans.load(Relaxed);
            let stack = Stack::start_with(StackOpts {
                sto1_instances: 1,
                gateway_env: env.clone(),
                regiond_env: env.clone(),
                quota_env: env,
                ..StackOpts::default()
            })
            .await;
            cells[i].push(creates_and_reads(&stack.gateway, setup.label(), round, &plan).await?);
            // Stopping flushes what the daemons still hold.
            drop(stack);
            spans[i] += sink.spans.load(Relaxed) - before;
        }
    }
    if spans[0] != 0 {
        return Err(format!(
            "{} spans arrived with no endpoint set: the measurement is wrong",
            spans[0]
        ));
    }
    print_pair(
        &format!(
            "Trace export: {} in flight, medians of {} rounds ({} spans received while exporting)",
            plan.concurrency, plan.rounds, spans[1]
        ),
        "setup",
        [Export::Off.label(), Export::On.label()],
        &cells,
        "exporting / none",
    )
}
