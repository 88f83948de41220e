//! `--topology`: the reference deployment of `deploy/` beside the single
//! nats-server, the same calls in the same run.
//!
//! The cluster is what the cluster tests run: three JetStream nodes with
//! every bucket at three replicas, a leaf node per region that the region's
//! daemon connects to, TLS on every NATS connection, each service with its
//! own nkey and permissions, mutual TLS on the direct gRPC route. The single
//! server is one nats-server without TLS or credentials (`--insecure-dev`),
//! buckets at one replica. Both run the same release binaries (kv backend,
//! one daemon per region); the two alternate, round by round, so a machine
//! that speeds up or slows down moves both.
//!
//! Then what mutual TLS costs the direct route: GetProject through the
//! gateway on route `grpc` with and without `[mesh_tls]`, beside the same
//! cost on a floor (the gateway's own direct client to a bare tonic server
//! with a fixed answer, plaintext and behind the same TLS listener).

use std::sync::Arc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, GetProjectRequest, Project,
    ResourceCounts,
};
use nordlys_tests::cluster::{ClusterStack, TestCa};
use nordlys_tests::{Gateway, Stack, StackOpts};
use nordlys_transport::tls::MeshTlsConfig;
use nordlys_transport::{DirectChannel, DirectOptions};

use crate::cpu::Probe;
use crate::stack::{bearer, Binaries};
use crate::writes::{drive, status_text, Outcome};

/// What `--topology` runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Rounds per topology; the table shows medians.
    pub(crate) rounds: usize,
    /// Calls in flight.
    pub(crate) concurrency: usize,
    /// At most this many calls per cell.
    pub(crate) calls: usize,
    /// At most this long per cell.
    pub(crate) seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Single,
    Cluster,
}

impl Topology {
    fn label(self) -> &'static str {
        match self {
            Topology::Single => "single nats-server",
            Topology::Cluster => "3-node cluster + leaf nodes, TLS, nkeys, R3",
        }
    }
}

/// One topology running; dropping it stops every process.
enum Running {
    Single(Box<Stack>),
    Cluster(Box<ClusterStack>),
}

impl Running {
    async fn start(topology: Topology) -> Running {
        match topology {
            Topology::Single => Running::Single(Box::new(
                Stack::start_with(StackOpts {
                    sto1_instances: 1,
                    ..StackOpts::default()
                })
                .await,
            )),
            Topology::Cluster => Running::Cluster(Box::new(ClusterStack::start().await)),
        }
    }

    fn gateway(&self) -> &Gateway {
        match self {
            Running::Single(stack) => &stack.gateway,
            Running::Cluster(stack) => &stack.gateway,
        }
    }
}

/// What one setup measured: creates, then reads of what was created.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) creates: Outcome,
    pub(crate) reads: Outcome,
}

async fn measure(topology: Topology, round: usize, plan: &Plan) -> Result<Cell, String> {
    let running = Running::start(topology).await;
    creates_and_reads(running.gateway(), topology.label(), round, plan).await
}

/// Creates (one organization, both regions) then reads of what was
/// created, through `gateway`; `label` names the setup in the log.
pub(crate) async fn creates_and_reads(
    gateway: &Gateway,
    label: &str,
    round: usize,
    plan: &Plan,
) -> Result<Cell, String> {
    let tenant = gateway
        .tenant_with_limits(
            &format!("topo{round}"),
            ResourceCounts {
                projects: 1_000_000,
                ..Default::default()
            },
        )
        .await;
    let client = ProjectServiceClient::new(gateway.channel().await);
    let key: Arc<str> = Arc::from(tenant.key.as_str());
    let probe = Probe::default();
    let max_time = Duration::from_secs_f64(plan.seconds);
    let create = {
        let (client, key) = (client.clone(), key.clone());
        move |prefix: &'static str| {
            let (client, key) = (client.clone(), key.clone());
            move |i: usize| {
                let (mut client, key) = (client.clone(), key.clone());
                async move {
                    let id = format!("{prefix}-{i}");
                    client
                        .create_project(bearer(
                            CreateProjectRequest {
                                project: Some(Project {
                                    display_name: id.clone(),
                                    regions: vec!["sto1".into(), "osl1".into()],
                                    ..Default::default()
                                }),
                                project_id: id.clone(),
                                request_id: format!("req-{id}"),
                            },
                            &key,
                        )?)
                        .await
                        .map(|_| ())
                        .map_err(|s| status_text(&s))
                }
            }
        }
    };
    // Warm-up, not reported: connections, leaders, caches.
    drive(plan.concurrency, 200, max_time, &probe, create("warm")).await?;
    let creates = drive(
        plan.concurrency,
        plan.calls,
        max_time,
        &probe,
        create("proj"),
    )
    .await?;
    let created = creates.ok.max(1) as usize;
    let reads = drive(
        plan.concurrency,
        usize::MAX,
        max_time,
        &probe,
        move |i: usize| {
            let (mut client, key) = (client.clone(), key.clone());
            async move {
                client
                    .get_project(bearer(
                        GetProjectRequest {
                            name: format!("projects/proj-{}", i % created),
                        },
                        &key,
                    )?)
                    .await
                    .map(|_| ())
                    .map_err(|s| status_text(&s))
            }
        },
    )
    .await?;
    for (what, o) in [("creates", &creates), ("reads", &reads)] {
        eprintln!(
            "bench: round {} {}: {what} {:.0}/s, p50 {:?}, p99 {:?}{}",
            round + 1,
            label,
            o.rate(),
            o.p50,
            o.p99,
            o.first_error
                .as_ref()
                .map(|e| format!(", first error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(Cell { creates, reads })
}

/// The creates-and-reads table of two setups, medians of their rounds,
/// with the second's ratio to the first on the last line.
pub(crate) fn print_pair(
    title: &str,
    what: &str,
    labels: [&str; 2],
    cells: &[Vec<Cell>],
    ratio: &str,
) -> Result<(), String> {
    let medians: Vec<(Outcome, Outcome)> = cells
        .iter()
        .map(|c| {
            let creates: Vec<Outcome> = c.iter().map(|c| c.creates.clone()).collect();
            let reads: Vec<Outcome> = c.iter().map(|c| c.reads.clone()).collect();
            median_by_rate(&creates).zip(median_by_rate(&reads))
        })
        .collect::<Option<_>>()
        .ok_or("no rounds measured")?;
    let [(ac, ar), (bc, br)] = medians.as_slice() else {
        return Err("two setups are compared".into());
    };
    println!("\n### {title}\n");
    println!("| {what} | creates/s | create p50 ms | create p99 ms | reads/s | read p50 ms | read p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, (c, r)) in labels.iter().zip(&medians) {
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} |",
            label,
            c.rate(),
            ms(c.p50),
            ms(c.p99),
            r.rate(),
            ms(r.p50),
            ms(r.p99)
        );
    }
    println!(
        "| {ratio} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
        bc.rate() / ac.rate().max(1e-9),
        bc.p50.as_secs_f64() / ac.p50.as_secs_f64().max(1e-9),
        bc.p99.as_secs_f64() / ac.p99.as_secs_f64().max(1e-9),
        br.rate() / ar.rate().max(1e-9),
        br.p50.as_secs_f64() / ar.p50.as_secs_f64().max(1e-9),
        br.p99.as_secs_f64() / ar.p99.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn median_by_rate(outcomes: &[Outcome]) -> Option<Outcome> {
    let mut sorted = outcomes.to_vec();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted.get(sorted.len() / 2).cloned()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// GetProject of `projects/{name}` with `key`, `n` in flight, for `time`.
async fn reads<T>(
    client: ProjectServiceClient<T>,
    key: &str,
    name: &str,
    n: usize,
    time: Duration,
) -> Result<Outcome, String>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Error: Into<tonic::codegen::StdError> + Send,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    T::Future: Send,
{
    let (key, name): (Arc<str>, Arc<str>) = (Arc::from(key), Arc::from(name));
    drive(n, usize::MAX, time, &Probe::default(), move |_| {
        let (mut client, key, name) = (client.clone(), key.clone(), name.clone());
        async move {
            client
                .get_project(bearer(
                    GetProjectRequest {
                        name: name.to_string(),
                    },
                    &key,
                )?)
                .await
                .map(|_| ())
                .map_err(|s| status_text(&s))
        }
    })
    .await
}

/// The mesh TLS of one side, from certificates of `ca`.
fn mesh(ca: &TestCa, name: &str) -> Result<(MeshTlsConfig, Vec<(String, String)>), String> {
    let (cert, key) = ca.issue(name);
    let config = MeshTlsConfig {
        ca_file: Some(ca.ca.clone()),
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        ..MeshTlsConfig::default()
    };
    let env = vec![
        (
            "NORDLYS_MESH_TLS__CA_FILE".to_string(),
            ca.ca.display().to_string(),
        ),
        (
            "NORDLYS_MESH_TLS__CERT_FILE".to_string(),
            cert.display().to_string(),
        ),
        (
            "NORDLYS_MESH_TLS__KEY_FILE".to_string(),
            key.display().to_string(),
        ),
    ];
    Ok((config, env))
}

/// What mutual TLS cost, floor and route.
struct TlsCost {
    /// Medians by calls/s: floor plaintext, floor TLS, route plaintext,
    /// route TLS.
    medians: [Outcome; 4],
    /// The median of each round's TLS / plaintext calls/s, floor and route:
    /// the two sides of a ratio measured next to each other.
    ratios: [f64; 2],
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Calls/s of plaintext and TLS, floor and route, over `plan.rounds`.
async fn tls_cost(plan: &Plan) -> Result<TlsCost, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let ca = TestCa::new(dir.path(), "bench-mesh");
    let (server, regiond_env) = mesh(&ca, "regiond")?;
    let (client, gateway_env) = mesh(&ca, "gateway")?;
    let tls_error = |e: nordlys_transport::tls::TlsError| e.to_string();
    let server = server.load().map_err(tls_error)?.ok_or("no mesh TLS")?;
    let client = client.load().map_err(tls_error)?.ok_or("no mesh TLS")?;

    // The floor: the gateway's direct client to a fixed answer.
    let mut servers = crate::floors::Servers::default();
    let plain_addr = servers.tonic_fixed().await?;
    let tls_addr = servers
        .tonic_fixed_tls(server.server_config().map_err(tls_error)?)
        .await?;
    let direct = |addr: std::net::SocketAddr, tls: Option<Arc<rustls::ClientConfig>>| {
        DirectChannel::lazy(
            &addr.to_string(),
            DirectOptions {
                tls,
                ..DirectOptions::default()
            },
        )
        .map(ProjectServiceClient::new)
        .map_err(|e| format!("direct channel: {e}"))
    };
    let floor_plain = direct(plain_addr, None)?;
    let floor_tls = direct(tls_addr, Some(client.client_config().map_err(tls_error)?))?;

    let time = Duration::from_secs_f64(plan.seconds);
    let n = plan.concurrency;
    let mut samples: [Vec<Outcome>; 4] = Default::default();
    for round in 0..plan.rounds {
        samples[0].push(reads(floor_plain.clone(), "k", "projects/bench", n, time).await?);
        samples[1].push(reads(floor_tls.clone(), "k", "projects/bench", n, time).await?);
        for (i, env) in [(2, None), (3, Some((&regiond_env, &gateway_env)))] {
            let stack = Stack::start_with(StackOpts {
                route: "grpc".to_string(),
                sto1_instances: 1,
                regiond_env: env.map(|(r, _)| r.clone()).unwrap_or_default(),
                gateway_env: env.map(|(_, g)| g.clone()).unwrap_or_default(),
                ..StackOpts::default()
            })
            .await;
            let tenant = stack.tenant(&format!("tls{round}")).await;
            stack
                .create_project(&tenant.key, "tls-read", &["sto1"])
                .await
                .map_err(|s| status_text(&s))?;
            let client = ProjectServiceClient::new(stack.channel().await);
            reads(
                client.clone(),
                &tenant.key,
                "projects/tls-read",
                n,
                time / 4,
            )
            .await?;
            samples[i].push(reads(client, &tenant.key, "projects/tls-read", n, time).await?);
        }
        eprintln!(
            "bench: round {} TLS: floor {:.0} -> {:.0}/s, route grpc {:.0} -> {:.0}/s",
            round + 1,
            samples[0][round].rate(),
            samples[1][round].rate(),
            samples[2][round].rate(),
            samples[3][round].rate()
        );
    }
    let ratio = |tls: usize, plain: usize| {
        median(
            samples[tls]
                .iter()
                .zip(&samples[plain])
                .map(|(t, p)| t.rate() / p.rate().max(1e-9))
                .collect(),
        )
    };
    let ratios = [ratio(1, 0), ratio(3, 2)];
    let medians: Vec<Outcome> = samples
        .iter()
        .map(|s| median_by_rate(s))
        .collect::<Option<_>>()
        .ok_or("no TLS rounds")?;
    Ok(TlsCost {
        medians: medians
            .try_into()
            .map_err(|_| "four medians expected".to_string())?,
        ratios,
    })
}

/// Runs the topology mode and prints its tables.
pub(crate) async fn run(bins: &Binaries, plan: Plan) -> Result<(), String> {
    if plan.rounds == 0 || plan.concurrency == 0 || plan.calls == 0 || plan.seconds <= 0.0 {
        return Err("--topology needs positive rounds, concurrency, calls and seconds".into());
    }
    // The harness starts the binaries from here (the bench's own build).
    std::env::set_var("NORDLYS_BIN_DIR", &bins.dir);
    let topologies = [Topology::Single, Topology::Cluster];
    let mut cells: Vec<Vec<Cell>> = vec![Vec::new(); topologies.len()];
    for round in 0..plan.rounds {
        for (t, &topology) in topologies.iter().enumerate() {
            cells[t].push(measure(topology, round, &plan).await?);
        }
    }
    let labels = [Topology::Single.label(), Topology::Cluster.label()];
    print_pair(
        &format!(
            "Topology: {} in flight, medians of {} rounds",
            plan.concurrency, plan.rounds
        ),
        "topology",
        labels,
        &cells,
        "cluster / single",
    )?;

    let TlsCost {
        medians: [floor_plain, floor_tls, route_plain, route_tls],
        ratios: [floor_ratio, route_ratio],
    } = tls_cost(&plan).await?;
    println!(
        "\n### Mutual TLS on the direct route: GetProject, {} in flight, medians of {} rounds\n",
        plan.concurrency, plan.rounds
    );
    println!(
        "| path | plaintext calls/s | mTLS calls/s | mTLS / plaintext, per round | p50 ms plaintext / mTLS |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (what, plain, tls, ratio) in [
        (
            "floor: direct client to a fixed tonic answer",
            &floor_plain,
            &floor_tls,
            floor_ratio,
        ),
        (
            "gateway route grpc to regiond",
            &route_plain,
            &route_tls,
            route_ratio,
        ),
    ] {
        println!(
            "| {what} | {:.0} | {:.0} | {ratio:.2}x | {} / {} |",
            plain.rate(),
            tls.rate(),
            ms(plain.p50),
            ms(tls.p50)
        );
    }
    Ok(())
}
