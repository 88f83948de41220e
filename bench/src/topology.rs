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

use std::sync::Arc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, GetProjectRequest, Project,
    ResourceCounts,
};
use nordlys_tests::cluster::ClusterStack;
use nordlys_tests::{Gateway, Stack, StackOpts};

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

/// Creates (one organization, both regions) then reads of what was
/// created, in one topology.
#[derive(Debug, Clone)]
struct Cell {
    creates: Outcome,
    reads: Outcome,
}

async fn measure(topology: Topology, round: usize, plan: &Plan) -> Result<Cell, String> {
    let running = Running::start(topology).await;
    let gateway = running.gateway();
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
            topology.label(),
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

fn median_by_rate(outcomes: &[Outcome]) -> Option<Outcome> {
    let mut sorted = outcomes.to_vec();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    sorted.get(sorted.len() / 2).cloned()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs the topology mode and prints its table.
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
    let medians: Vec<(Outcome, Outcome)> = cells
        .iter()
        .map(|c| {
            let creates: Vec<Outcome> = c.iter().map(|c| c.creates.clone()).collect();
            let reads: Vec<Outcome> = c.iter().map(|c| c.reads.clone()).collect();
            median_by_rate(&creates).zip(median_by_rate(&reads))
        })
        .collect::<Option<_>>()
        .ok_or("no rounds measured")?;
    println!(
        "\n### Topology: {} in flight, medians of {} rounds\n",
        plan.concurrency, plan.rounds
    );
    println!("| topology | creates/s | create p50 ms | create p99 ms | reads/s | read p50 ms | read p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (topology, (c, r)) in topologies.iter().zip(&medians) {
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} |",
            topology.label(),
            c.rate(),
            ms(c.p50),
            ms(c.p99),
            r.rate(),
            ms(r.p50),
            ms(r.p99)
        );
    }
    let ((sc, sr), (cc, cr)) = (&medians[0], &medians[1]);
    println!(
        "| cluster / single | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
        cc.rate() / sc.rate().max(1e-9),
        cc.p50.as_secs_f64() / sc.p50.as_secs_f64().max(1e-9),
        cc.p99.as_secs_f64() / sc.p99.as_secs_f64().max(1e-9),
        cr.rate() / sr.rate().max(1e-9),
        cr.p50.as_secs_f64() / sr.p50.as_secs_f64().max(1e-9),
        cr.p99.as_secs_f64() / sr.p99.as_secs_f64().max(1e-9),
    );
    Ok(())
}
