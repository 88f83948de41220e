//! `regiond`: the Nordlys regional daemon. Run with
//! `cargo run -p nordlys-regiond -- --nats-url nats://127.0.0.1:4222 --region sto1`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nordlys_regiond::config::{BackendKind, Config, Overrides};

/// mimalloc: every thread allocates and frees on the hot path, and glibc
/// malloc made them wait on each other's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves one region of Nordlys over NATS (micro service `nordlys-regiond`)
/// and over direct gRPC (advertised as `grpc_endpoint`).
///
/// Settings come from defaults, then the TOML file of --config, then
/// NORDLYS_* environment variables (NORDLYS_NATS_URL, NORDLYS_REGION,
/// NORDLYS_BACKEND), then these flags.
#[derive(Debug, Parser)]
#[command(name = "regiond", version)]
struct Args {
    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The NATS server URL (default nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The region served, for example sto1.
    #[arg(long)]
    region: Option<String>,
    /// The backend: memory (in process, lost on restart, one instance per
    /// region) or kv (JetStream KV, shared by the region's instances).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Direct gRPC listen address (default 127.0.0.1:0, a free port), or
    /// `off` to serve over NATS only.
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
    /// The gRPC address to advertise in service metadata, when it differs
    /// from the bound one.
    #[arg(long, value_name = "HOST:PORT")]
    grpc_advertise: Option<String>,
    /// Where GET /metrics (Prometheus text) is served, for example
    /// 127.0.0.1:9464 (port 0: a free port, shown on the ready line as
    /// metrics=ADDR), or `off` (the default).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Serve on a NATS connection without credentials, for local
    /// development only: any client of that NATS server could then call
    /// this region as the gateway, for any organization.
    #[arg(long)]
    insecure_dev: bool,
    /// Print the settings it would run with (defaults, then the file, then
    /// NORDLYS_* variables, then flags) as TOML, and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Logs, and traces when OTEL_EXPORTER_OTLP_ENDPOINT is set; the guard
    // flushes the spans still queued when main returns.
    let _telemetry = nordlys_telemetry::init("nordlys-regiond");
    let print_config = args.print_config;
    let overrides = Overrides {
        nats_url: args.nats_url,
        region: args.region,
        backend: args.backend,
        grpc_listen: args.grpc_listen,
        grpc_advertise: args.grpc_advertise,
        metrics_listen: args.metrics_listen,
        insecure_dev: args.insecure_dev,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("regiond: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        return nordlys_transport::print_config("regiond", &config, &[]);
    }
    match nordlys_regiond::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "regiond failed");
            ExitCode::FAILURE
        }
    }
}
