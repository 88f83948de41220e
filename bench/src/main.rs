//! `bench`: calls/s and p50/p99 latency of the Nordlys gateway paths next
//! to their floors, in one run, on loopback.
//!
//! Floors run inside this process with nats-server beside it; the real
//! paths are the release binaries of gateway, regiond (memory backend) and
//! quota as separate processes, and the same services as tasks in this
//! process (the floors' topology). Every process it starts is stopped when it
//! ends, fails, panics or is interrupted.

mod apart;
mod callers;
mod cpu;
mod floors;
mod load;
mod peer;
mod procs;
mod report;
mod scale;
mod schedule;
mod stack;
mod telemetry;
mod together;
mod topology;
mod writes;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::callers::Source;
use crate::cpu::Probe;
use crate::load::Timing;
use crate::report::Row;
use crate::stack::{Backends, Binaries, Gateway, PROJECT};

/// mimalloc: every thread allocates and frees on the hot path, and glibc
/// malloc made them wait on each other's arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Measured seconds per cell (one path at one concurrency). Short
    /// cells in many rounds: on this VM one path's calls/s moves by up to
    /// 2x from one second to the next, so ten half-second samples give a
    /// steadier median than three two-second ones in the same time.
    #[arg(long, default_value_t = 0.5)]
    duration: f64,
    /// Warm-up seconds before each cell's measured window.
    #[arg(long, default_value_t = 0.2)]
    warmup: f64,
    /// Calls in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Gateway route modes to measure, comma-separated (auto, nats, grpc).
    #[arg(long, value_delimiter = ',', default_value = "nats,grpc")]
    routes: Vec<String>,
    /// Rounds: each measures every path at every concurrency in turn; the
    /// table shows medians over the rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Worker threads of the gateway, regiond and quota processes
    /// (TOKIO_WORKER_THREADS); default: theirs, one per CPU.
    #[arg(long, value_name = "N")]
    service_threads: Option<usize>,
    /// Also measure the forwarding floors with each server in its own
    /// process (the real paths' topology), as (d') and (e').
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    apart_floors: bool,
    /// Also measure the real paths with quota, regiond and the gateways
    /// inside the bench process (the floors' topology), as (f1)-(h1).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    together: bool,
    /// Internal: serve one floor in this process (used for --apart-floors).
    #[arg(long, hide = true, value_enum)]
    serve_floor: Option<apart::FloorKind>,
    /// Internal: the NATS URL of a --serve-floor process.
    #[arg(long, hide = true)]
    nats_url: Option<String>,
    /// Internal: the upstream of a --serve-floor to-tonic process.
    #[arg(long, hide = true)]
    upstream: Option<std::net::SocketAddr>,
    /// Reads at scale instead: ListProjects (first and middle page of 50)
    /// and GetProject through the gateway with regiond on the kv backend,
    /// at each of --scale-sizes projects, and the ratio of the largest to
    /// the smallest. The buckets are filled directly, not through the API.
    #[arg(long)]
    scale: bool,
    /// Projects in the region for --scale, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    scale_sizes: Vec<usize>,
    /// Organizations the --scale projects are spread over.
    #[arg(long, default_value_t = 1000)]
    scale_orgs: usize,
    /// The write path instead: CreateProject in two regions (sto1, osl1)
    /// and DeleteProject through the gateway with quota and two regiond on
    /// the kv backend, in one organization (hot) and spread over
    /// --writes-orgs, beside a floor of JetStream KV compare-and-set writes;
    /// then a run against a limit and a check that usage equals what exists.
    #[arg(long)]
    writes: bool,
    /// The reference deployment instead (three JetStream nodes at R3, a
    /// leaf node per region, TLS, nkeys, mutual TLS on the direct route)
    /// beside a single nats-server: creates and reads at 16 in flight, in
    /// --writes-rounds rounds of at most --writes-calls calls or
    /// --writes-seconds each, and the cluster's ratio to the single server.
    #[arg(long)]
    topology: bool,
    /// What exporting traces costs: the same stack with no OTLP endpoint
    /// and with every daemon exporting its spans to a receiver in the bench
    /// process, creates and reads at 16 in flight, in --writes-rounds
    /// rounds of at most --writes-calls calls or --writes-seconds each.
    #[arg(long)]
    telemetry: bool,
    /// The gateway's own JSON port beside grpc-gateway v2 instead: GET
    /// /v1/projects/{id} through grpc-gateway's reverse proxy to the
    /// gateway's gRPC port, the same GET on the gateway's JSON port, and
    /// GetProject on its gRPC port, at --peer-concurrency in flight, with
    /// each process's CPU time per call. Needs the peer built by
    /// peers/grpc-gateway/setup. The gateway runs in the first of --routes.
    #[arg(long)]
    peer_grpc_gateway: bool,
    /// Calls in flight for --peer-grpc-gateway, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    peer_concurrency: Vec<usize>,
    /// The grpc-gateway peer (default: peers/grpc-gateway/bin/grpc-gateway-peer
    /// in the workspace).
    #[arg(long, value_name = "PATH")]
    peer_bin: Option<PathBuf>,
    /// At most this many calls per --writes cell.
    #[arg(long, default_value_t = 3000)]
    writes_calls: usize,
    /// At most this many seconds per --writes cell.
    #[arg(long, default_value_t = 4.0)]
    writes_seconds: f64,
    /// Rounds of --writes (the tables show medians).
    #[arg(long, default_value_t = 3)]
    writes_rounds: usize,
    /// Organizations the spread --writes cells use.
    #[arg(long, default_value_t = 100)]
    writes_orgs: usize,
    /// The project limit of the --writes over-allocation run...
    #[arg(long, default_value_t = 500)]
    writes_limit: i64,
    /// ...and the creates it attempts at the highest concurrency.
    #[arg(long, default_value_t = 2000)]
    writes_limit_attempts: usize,
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
    /// Record the processes of each path with `perf record --call-graph fp`
    /// during its cell at the highest concurrency in the last round (gateway
    /// and regiond for (f)-(h), forwarder and upstream for (d') and (e')),
    /// and write flat `perf report` summaries into DIR. The call graphs need
    /// a build with frame pointers (RUSTFLAGS="-C force-frame-pointers=yes"
    /// in a target dir of its own, then --no-build --bin-dir).
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
        if let Some(kind) = args.serve_floor {
            return apart::serve(kind, args.nats_url.as_deref(), args.upstream).await;
        }
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

pub(crate) async fn interrupted() {
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

/// One path the bench drives: what it measures and how to call it.
struct Target {
    row: Row,
    source: Source,
    probe: Probe,
    /// The processes to record with perf at the highest concurrency.
    profile: Vec<(u32, String)>,
}

async fn run(args: Args) -> Result<(), String> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err("--concurrency needs positive numbers".into());
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) || args.rounds == 0 {
        return Err(
            "--duration must be positive, --warmup not negative, --rounds at least 1".into(),
        );
    }
    if let Some(n) = args.service_threads {
        if n == 0 {
            return Err("--service-threads needs a positive number".into());
        }
        let _ = procs::SERVICE_THREADS.set(n);
    }
    let timing = Timing {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
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

    if args.scale {
        let bins = bins.ok_or("--scale needs the service binaries (drop --no-gateway)")?;
        if args.scale_orgs == 0 {
            return Err("--scale-orgs needs a positive number".into());
        }
        let plan = scale::Plan {
            sizes: args.scale_sizes.clone(),
            orgs: args.scale_orgs,
            concurrency: args.concurrency.clone(),
            rounds: args.rounds,
            timing,
            operator_key: fresh_operator_key(),
        };
        return scale::run(&bins, plan).await;
    }

    if args.peer_grpc_gateway {
        let bins =
            bins.ok_or("--peer-grpc-gateway needs the service binaries (drop --no-gateway)")?;
        if args.peer_concurrency.is_empty() || args.peer_concurrency.contains(&0) {
            return Err("--peer-concurrency needs positive numbers".into());
        }
        let plan = peer::Plan {
            binary: args.peer_bin.clone().unwrap_or_else(peer::default_binary),
            route: args
                .routes
                .first()
                .cloned()
                .unwrap_or_else(|| "nats".into()),
            concurrency: args.peer_concurrency.clone(),
            rounds: args.rounds,
            timing,
            operator_key: fresh_operator_key(),
        };
        return peer::run(&bins, plan).await;
    }

    if args.topology {
        let bins = bins.ok_or("--topology needs the service binaries (drop --no-gateway)")?;
        let plan = topology::Plan {
            rounds: args.writes_rounds,
            concurrency: 16,
            calls: args.writes_calls,
            seconds: args.writes_seconds,
        };
        return topology::run(&bins, plan).await;
    }

    if args.telemetry {
        let bins = bins.ok_or("--telemetry needs the service binaries (drop --no-gateway)")?;
        let plan = topology::Plan {
            rounds: args.writes_rounds,
            concurrency: 16,
            calls: args.writes_calls,
            seconds: args.writes_seconds,
        };
        return telemetry::run(&bins, plan).await;
    }

    if args.writes {
        let bins = bins.ok_or("--writes needs the service binaries (drop --no-gateway)")?;
        if args.writes_rounds == 0 {
            return Err("--writes-rounds needs a positive number".into());
        }
        let plan = writes::Plan {
            concurrency: args.concurrency.clone(),
            rounds: args.writes_rounds,
            calls: args.writes_calls,
            seconds: args.writes_seconds,
            spread_orgs: args.writes_orgs,
            limit: args.writes_limit,
            limit_attempts: args.writes_limit_attempts,
            operator_key: fresh_operator_key(),
        };
        return writes::run(&bins, plan).await;
    }

    let nats = procs::NatsServer::start().await?;
    let url = nats.url();
    eprintln!("bench: nats-server at {url}");
    let mut targets: Vec<Target> = Vec::new();

    // ---- floors, all in this process
    let mut servers = floors::Servers::default();
    // Floors: the client and the servers share this process.
    let floor_probe = Probe::default()
        .with("bench", Some(std::process::id()))
        .with("nats-server", nats.pid());
    if !args.no_floors {
        servers.raw_responder(&url, floors::RAW_SUBJECT).await?;
        servers.micro_responder(&url).await?;
        let fixed = servers.tonic_fixed().await?;
        let to_nats = servers.tonic_to_nats(&url, floors::RAW_SUBJECT).await?;
        let to_tonic = servers.tonic_to_tonic(fixed).await?;
        let client = floors::connect(&url).await?;
        for (key, label, subject) in [
            (
                "(a)",
                "NATS request-reply, raw responder",
                floors::RAW_SUBJECT,
            ),
            ("(b)", "NATS micro service endpoint", floors::MICRO_SUBJECT),
        ] {
            targets.push(Target {
                row: new_row(key, label, None),
                source: Source::Nats {
                    client: client.clone(),
                    subject,
                },
                probe: floor_probe.clone(),
                profile: Vec::new(),
            });
        }
        for (key, label, addr) in [
            ("(c)", "tonic unary", fixed),
            ("(d)", "tonic server forwarding over NATS", to_nats),
            ("(e)", "tonic server forwarding over tonic", to_tonic),
        ] {
            targets.push(Target {
                row: new_row(key, label, None),
                source: Source::Grpc {
                    channel: floors::grpc_channel(addr).await?,
                    key: None,
                },
                probe: floor_probe.clone(),
                profile: Vec::new(),
            });
        }
    }

    // ---- the forwarding floors again, each server its own process
    let mut apart_floors = None;
    if !args.no_floors && args.apart_floors {
        let started = apart::ApartFloors::start(&exe, &url).await?;
        let mut probe = Probe::default().with("bench", Some(std::process::id()));
        for (role, pid) in started.pids() {
            probe = probe.with(role, pid);
        }
        probe = probe.with("nats-server", nats.pid());
        for (key, label, addr, pids, name) in [
            (
                "(d')",
                "(d) with forwarder and responder each in its own process",
                started.to_nats.addr,
                started.to_nats.pids(),
                "nats",
            ),
            (
                "(e')",
                "(e) with forwarder and server each in its own process",
                started.to_tonic.addr,
                started.to_tonic.pids(),
                "tonic",
            ),
        ] {
            targets.push(Target {
                row: new_row(key, label, None),
                source: Source::Grpc {
                    channel: floors::grpc_channel(addr).await?,
                    key: None,
                },
                probe: probe.clone(),
                profile: profile(
                    &args.perf,
                    [
                        (pids[0], format!("forwarder-{name}")),
                        (pids[1], format!("upstream-{name}")),
                    ],
                ),
            });
        }
        apart_floors = Some(started);
    }

    // ---- real paths, as separate processes, all started before measuring
    // so that each round measures every path in turn.
    let mut backends = None;
    let mut gateways = Vec::new();
    let operator_key = format!(
        "bench-operator-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    if let Some(bins) = &bins {
        let started = Backends::start(bins, &url).await?;
        let mut key: Option<String> = None;
        let mut http_target: Option<Target> = None;
        for route in &args.routes {
            let row = real_row(route, Topology::Processes);
            if !bins.gateway_route && route != "nats" {
                eprintln!(
                    "bench: {} not measured: the gateway has no --route",
                    row.key
                );
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
            let probe = Probe::default()
                .with("bench", Some(std::process::id()))
                .with("gateway", gateway.pid())
                .with("regiond", started.regiond_pid())
                .with("quota", started.quota_pid())
                .with("nats-server", nats.pid());
            targets.push(Target {
                row,
                source: Source::Grpc {
                    channel: gateway.channel().await?,
                    key: Some(k.clone()),
                },
                probe: probe.clone(),
                profile: profile(
                    &args.perf,
                    [
                        (gateway.pid(), format!("gateway-{route}")),
                        (started.regiond_pid(), format!("regiond-{route}")),
                    ],
                ),
            });
            if http_target.is_none() && (route == "nats" || !bins.gateway_route) {
                http_target = gateway.http.map(|addr| Target {
                    row: real_row("http", Topology::Processes),
                    source: json_source(addr, &k),
                    probe,
                    profile: profile(
                        &args.perf,
                        [
                            (gateway.pid(), "gateway-http".to_owned()),
                            (started.regiond_pid(), "regiond-http".to_owned()),
                        ],
                    ),
                });
            }
            gateways.push(gateway);
        }
        targets.extend(http_target);
        backends = Some(started);
    }

    // ---- the real paths again, every service a task in this process
    let mut together = None;
    if !args.no_gateway && args.together {
        let started = together::Together::start(&args.routes, &operator_key).await?;
        let probe = Probe::default()
            .with("bench", Some(std::process::id()))
            .with("nats-server", started.nats.pid());
        let mut http_target = None;
        // One tenant, made through the first gateway; they share quota and regiond.
        let key = match started.gateways.first() {
            Some((_, gateway)) => gateway.setup_tenant().await?,
            None => String::new(),
        };
        for (route, gateway) in &started.gateways {
            eprintln!(
                "bench: gateway in this process (route {route}) gRPC {} HTTP {:?}",
                gateway.grpc, gateway.http
            );
            gateway.check_read(&key).await?;
            targets.push(Target {
                row: real_row(route, Topology::InBench),
                source: Source::Grpc {
                    channel: gateway.channel().await?,
                    key: Some(key.clone()),
                },
                probe: probe.clone(),
                profile: Vec::new(),
            });
            if http_target.is_none() && route == "nats" {
                http_target = gateway.http.map(|addr| Target {
                    row: real_row("http", Topology::InBench),
                    source: json_source(addr, &key),
                    probe: probe.clone(),
                    profile: Vec::new(),
                });
            }
        }
        targets.extend(http_target);
        together = Some(started);
    }

    // ---- the rounds: every path at every concurrency, in turn, each real
    // path right after its floor, so a machine that speeds up or slows down
    // moves both.
    for target in &mut targets {
        target.row.samples = vec![Vec::new(); args.concurrency.len()];
    }
    let order = schedule::measuring_order(&targets.iter().map(|t| &t.row).collect::<Vec<_>>());
    for round in 0..args.rounds {
        let last_round = round + 1 == args.rounds;
        for (i, &n) in args.concurrency.iter().enumerate() {
            let max = args.concurrency.iter().all(|&m| m <= n);
            for &t in &order {
                let target = &mut targets[t];
                let recorders: Vec<_> = match &args.perf {
                    Some(dir) if last_round && max => target
                        .profile
                        .iter()
                        .map(|(pid, name)| procs::PerfRecord::start(dir, name, *pid))
                        .collect(),
                    _ => Vec::new(),
                };
                eprint!(
                    "bench: round {}/{} {} {} at {n} in flight ... ",
                    round + 1,
                    args.rounds,
                    target.row.key,
                    target.row.label
                );
                let before = target.probe.snapshot();
                let source = &target.source;
                let mut cell = load::run(|| source.caller(), n, timing).await;
                if let Ok(c) = &mut cell {
                    c.cpu = target
                        .probe
                        .per_call(&before, &target.probe.snapshot(), c.all_calls);
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
                target.row.samples[i].push(cell);
                for recorder in recorders {
                    match recorder.and_then(procs::PerfRecord::finish) {
                        Ok(summary) => eprintln!("bench: perf summary in {}", summary.display()),
                        Err(e) => eprintln!("bench: perf: {e}"),
                    }
                }
            }
        }
    }
    drop(together);
    drop(gateways);
    drop(backends);
    drop(apart_floors);
    drop(servers);
    drop(nats);

    let rows: Vec<Row> = targets.into_iter().map(|t| t.row).collect();
    println!("## Nordlys bench\n");
    println!("Machine: {}", report::machine());
    if let Some(n) = args.service_threads {
        println!("Service processes: {n} tokio worker thread(s) each (--service-threads).");
    }
    println!(
        "Each cell: {:.1} s warm-up, {:.1} s measured, closed loop of N callers (N = calls in flight), \
         GetProject answered with a small project message; all traffic on 127.0.0.1. {} round(s): \
         each round measures every path at every concurrency in turn, each real path right after \
         its floor (order: {}); a cell shows the median over the rounds, a ratio the median of the \
         ratios within each round.\n",
        args.warmup,
        args.duration,
        args.rounds,
        order
            .iter()
            .map(|&t| rows[t].key)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{}", report::table(&rows, &args.concurrency));
    println!(
        "Floors (a)-(e) run inside the bench process with nats-server beside it; (f)-(h) are the \
         release gateway, regiond (memory backend) and quota processes; (d') and (e') are (d) and \
         (e) with each server in its own process, the real paths' topology; (f1)-(h1) are the same \
         services as tasks inside the bench process (the floors' topology) on a nats-server of \
         their own. Ratios are slowdowns against the floor: 1.00x is as fast, the target is at most 1.30x against (d) and (e); \
         the ratio to (d') or (e') is what the gateway and regiond add beyond their processes.\n"
    );
    println!(
        "CPU time per call, in microseconds, by process (user + system, from /proc; warm-up \
         included; median round; for the floors `bench` is the client and the servers together; for (d') and (e') `forwarder` is the forwarder process and `upstream` the responder or server behind it):\n"
    );
    println!("{}", report::cpu_table(&rows, &args.concurrency));
    println!(
        "Context switches per call, by process (voluntary and involuntary, all threads; \
         same windows):\n"
    );
    println!("{}", report::switch_table(&rows, &args.concurrency));
    Ok(())
}

/// Where the real services run.
#[derive(Debug, Clone, Copy)]
enum Topology {
    /// Each its own process, as deployed: compared with the floors apart too.
    Processes,
    /// Tasks in the bench process, as the floors (a)-(e).
    InBench,
}

/// The row of a real path: `path` is a route mode, or `http` for JSON over
/// HTTP (on route nats).
fn real_row(path: &str, topology: Topology) -> Row {
    let (key, in_bench, label, floor) = match path {
        "nats" => ("(f)", "(f1)", "gateway gRPC GetProject, route nats", "(d)"),
        "grpc" => ("(g)", "(g1)", "gateway gRPC GetProject, route grpc", "(e)"),
        "http" => (
            "(h)",
            "(h1)",
            "gateway JSON over HTTP, GET /v1/projects/{id} (route nats)",
            "(d)",
        ),
        _ => (
            "(g*)",
            "(g1*)",
            "gateway gRPC GetProject, route auto",
            "(e)",
        ),
    };
    match topology {
        Topology::Processes => new_row(key, label, Some(floor)),
        Topology::InBench => Row {
            apart: None,
            ..new_row(
                in_bench,
                &format!("{key} with every service in the bench process"),
                Some(floor),
            )
        },
    }
}

/// GET of the bench project as JSON over HTTP with `key`.
fn json_source(addr: std::net::SocketAddr, key: &str) -> Source {
    Source::Http {
        addr,
        path: format!("/v1/{PROJECT}"),
        key: key.to_owned(),
    }
}

/// What to record with perf of a path's processes, when --perf is given.
fn profile<const N: usize>(
    perf: &Option<PathBuf>,
    procs: [(Option<u32>, String); N],
) -> Vec<(u32, String)> {
    if perf.is_none() {
        return Vec::new();
    }
    procs
        .into_iter()
        .filter_map(|(pid, name)| pid.map(|pid| (pid, name)))
        .collect()
}

fn new_row(key: &'static str, label: &str, floor: Option<&'static str>) -> Row {
    Row {
        key,
        label: label.to_owned(),
        floor,
        apart: match floor {
            Some("(d)") => Some("(d')"),
            Some("(e)") => Some("(e')"),
            _ => None,
        },
        samples: Vec::new(),
    }
}

/// An operator key of this run's own, so stacks of runs never share one.
fn fresh_operator_key() -> String {
    format!(
        "bench-operator-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}
