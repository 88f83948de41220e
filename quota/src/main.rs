//! `quota`: the Nordlys quota and ACL controller.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nordlys_quota::config::{Config, Overrides};

/// mimalloc: every thread allocates and frees on the hot path, and glibc
/// malloc made them wait on each other's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Nordlys quota and ACL controller: organizations, members, API keys
/// and per-region quotas in NATS JetStream KV, served as the NATS micro
/// service `nordlys-quota`.
///
/// Settings: defaults < --config TOML file < NORDLYS_* environment < flags.
#[derive(Debug, Parser)]
#[command(name = "quota", version)]
struct Args {
    /// A TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The NATS server [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// The JetStream KV bucket [default: nordlys-quota].
    #[arg(long)]
    bucket: Option<String>,
    /// Seconds a reservation lives when the caller asks for no TTL [default: 60].
    #[arg(long, value_name = "SECONDS")]
    reservation_ttl: Option<u64>,
    /// Seconds between reconciliations of usage with what the regions hold;
    /// 0 turns them off [default: 300].
    #[arg(long, value_name = "SECONDS")]
    reconcile_interval_secs: Option<u64>,
    /// Where GET /metrics (Prometheus text) is served, for example
    /// 127.0.0.1:9466 (port 0: a free port, shown on the ready line as
    /// metrics=ADDR), or `off` [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Serve on a NATS connection without credentials, for local
    /// development only: any client of that NATS server could then call
    /// the quota service as the gateway.
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
    let _telemetry = nordlys_telemetry::init("nordlys-quota");
    let print_config = args.print_config;
    let overrides = Overrides {
        nats_url: args.nats_url,
        bucket: args.bucket,
        reservation_ttl: args.reservation_ttl,
        reconcile_interval_secs: args.reconcile_interval_secs,
        metrics_listen: args.metrics_listen,
        insecure_dev: args.insecure_dev,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    if print_config {
        return nordlys_transport::print_config("quota", &config, &[]);
    }
    let ready = |id: &str, metrics: Option<std::net::SocketAddr>| {
        // The harness and scripts wait for this line; they find the
        // metrics port on it.
        let mut out = std::io::stdout().lock();
        let _ = match metrics {
            Some(at) => writeln!(out, "nordlys-quota ready id={id} metrics={at}"),
            None => writeln!(out, "nordlys-quota ready id={id}"),
        };
        let _ = out.flush();
    };
    match nordlys_quota::service::run(config, ready).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "quota service failed");
            ExitCode::FAILURE
        }
    }
}
