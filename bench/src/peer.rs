//! `--peer-grpc-gateway`: the gateway's own JSON port beside grpc-gateway
//! v2, the usual way to put JSON in front of a gRPC API. Three paths to the
//! same GetProject of the same stack (quota, one regiond on the memory
//! backend, a gateway):
//!
//! - (p1) GET /v1/projects/{id} through grpc-gateway's reverse proxy
//!   (peers/grpc-gateway, built by `peers/grpc-gateway/setup`), which calls
//!   the gateway's gRPC port;
//! - (p2) the same GET on the gateway's own JSON port, transcoded in the
//!   gateway's process;
//! - (p3) GetProject on the gateway's gRPC port, the floor of both.
//!
//! Every round measures the three in turn, starting with a different one
//! each round, so a machine that speeds up or slows down moves all three.
//! Besides calls/s and latency it reads the CPU time of each process from
//! /proc before and after each cell: what a call costs the front
//! (grpc-gateway and the gateway behind it, or the gateway alone).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::callers::Source;
use crate::cpu::Probe;
use crate::load::{self, Caller, Cell, Timing};
use crate::procs::{self, Proc};
use crate::report::{thousands, us};
use crate::stack::{parse_addr, Backends, Binaries, Gateway, PROJECT};

/// What the peer mode measures, and how.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The grpc-gateway-peer binary.
    pub(crate) binary: PathBuf,
    /// The gateway's route mode.
    pub(crate) route: String,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) rounds: usize,
    pub(crate) timing: Timing,
    pub(crate) operator_key: String,
}

/// Where `peers/grpc-gateway/setup` puts the peer.
pub(crate) fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/grpc-gateway/bin/grpc-gateway-peer")
}

/// The line the peer prints once it serves.
const READY: &str = "grpc-gateway-peer listening on ";

/// The processes whose CPU time is shown, in the table's order.
const PROCS: [&str; 6] = [
    "grpc-gateway",
    "gateway",
    "regiond",
    "quota",
    "nats-server",
    "bench",
];

/// One of the three paths.
struct Target {
    key: &'static str,
    label: &'static str,
    source: Source,
    /// Its front: the processes between the client and regiond.
    front: &'static [&'static str],
}

pub(crate) async fn run(bins: &Binaries, plan: Plan) -> Result<(), String> {
    if !plan.binary.is_file() {
        return Err(format!(
            "{} not found: run peers/grpc-gateway/setup first (Go and buf on PATH), or give --peer-bin",
            plan.binary.display()
        ));
    }
    let nats = procs::NatsServer::start().await?;
    let backends = Backends::start(bins, &nats.url()).await?;
    let flag = bins.gateway_route.then_some(plan.route.as_str());
    let gateway = Gateway::start(bins, &nats.url(), flag, &plan.operator_key).await?;
    let http = gateway
        .http
        .ok_or("the gateway serves no HTTP/JSON port: nothing to compare")?;
    let key = gateway.setup_tenant().await?;
    gateway.check_read(&key).await?;

    // The same worker threads as the services, when --service-threads says.
    let threads = procs::SERVICE_THREADS.get().map(|n| n.to_string());
    let env: Vec<(&str, &str)> = threads.iter().map(|n| ("GOMAXPROCS", n.as_str())).collect();
    let mut peer = Proc::spawn(
        "grpc-gateway-peer",
        &plan.binary,
        &[
            "-upstream".into(),
            gateway.grpc.to_string(),
            "-listen".into(),
            "127.0.0.1:0".into(),
        ],
        &env,
    )?;
    let peer_addr = parse_addr(&peer.ready(READY).await?)?;
    eprintln!(
        "bench: gateway (route {}) gRPC {} HTTP {http}; grpc-gateway at {peer_addr}",
        plan.route, gateway.grpc
    );

    let path = format!("/v1/{PROJECT}");
    let targets = [
        Target {
            key: "(p1)",
            label: "grpc-gateway v2 to the gateway's gRPC port, GET /v1/projects/{id}",
            source: Source::Http {
                addr: peer_addr,
                path: path.clone(),
                key: key.clone(),
            },
            front: &["grpc-gateway", "gateway"],
        },
        Target {
            key: "(p2)",
            label: "the gateway's own JSON port, GET /v1/projects/{id}",
            source: Source::Http {
                addr: http,
                path,
                key: key.clone(),
            },
            front: &["gateway"],
        },
        Target {
            key: "(p3)",
            label: "the gateway's gRPC port, GetProject",
            source: Source::Grpc {
                channel: gateway.channel().await?,
                key: Some(key),
            },
            front: &["gateway"],
        },
    ];
    // One call through each before measuring: a path that fails fails here.
    for t in &targets {
        t.source
            .caller()
            .await?
            .call()
            .await
            .map_err(|e| format!("{} {}: {e}", t.key, t.label))?;
    }

    let probe = Probe::default()
        .with("grpc-gateway", peer.pid())
        .with("gateway", gateway.pid())
        .with("regiond", backends.regiond_pid())
        .with("quota", backends.quota_pid())
        .with("nats-server", nats.pid())
        .with("bench", Some(std::process::id()));
    // cells[target][concurrency]: one per round.
    let mut cells: Vec<Vec<Vec<Cell>>> =
        vec![vec![Vec::new(); plan.concurrency.len()]; targets.len()];
    for round in 0..plan.rounds {
        for (c, &n) in plan.concurrency.iter().enumerate() {
            for k in 0..targets.len() {
                let t = (k + round) % targets.len();
                let target = &targets[t];
                let before = probe.snapshot();
                let mut cell = load::run(|| target.source.caller(), n, plan.timing).await?;
                cell.cpu = probe.per_call(&before, &probe.snapshot(), cell.all_calls);
                eprintln!(
                    "bench: round {}/{} {} at {n} in flight: {cell}",
                    round + 1,
                    plan.rounds,
                    target.key,
                );
                cells[t][c].push(cell);
            }
        }
    }
    drop(peer);
    drop(gateway);
    drop(backends);
    drop(nats);
    print_report(&plan, &targets, &cells);
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn cpu_of(cell: &Cell, procs: &[&str]) -> f64 {
    cell.cpu
        .cpu_us
        .iter()
        .filter(|(name, _)| procs.contains(name))
        .map(|(_, v)| v)
        .sum()
}

fn print_report(plan: &Plan, targets: &[Target], cells: &[Vec<Vec<Cell>>]) {
    println!("## Nordlys bench: the JSON port beside grpc-gateway v2\n");
    println!("Machine: {}", crate::report::machine());
    let errors: u64 = cells.iter().flatten().flatten().map(|c| c.errors).sum();
    println!(
        "Each cell: {:.1} s warm-up, {:.1} s measured, closed loop of N callers (N = calls in \
         flight), each HTTP caller on a keep-alive HTTP/1.1 connection of its own, the gRPC \
         callers on one channel; GetProject of a small project, gateway route {}, regiond on \
         the memory backend, all on 127.0.0.1. The median over {} round(s), each measuring the \
         three paths in turn from a different first one. Errors: {errors}.\n",
        plan.timing.warmup.as_secs_f64(),
        plan.timing.duration.as_secs_f64(),
        plan.route,
        plan.rounds,
    );
    println!(
        "| path | in flight | calls/s | p50 | p99 | CPU us per call: front | {} |",
        PROCS.join(" | ")
    );
    println!(
        "|---|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(PROCS.len())
    );
    for (t, target) in targets.iter().enumerate() {
        for (c, n) in plan.concurrency.iter().enumerate() {
            let round = &cells[t][c];
            if round.is_empty() {
                continue;
            }
            let cps = median(round.iter().map(|x| x.calls_per_sec).collect());
            let p50 = median(round.iter().map(|x| x.p50.as_secs_f64()).collect());
            let p99 = median(round.iter().map(|x| x.p99.as_secs_f64()).collect());
            let front = median(round.iter().map(|x| cpu_of(x, target.front)).collect());
            let mut line = format!(
                "| {} {} | {n} | {} | {} | {} | {front:.1} |",
                target.key,
                target.label,
                thousands(cps),
                us(Duration::from_secs_f64(p50)),
                us(Duration::from_secs_f64(p99)),
            );
            for name in PROCS {
                let v = median(round.iter().map(|x| cpu_of(x, &[name])).collect());
                line.push_str(&format!(" {v:.1} |"));
            }
            println!("{line}");
        }
    }
    println!(
        "\nThe front of (p1) is grpc-gateway and the gateway behind it, of (p2) and (p3) the \
         gateway; CPU time is user + system of all threads, from /proc, warm-up included, per \
         call. `bench` is the client.\n"
    );
    println!(
        "| in flight | calls/s: (p2) / (p1) | p50: (p1) / (p2) | front CPU per call: (p1) / (p2) \
         | calls/s: (p3) / (p2) | (p2) / (p1) at least 1.50x |"
    );
    println!("|---:|---:|---:|---:|---:|---|");
    for (c, n) in plan.concurrency.iter().enumerate() {
        // The median of the ratios within each round.
        let ratio = |a: usize, b: usize, f: &dyn Fn(&Cell, &Cell) -> f64| {
            median(
                cells[a][c]
                    .iter()
                    .zip(&cells[b][c])
                    .map(|(x, y)| f(x, y))
                    .collect(),
            )
        };
        let cps = ratio(1, 0, &|json, peer| json.calls_per_sec / peer.calls_per_sec);
        let p50 = ratio(0, 1, &|peer, json| {
            peer.p50.as_secs_f64() / json.p50.as_secs_f64().max(1e-9)
        });
        let cpu = ratio(0, 1, &|peer, json| {
            cpu_of(peer, targets[0].front) / cpu_of(json, targets[1].front)
        });
        let grpc = ratio(2, 1, &|grpc, json| grpc.calls_per_sec / json.calls_per_sec);
        let met = if cps >= 1.5 { "met" } else { "NOT met" };
        println!("| {n} | {cps:.2}x | {p50:.2}x | {cpu:.2}x | {grpc:.2}x | {met} |");
    }
    println!(
        "\nRatios are the median of the ratios within each round: above 1.00x the gateway's own \
         port is faster (calls/s, p50) or cheaper (CPU) than grpc-gateway; the last is what the \
         JSON port costs against gRPC on the same gateway."
    );
}
