//! `gateway`: the public front door of Nordlys.

use std::path::PathBuf;

use clap::Parser;
use nordlys_gateway::{Config, Gateway};

/// mimalloc: every thread allocates and frees on the hot path, and glibc
/// malloc made them wait on each other's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves the Nordlys API over gRPC (with reflection and health) and routes
/// each call to the regional daemons and the quota service over NATS.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see README); NORDLYS_* variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NATS server URL.
    #[arg(long)]
    nats_url: Option<String>,
    /// gRPC listen address, e.g. 127.0.0.1:50051 (port 0 picks a free one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// HTTP/JSON listen address, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Operator API key (prefer NORDLYS_OPERATOR_KEY: flags show in `ps`).
    #[arg(long)]
    operator_key: Option<String>,
    /// Regions expected to exist, comma-separated.
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// How calls reach regions: auto (direct gRPC, NATS fallback), nats or grpc.
    #[arg(long)]
    route: Option<nordlys_gateway::RouteMode>,
    /// Print the settings it would run with (defaults, then the file, then
    /// NORDLYS_* variables, then flags) as TOML, and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Flushes the spans still queued when main returns.
    let _telemetry = nordlys_telemetry::init("nordlys-gateway");
    let args = Args::parse();
    let shutdown = nordlys_gateway::shutdown_signal();
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: bad configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(v) = args.nats_url {
        config.nats_url = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = args.operator_key {
        config.operator_key = v;
    }
    if let Some(v) = args.regions {
        config.regions = v;
    }
    if let Some(v) = args.route {
        config.route = v;
    }
    if args.print_config {
        return nordlys_transport::print_config("gateway", &config, &["operator_key"]);
    }
    match Gateway::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            std::process::ExitCode::FAILURE
        }
    }
}
