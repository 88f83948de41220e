//! `bench`: calls/s and p50/p99 latency of the Nordlys gateway paths next
//! to their floors, in one run, on loopback.
//!
//! Floors run inside this process with nats-server beside it; the real
//! paths are the release binaries of gateway, regiond (memory backend) and
//! quota as separate processes. Every process it starts is stopped when it
//! ends, fails, panics or is interrupted.

mod callers;
mod cpu;
mod floors;
mod load;
mod procs;
mod report;
mod stack;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::callers::{GrpcCaller, HttpCaller, NatsCaller};
use crate::cpu::Probe;
use crate::load::{Caller, Cell, Timing};
use crate::report::Row;
use crate::stack::{Backends, Binaries, Gateway, PROJECT};

/// Measures GetProject calls/s and p50/p99 latency at several numbers of
/// calls in flight, for the floors (raw NATS request-reply, a NATS micro
/// endpoint, raw tonic, a bare tonic server forwarding over NATS, the same
/// forwarding over tonic) and the real paths (gateway to regiond over NATS,
/// over direct gRPC, and JSON over HTTP when the gateway serves it), and
/// prints a markdown table with each real path's ratio to its floor.
///
/// Run it with `cargo run --release -p nordlys-bench`. Unless --no-build is
/// given it first runs `cargo build --release -p nordlys-gateway -p
/// nordlys-regiond -p nordlys-quota --bins` itself (the same profile as the
/// bench) and takes the binaries from its own directory (target/release).
/// nats-server must be on PATH or at /usr/sbin/nats-server.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Args {
    /// Measured seconds per cell (one path at one concurrency).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Warm-up seconds before each cell's measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Calls in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Gateway route modes to measure, comma-separated (auto, nats, grpc).
    #[arg(long, value_delimiter = ',', default_value = "nats,grpc")]
    routes: Vec<String>,
    /// Skip the floors (only the real paths).
    #[arg(long)]
    no_floors: bool,
    /// Skip the real paths (only the floors).
    #[arg(long)]
    no_gateway: bool,
    /// Do not build the service binaries; use those in --bin-dir.
    #[arg(long)]
    no_build: bool,
    /// Where gateway, regiond and quota are (default: next to this binary).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Record the gateway with `perf record -g` during its cell at the
    /// highest concurrency and write `perf report` summaries into DIR.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(args) => outcome,
            // Returning drops `run`, whose guards stop what it started.
            _ = interrupted() => Err("interrupted".to_owned()),
        }
    });
    // Floor server tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Everything one path needs to be measured.
struct Plan<'a> {
    concurrency: &'a [usize],
    timing: Timing,
}

impl Plan<'_> {
    /// Measures one path at every concurrency.
    async fn measure<C, F, Fut>(&self, row: &mut Row, probe: &Probe, make: F)
    where
        C: Caller,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<C, String>>,
    {
        for &n in self.concurrency {
            eprint!("bench: {} {} at {n} in flight ... ", row.key, row.label);
            let before = probe.snapshot();
            let mut cell = load::run(&make, n, self.timing).await;
            if let Ok(c) = &mut cell {
                c.cpu = probe.per_call(&before, &probe.snapshot(), c.all_calls);
            }
            match &cell {
                Ok(c) => eprintln!(
                    "{:.0} calls/s, p50 {:?}, p99 {:?}{}",
                    c.calls_per_sec,
                    c.p50,
                    c.p99,
                    if c.errors > 0 {
                        format!(", {} errors", c.errors)
                    } else {
                        String::new()
                    }
                ),
                Err(e) => eprintln!("failed: {e}"),
            }
            row.cells.push(cell);
        }
    }

    fn not_measured(&self, row: &mut Row, why: &str) {
        row.cells = self
            .concurrency
            .iter()
            .map(|_| Err(why.to_owned()))
            .collect();
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err("--concurrency needs positive numbers".into());
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        return Err("--duration must be positive and --warmup not negative".into());
    }
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let plan = Plan {
        concurrency: &args.concurrency,
        timing,
    };
    let exe = std::env::current_exe().map_err(|e| format!("no current exe: {e}"))?;
    let exe_dir = exe.parent().ok_or("the bench binary has no directory")?;
    let release = exe_dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!(
            "bench: WARNING: not a release build; run `cargo run --release -p nordlys-bench`"
        );
    }
    let bins = if args.no_gateway {
        None
    } else {
        if !args.no_build && args.bin_dir.is_none() {
            stack::build(release)?;
        }
        let dir = args
            .bin_dir
            .clone()
            .unwrap_or_else(|| exe_dir.to_path_buf());
        Some(Binaries::find(&dir)?)
    };

    let nats = procs::NatsServer::start().await?;
    let url = nats.url();
    eprintln!("bench: nats-server at {url}");
    let mut rows = Vec::new();

    // ---- floors, all in this process
    let mut servers = floors::Servers::default();
    // Floors: the client and the servers share this process.
    let floor_probe = Probe::default()
        .with("bench", Some(std::process::id()))
        .with("nats-server", nats.pid());
    if !args.no_floors {
        servers.raw_responder(&url).await?;
        servers.micro_responder(&url).await?;
        let fixed = servers.tonic_fixed().await?;
        let to_nats = servers.tonic_to_nats(&url).await?;
        let to_tonic = servers.tonic_to_tonic(fixed).await?;

        let client = floors::connect(&url).await?;
        let mut row = new_row("(a)", "NATS request-reply, raw responder", None);
        plan.measure(&mut row, &floor_probe, || {
            let c = NatsCaller::new(client.clone(), floors::RAW_SUBJECT, PROJECT);
            async move { Ok(c) }
        })
        .await;
        rows.push(row);

        let mut row = new_row("(b)", "NATS micro service endpoint", None);
        plan.measure(&mut row, &floor_probe, || {
            let c = NatsCaller::new(client.clone(), floors::MICRO_SUBJECT, PROJECT);
            async move { Ok(c) }
        })
        .await;
        rows.push(row);

        for (key, label, addr) in [
            ("(c)", "tonic unary", fixed),
            ("(d)", "tonic server forwarding over NATS", to_nats),
            ("(e)", "tonic server forwarding over tonic", to_tonic),
        ] {
            let channel = floors::grpc_channel(addr).await?;
            let mut row = new_row(key, label, None);
            plan.measure(&mut row, &floor_probe, || {
                let c = GrpcCaller::new(channel.clone(), PROJECT, None);
                async move { c }
            })
            .await;
            rows.push(row);
        }
    }

    // ---- real paths, as separate processes
    if let Some(bins) = &bins {
        let backends = Backends::start(bins, &url).await?;
        let operator_key = format!(
            "bench-operator-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut key: Option<String> = None;
        let mut http_row = new_row(
            "(h)",
            "gateway JSON over HTTP, GET /v1/projects/{id} (route nats)",
            Some("(d)"),
        );
        let mut http_done = false;
        for route in &args.routes {
            let (label, floor) = match route.as_str() {
                "nats" => ("gateway gRPC GetProject, route nats", "(d)"),
                "grpc" => ("gateway gRPC GetProject, route grpc", "(e)"),
                _ => ("gateway gRPC GetProject, route auto", "(e)"),
            };
            let key_name = match route.as_str() {
                "nats" => "(f)",
                "grpc" => "(g)",
                _ => "(g')",
            };
            let mut row = new_row(key_name, label, Some(floor));
            if !bins.gateway_route && route != "nats" {
                plan.not_measured(&mut row, "n/a (not built)");
                rows.push(row);
                continue;
            }
            // Without the flag the gateway routes over NATS only.
            let flag = bins.gateway_route.then_some(route.as_str());
            let gateway = Gateway::start(bins, &url, flag, &operator_key).await?;
            eprintln!(
                "bench: gateway (route {route}) gRPC {} HTTP {:?}",
                gateway.grpc, gateway.http
            );
            let k = match &key {
                Some(k) => k.clone(),
                None => {
                    let k = gateway.setup_tenant().await?;
                    key = Some(k.clone());
                    k
                }
            };
            gateway.check_read(&k).await?;
            let channel = gateway.channel().await?;
            let probe = Probe::default()
                .with("bench", Some(std::process::id()))
                .with("gateway", gateway.proc.pid())
                .with("regiond", backends.regiond_pid())
                .with("quota", backends.quota_pid())
                .with("nats-server", nats.pid());
            let profiler = args.perf.as_deref().map(|dir| (dir, route.as_str()));
            measure_profiled(&plan, &mut row, &probe, &gateway, profiler, || {
                let c = GrpcCaller::new(channel.clone(), PROJECT, Some(&k));
                async move { c }
            })
            .await;
            rows.push(row);

            if route == "nats" || (!bins.gateway_route && !http_done) {
                http_done = true;
                match gateway.http {
                    Some(addr) => {
                        let path = format!("/v1/{PROJECT}");
                        plan.measure(&mut http_row, &probe, || {
                            HttpCaller::connect(addr, &path, &k)
                        })
                        .await;
                    }
                    None => plan.not_measured(&mut http_row, "n/a (no HTTP listener)"),
                }
            }
        }
        if !http_done {
            plan.not_measured(&mut http_row, "n/a (route nats not measured)");
        }
        rows.push(http_row);
        drop(backends);
    }
    drop(servers);
    drop(nats);

    println!("## Nordlys bench\n");
    println!("Machine: {}", report::machine());
    println!(
        "Each cell: {:.1} s warm-up, {:.1} s measured, closed loop of N callers (N = calls in flight), \
         GetProject answered with a small project message; all traffic on 127.0.0.1.\n",
        args.warmup, args.duration
    );
    println!("{}", report::table(&rows, &args.concurrency));
    println!(
        "Floors (a)-(e) run inside the bench process with nats-server beside it; (f)-(h) are the \
         release gateway, regiond (memory backend) and quota processes. Ratios are slowdowns \
         against the floor: 1.00x is as fast, the target is at most 1.30x.\n"
    );
    println!(
        "CPU time per call, in microseconds, by process (user + system, from /proc; warm-up \
         included; for the floors `bench` is the client and the servers together):\n"
    );
    println!("{}", report::cpu_table(&rows, &args.concurrency));
    Ok(())
}

fn new_row(key: &'static str, label: &str, floor: Option<&'static str>) -> Row {
    Row {
        key,
        label: label.to_owned(),
        floor,
        cells: Vec::new(),
    }
}

/// Measures a gateway path; with `perf` set, records the gateway with
/// `perf record` during the highest-concurrency cell.
async fn measure_profiled<C, F, Fut>(
    plan: &Plan<'_>,
    row: &mut Row,
    probe: &Probe,
    gateway: &Gateway,
    perf: Option<(&std::path::Path, &str)>,
    make: F,
) where
    C: Caller,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<C, String>>,
{
    let Some((dir, route)) = perf else {
        plan.measure(row, probe, make).await;
        return;
    };
    let max = plan.concurrency.iter().copied().max().unwrap_or(1);
    let others: Vec<usize> = plan
        .concurrency
        .iter()
        .copied()
        .filter(|&n| n != max)
        .collect();
    let mut cells: Vec<(usize, Result<Cell, String>)> = Vec::new();
    if !others.is_empty() {
        let sub = Plan {
            concurrency: &others,
            timing: plan.timing,
        };
        sub.measure(row, probe, &make).await;
        cells.extend(others.iter().copied().zip(row.cells.drain(..)));
    }
    let recorder = gateway
        .proc
        .pid()
        .map(|pid| procs::PerfRecord::start(dir, &format!("gateway-{route}"), pid));
    let sub = Plan {
        concurrency: &[max],
        timing: plan.timing,
    };
    sub.measure(row, probe, &make).await;
    cells.extend(std::iter::once(max).zip(row.cells.drain(..)));
    match recorder {
        Some(Ok(recorder)) => match recorder.finish() {
            Ok(summary) => eprintln!("bench: perf summary in {}", summary.display()),
            Err(e) => eprintln!("bench: perf: {e}"),
        },
        Some(Err(e)) => eprintln!("bench: perf: {e}"),
        None => {}
    }
    // Back in the order of --concurrency.
    row.cells = plan
        .concurrency
        .iter()
        .map(|n| {
            cells
                .iter()
                .position(|(m, _)| m == n)
                .map(|i| cells.remove(i).1)
                .unwrap_or_else(|| Err("not measured".into()))
        })
        .collect();
}
