//! `--scale`: reads at scale. ListProjects (a first page and a middle page)
//! and GetProject through the gateway, with regiond on the kv backend
//! holding 1,000 and 100,000 projects across 1,000 organizations, side by
//! side, and the ratio of their costs.
//!
//! Each size gets a stack of its own (nats-server, quota, regiond with
//! `--backend kv`, a gateway), all started before measuring, so every round
//! measures both sizes back to back and a machine that speeds up or slows
//! down moves both. The buckets are filled before regiond starts, by writing
//! the records straight into JetStream KV, many at a time, with regiond's
//! own encoding ([`KvBackend::project_entry`]): 100,000 creates through the
//! API would take minutes and measure the writes, not the reads.

use std::time::{Duration, Instant};

use futures::StreamExt;
use nordlys_proto::pb::nordlys::v1::project_service_client::ProjectServiceClient;
use nordlys_proto::pb::nordlys::v1::{
    region_status, GetProjectRequest, ListProjectsRequest, Project, RegionStatus,
};
use nordlys_regiond::backend::KvBackend;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::load::{self, Caller, Cell, Timing};
use crate::procs;
use crate::stack::{bearer, Backends, Binaries, Gateway, REGION};

/// Projects per page.
const PAGE_SIZE: i32 = 50;

/// What the scale mode measures, and how.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) sizes: Vec<usize>,
    pub(crate) orgs: usize,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) rounds: usize,
    pub(crate) timing: Timing,
    pub(crate) operator_key: String,
}

/// One size's stack; dropping it stops its processes.
struct Stack {
    size: usize,
    gateway: Gateway,
    _backends: Backends,
    _nats: procs::NatsServer,
}

/// The project `i` of a filled bucket.
fn project_name(i: usize) -> String {
    format!("projects/p{i:06}")
}

/// Writes `size` projects into the region's bucket on `url`, as regiond's
/// creates would store them.
async fn fill(url: &str, size: usize, orgs: usize) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Opening creates the bucket as regiond defines it.
    drop(
        KvBackend::open(client.clone(), REGION)
            .await
            .map_err(|e| format!("open the bucket: {e}"))?,
    );
    let kv = async_nats::jetstream::new(client)
        .get_key_value(KvBackend::bucket(REGION))
        .await
        .map_err(|e| format!("the bucket: {e}"))?;
    let now = prost_types::Timestamp {
        seconds: 1_780_000_000,
        nanos: 0,
    };
    let results: Vec<Result<(), String>> = futures::stream::iter(0..size)
        .map(|i| {
            let kv = kv.clone();
            let project = Project {
                name: project_name(i),
                organization: format!("organizations/o{:04}", i % orgs),
                display_name: format!("Project {i}"),
                regions: vec![REGION.into()],
                region_status: vec![RegionStatus {
                    region: REGION.into(),
                    state: region_status::State::Ready as i32,
                    ..Default::default()
                }],
                create_time: Some(now),
                ..Default::default()
            };
            async move {
                let (key, value) = KvBackend::project_entry(&project);
                kv.put(key, value)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("put: {e}"))
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

impl Stack {
    async fn start(bins: &Binaries, plan: &Plan, size: usize) -> Result<Stack, String> {
        let nats = procs::NatsServer::start().await?;
        let started = Instant::now();
        fill(&nats.url(), size, plan.orgs).await?;
        eprintln!(
            "bench: {size} projects written into the kv bucket in {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let backends = Backends::start_with(bins, &nats.url(), "kv").await?;
        eprintln!(
            "bench: regiond (kv) ready over {size} projects in {:?}",
            started.elapsed()
        );
        let route = bins.gateway_route.then_some("nats");
        let gateway = Gateway::start(bins, &nats.url(), route, &plan.operator_key).await?;
        Ok(Stack {
            size,
            gateway,
            _backends: backends,
            _nats: nats,
        })
    }

    /// The calls measured on this stack, checked once.
    async fn targets(&self) -> Result<Vec<(&'static str, Call)>, String> {
        let middle = self.size / 2;
        let fingerprint = nordlys_api::page::fingerprint(&["ListProjects", "", "", ""]);
        let targets = vec![
            (
                "ListProjects, first page",
                Call::List(ListProjectsRequest {
                    page_size: PAGE_SIZE,
                    ..Default::default()
                }),
            ),
            (
                "ListProjects, middle page",
                Call::List(ListProjectsRequest {
                    page_size: PAGE_SIZE,
                    page_token: nordlys_api::page::encode(&project_name(middle), &fingerprint),
                    ..Default::default()
                }),
            ),
            (
                "GetProject",
                Call::Get(GetProjectRequest {
                    name: project_name(middle),
                }),
            ),
        ];
        let mut client = ProjectServiceClient::new(self.channel().await?);
        for (label, call) in &targets {
            let first = match call {
                Call::List(req) => {
                    let page = client
                        .list_projects(bearer(req.clone(), &self.gateway.operator_key)?)
                        .await
                        .map_err(|s| format!("{label}: {s:?}"))?
                        .into_inner();
                    if page.projects.len() != PAGE_SIZE as usize || page.next_page_token.is_empty()
                    {
                        return Err(format!(
                            "{label} at {}: {} projects, token {:?}",
                            self.size,
                            page.projects.len(),
                            page.next_page_token
                        ));
                    }
                    page.projects.first().map(|p| p.name.clone())
                }
                Call::Get(req) => Some(
                    client
                        .get_project(bearer(req.clone(), &self.gateway.operator_key)?)
                        .await
                        .map_err(|s| format!("{label}: {s:?}"))?
                        .into_inner()
                        .name,
                ),
            };
            eprintln!("bench: {label} at {}: starts at {first:?}", self.size);
        }
        Ok(targets)
    }

    async fn channel(&self) -> Result<Channel, String> {
        self.gateway.channel().await
    }
}

/// What a caller asks.
#[derive(Debug, Clone)]
enum Call {
    List(ListProjectsRequest),
    Get(GetProjectRequest),
}

struct ScaleCaller {
    client: ProjectServiceClient<Channel>,
    call: Call,
    authorization: AsciiMetadataValue,
}

impl Caller for ScaleCaller {
    async fn call(&mut self) -> Result<(), String> {
        let code = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        match &self.call {
            Call::List(req) => {
                let mut request = tonic::Request::new(req.clone());
                request
                    .metadata_mut()
                    .insert("authorization", self.authorization.clone());
                let page = self.client.list_projects(request).await.map_err(code)?;
                if page.get_ref().projects.len() != PAGE_SIZE as usize {
                    return Err(format!("a short page: {}", page.get_ref().projects.len()));
                }
            }
            Call::Get(req) => {
                let mut request = tonic::Request::new(req.clone());
                request
                    .metadata_mut()
                    .insert("authorization", self.authorization.clone());
                self.client.get_project(request).await.map_err(code)?;
            }
        }
        Ok(())
    }
}

/// Median of the values (upper median for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the scale mode and prints its tables.
pub(crate) async fn run(bins: &Binaries, plan: Plan) -> Result<(), String> {
    if plan.sizes.is_empty() || plan.sizes.iter().any(|&s| s < 2 * PAGE_SIZE as usize) {
        return Err(format!(
            "--scale-sizes needs sizes of at least {}",
            2 * PAGE_SIZE
        ));
    }
    let mut stacks = Vec::new();
    for &size in &plan.sizes {
        stacks.push(Stack::start(bins, &plan, size).await?);
    }
    // cells[target][size][concurrency] = one Cell per round
    let mut labels = Vec::new();
    let mut per_stack = Vec::new();
    for stack in &stacks {
        let targets = stack.targets().await?;
        labels = targets.iter().map(|(l, _)| *l).collect();
        per_stack.push((stack.channel().await?, targets));
    }
    let authorization = AsciiMetadataValue::try_from(format!("Bearer {}", plan.operator_key))
        .map_err(|e| format!("bad key: {e}"))?;
    let mut cells: Vec<Vec<Vec<Vec<Cell>>>> =
        vec![vec![vec![Vec::new(); plan.concurrency.len()]; stacks.len()]; labels.len()];
    for round in 0..plan.rounds {
        for (c, &n) in plan.concurrency.iter().enumerate() {
            for (t, label) in labels.iter().enumerate() {
                for (s, (channel, targets)) in per_stack.iter().enumerate() {
                    let call = targets[t].1.clone();
                    let make = || {
                        let caller = ScaleCaller {
                            client: ProjectServiceClient::new(channel.clone()),
                            call: call.clone(),
                            authorization: authorization.clone(),
                        };
                        async move { Ok::<_, String>(caller) }
                    };
                    let cell = load::run(make, n, plan.timing).await?;
                    eprintln!(
                        "bench: round {}/{} {label} at {} projects, {n} in flight: {cell}",
                        round + 1,
                        plan.rounds,
                        stacks[s].size,
                    );
                    cells[t][s][c].push(cell);
                }
            }
        }
    }
    drop(stacks);
    print_report(&plan, &labels, &cells);
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_report(plan: &Plan, labels: &[&str], cells: &[Vec<Vec<Vec<Cell>>>]) {
    println!("## Nordlys bench: reads at scale\n");
    println!("Machine: {}", crate::report::machine());
    println!(
        "Each cell: {:.1} s warm-up, {:.1} s measured, closed loop of N callers; the median \
         over {} round(s), each measuring every size back to back. Gateway (route nats) to \
         regiond with the kv backend; projects spread over {} organizations; pages of {PAGE_SIZE}; \
         an operator's key (all organizations). Errors: {}.\n",
        plan.timing.warmup.as_secs_f64(),
        plan.timing.duration.as_secs_f64(),
        plan.rounds,
        plan.orgs,
        cells
            .iter()
            .flatten()
            .flatten()
            .flatten()
            .map(|c| c.errors)
            .sum::<u64>()
    );
    let mut header = "| call | projects |".to_owned();
    let mut rule = "| --- | ---: |".to_owned();
    for n in &plan.concurrency {
        header.push_str(&format!(" calls/s @{n} | p50 @{n} | p99 @{n} |"));
        rule.push_str(" ---: | ---: | ---: |");
    }
    println!("{header}\n{rule}");
    for (t, label) in labels.iter().enumerate() {
        for (s, size) in plan.sizes.iter().enumerate() {
            let mut line = format!("| {label} | {size} |");
            for round in &cells[t][s] {
                let cps = median(round.iter().map(|x| x.calls_per_sec).collect());
                let p50 = median(round.iter().map(|x| micros(x.p50)).collect());
                let p99 = median(round.iter().map(|x| micros(x.p99)).collect());
                line.push_str(&format!(" {cps:.0} | {p50:.0} us | {p99:.0} us |"));
            }
            println!("{line}");
        }
    }
    if plan.sizes.len() >= 2 {
        let (small, large) = (0, plan.sizes.len() - 1);
        println!(
            "\nRatio {} / {} projects (median of the rounds' ratios): calls/s (1.00 = as fast, \
             below 1 slower) and p50 (1.00 = as fast, above 1 slower):\n",
            plan.sizes[large], plan.sizes[small]
        );
        let mut header = "| call |".to_owned();
        let mut rule = "| --- |".to_owned();
        for n in &plan.concurrency {
            header.push_str(&format!(" calls/s @{n} | p50 @{n} |"));
            rule.push_str(" ---: | ---: |");
        }
        println!("{header}\n{rule}");
        for (t, label) in labels.iter().enumerate() {
            let mut line = format!("| {label} |");
            for (at_small, at_large) in cells[t][small].iter().zip(&cells[t][large]) {
                let pairs = at_small.iter().zip(at_large);
                let cps = median(
                    pairs
                        .clone()
                        .map(|(a, b)| b.calls_per_sec / a.calls_per_sec)
                        .collect(),
                );
                let p50 = median(pairs.map(|(a, b)| micros(b.p50) / micros(a.p50)).collect());
                line.push_str(&format!(" {cps:.2} | {p50:.2} |"));
            }
            println!("{line}");
        }
    }
}
