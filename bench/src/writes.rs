//! `--writes`: the write path. CreateProject placed in two regions (sto1
//! and osl1) and DeleteProject through the gateway's gRPC, with quota and
//! two regiond processes on the kv backend, all release processes on one
//! nats-server, at each concurrency: (a) every create in ONE organization,
//! so every reservation contends for the same two quota documents, and
//! (b) spread over many organizations. Beside each create cell, in the same
//! run, a floor: groups of four JetStream KV compare-and-set writes (what
//! quota's Reserve and Commit write for a two-region create) against one
//! key and against 100 keys. Then a short run against a limit (exactly the
//! limit must exist afterwards), and a check that quota usage equals what
//! the regions hold for every organization used.
//!
//! Creates cannot be repeated like reads, so a cell is bounded by a number
//! of calls or a time, whichever ends first, and its rate is what succeeded
//! over the wall time; the delete cell then deletes exactly what its create
//! cell made, at the same concurrency.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use nordlys_proto::pb::nordlys::v1::{
    self as pb, organization_service_client::OrganizationServiceClient,
    project_service_client::ProjectServiceClient, quota_service_client::QuotaServiceClient,
    CreateOrganizationRequest, CreateProjectRequest, DeleteProjectRequest, GetQuotaRequest,
    ListProjectsRequest, Organization, Project, ResourceCounts, UpdateQuotaRequest,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::cpu::{PerCall, Probe};
use crate::procs::{NatsServer, Proc};
use crate::stack::{bearer, start_quota, start_regiond, Binaries, Gateway};

/// The placement of every create.
const REGIONS: [&str; 2] = ["sto1", "osl1"];
/// Per-region project limit of the organizations that must not be refused.
const HIGH_LIMIT: i64 = 10_000_000;
/// Compare-and-set writes of one floor group: quota's Reserve writes each
/// region's document once and its Commit each once again.
const CAS_PER_CREATE: usize = 4;
/// Keys of the spread floor.
const FLOOR_KEYS: usize = 100;
/// A quota document is about 1.5 KB at most (README, "Quota state").
const FLOOR_VALUE_BYTES: usize = 1024;
const FLOOR_BUCKET: &str = "bench-floor-cas";

/// What the writes mode measures, and how.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) concurrency: Vec<usize>,
    pub(crate) rounds: usize,
    /// At most this many calls per cell...
    pub(crate) calls: usize,
    /// ...and at most this long.
    pub(crate) seconds: f64,
    /// Organizations of the spread cells.
    pub(crate) spread_orgs: usize,
    /// The project limit of the over-allocation run...
    pub(crate) limit: i64,
    /// ...and the creates it attempts at the highest concurrency.
    pub(crate) limit_attempts: usize,
    pub(crate) operator_key: String,
}

/// The processes; dropped gateway first, nats-server last (field order).
struct Stack {
    gateway: Gateway,
    regiond: Vec<Proc>,
    quota: Proc,
    nats: NatsServer,
}

impl Stack {
    async fn start(bins: &Binaries, plan: &Plan) -> Result<Stack, String> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let quota = start_quota(bins, &url).await?;
        let mut regiond = Vec::new();
        for region in REGIONS {
            regiond.push(start_regiond(bins, &url, region, "kv").await?);
        }
        // The gateway's default route (auto: direct gRPC, NATS fallback).
        let gateway = Gateway::start_in(bins, &url, None, &plan.operator_key, &REGIONS).await?;
        Ok(Stack {
            gateway,
            regiond,
            quota,
            nats,
        })
    }

    fn probe(&self) -> Probe {
        let mut probe = Probe::default()
            .with("bench", Some(std::process::id()))
            .with("gateway", self.gateway.pid());
        for (region, proc) in REGIONS.iter().zip(&self.regiond) {
            probe = probe.with(regiond_label(region), proc.pid());
        }
        probe
            .with("quota", self.quota.pid())
            .with("nats-server", self.nats.pid())
    }
}

fn regiond_label(region: &str) -> &'static str {
    match region {
        "sto1" => "regiond sto1",
        "osl1" => "regiond osl1",
        _ => "regiond",
    }
}

/// The processes of the CPU tables, in column order.
const PROCS: [&str; 6] = [
    "bench",
    "gateway",
    "regiond sto1",
    "regiond osl1",
    "quota",
    "nats-server",
];

/// The organizations a run uses.
#[derive(Debug, Clone)]
struct Orgs {
    hot: String,
    spread: Vec<String>,
    limited: String,
    warm: String,
}

impl Orgs {
    fn new(spread: usize) -> Orgs {
        Orgs {
            hot: "wr-hot".into(),
            spread: (0..spread).map(|i| format!("wr-s{i:04}")).collect(),
            limited: "wr-limit".into(),
            warm: "wr-warm".into(),
        }
    }

    fn all(&self) -> Vec<String> {
        let mut all = vec![self.hot.clone(), self.limited.clone(), self.warm.clone()];
        all.extend(self.spread.iter().cloned());
        all
    }
}

/// Makes the organizations with their limits in both regions (operator key).
async fn setup(channel: &Channel, key: &str, orgs: &Orgs, limit: i64) -> Result<(), String> {
    let work: Vec<(String, i64)> = orgs
        .all()
        .into_iter()
        .map(|o| {
            let l = if o == orgs.limited { limit } else { HIGH_LIMIT };
            (o, l)
        })
        .collect();
    let results: Vec<Result<(), String>> = futures::stream::iter(work)
        .map(|(org, projects)| {
            let channel = channel.clone();
            async move {
                let mut orgs = OrganizationServiceClient::new(channel.clone());
                orgs.create_organization(bearer(
                    CreateOrganizationRequest {
                        organization: Some(Organization {
                            display_name: format!("Bench {org}"),
                            ..Default::default()
                        }),
                        organization_id: org.clone(),
                    },
                    key,
                )?)
                .await
                .map_err(|s| format!("CreateOrganization {org}: {s:?}"))?;
                let mut quotas = QuotaServiceClient::new(channel);
                for region in REGIONS {
                    quotas
                        .update_quota(bearer(
                            UpdateQuotaRequest {
                                quota: Some(pb::Quota {
                                    name: format!("organizations/{org}/quotas/{region}"),
                                    limits: Some(ResourceCounts {
                                        projects,
                                        users: 10,
                                        networks: 10,
                                        access_rules: 10,
                                    }),
                                    ..Default::default()
                                }),
                                update_mask: None,
                            },
                            key,
                        )?)
                        .await
                        .map_err(|s| format!("UpdateQuota {org} {region}: {s:?}"))?;
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// What one bounded cell measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) ok: u64,
    errors: BTreeMap<String, u64>,
    pub(crate) first_error: Option<String>,
    all_calls: u64,
    elapsed: Duration,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    cpu: PerCall,
}

impl Outcome {
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latencies in microseconds, 1 us to 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    // Constant bounds that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Runs `call(0..)` with `n` in flight (a closed loop of `n` workers taking
/// the next index) until `max_calls` were started or `max_time` passed;
/// every call is measured (no warm-up: a write is not repeatable).
pub(crate) async fn drive<F, Fut>(
    n: usize,
    max_calls: usize,
    max_time: Duration,
    probe: &Probe,
    call: F,
) -> Result<Outcome, String>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let before = probe.snapshot();
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut first_error = None;
                let mut all = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max_calls || start.elapsed() >= max_time {
                        break;
                    }
                    let t0 = Instant::now();
                    let outcome = call(i).await;
                    all += 1;
                    match outcome {
                        Ok(()) => {
                            hist.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                        }
                        Err(e) => {
                            // "Code: message": counted by code.
                            let code = e.split(':').next().unwrap_or_default().to_owned();
                            *errors.entry(code).or_default() += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (hist, errors, first_error, all)
            })
        })
        .collect();
    let mut hist = histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error = None;
    let mut all_calls = 0;
    for task in tasks {
        let (h, e, f, a) = task.await.map_err(|e| format!("a caller task died: {e}"))?;
        hist.add(&h)
            .map_err(|e| format!("cannot merge histograms: {e}"))?;
        for (code, count) in e {
            *errors.entry(code).or_default() += count;
        }
        all_calls += a;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    let cpu = probe.per_call(&before, &probe.snapshot(), all_calls);
    Ok(Outcome {
        ok: hist.len(),
        errors,
        first_error,
        all_calls,
        elapsed,
        p50: Duration::from_micros(hist.value_at_quantile(0.5)),
        p99: Duration::from_micros(hist.value_at_quantile(0.99)),
        cpu,
    })
}

pub(crate) fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The gateway's project API with the operator key on every call.
#[derive(Clone)]
struct Api {
    client: ProjectServiceClient<Channel>,
    authorization: AsciiMetadataValue,
}

impl Api {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Creates `projects/{id}` in `org`, placed in both regions, with a
    /// request id of its own.
    async fn create(&self, org: &str, id: &str) -> Result<(), String> {
        let req = CreateProjectRequest {
            project: Some(Project {
                organization: format!("organizations/{org}"),
                display_name: format!("Bench {id}"),
                regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
                ..Default::default()
            }),
            project_id: id.to_owned(),
            request_id: format!("req-{id}"),
        };
        let project = self
            .client
            .clone()
            .create_project(self.request(req))
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        // A create that reached only one region answers OK with the other
        // marked: that is not a two-region create.
        let ready = project
            .region_status
            .iter()
            .filter(|s| s.state == pb::region_status::State::Ready as i32)
            .count();
        if ready != REGIONS.len() {
            return Err(format!(
                "Partial: ready in {ready} of {} regions: {:?}",
                REGIONS.len(),
                project.region_status
            ));
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), String> {
        self.client
            .clone()
            .delete_project(self.request(DeleteProjectRequest {
                name: name.into(),
                ..Default::default()
            }))
            .await
            .map(drop)
            .map_err(|s| status_text(&s))
    }

    /// How many projects `org` has in `region`, by paging ListProjects.
    async fn count(&self, org: &str, region: &str) -> Result<i64, String> {
        let mut count = 0i64;
        let mut token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_projects(self.request(ListProjectsRequest {
                    page_size: 1000,
                    page_token: token,
                    organization: format!("organizations/{org}"),
                    region: region.into(),
                }))
                .await
                .map_err(|s| format!("ListProjects {org} {region}: {}", status_text(&s)))?
                .into_inner();
            if !page.unreachable.is_empty() {
                return Err(format!(
                    "ListProjects {org} {region}: unreachable {:?}",
                    page.unreachable
                ));
            }
            count += page.projects.len() as i64;
            if page.next_page_token.is_empty() {
                return Ok(count);
            }
            token = page.next_page_token;
        }
    }
}

/// One organization's quota in one region against what exists there.
#[derive(Debug, Clone)]
struct Check {
    org: String,
    region: &'static str,
    usage: i64,
    reserved: i64,
    exists: i64,
}

impl Check {
    fn holds(&self) -> bool {
        self.usage == self.exists && self.reserved == 0
    }
}

/// Quota usage and reservations against ListProjects, per organization and
/// region.
async fn verify(api: &Api, channel: &Channel, key: &str, orgs: &[String]) -> Vec<Check> {
    let work: Vec<(String, &'static str)> = orgs
        .iter()
        .flat_map(|o| REGIONS.iter().map(move |r| (o.clone(), *r)))
        .collect();
    futures::stream::iter(work)
        .map(|(org, region)| {
            let mut quotas = QuotaServiceClient::new(channel.clone());
            async move {
                let quota = match bearer(
                    GetQuotaRequest {
                        name: format!("organizations/{org}/quotas/{region}"),
                    },
                    key,
                ) {
                    Ok(req) => quotas.get_quota(req).await.ok().map(|r| r.into_inner()),
                    Err(_) => None,
                };
                let (usage, reserved) = match &quota {
                    Some(q) => (
                        q.usage.as_ref().map_or(0, |u| u.projects),
                        q.reserved.as_ref().map_or(0, |u| u.projects),
                    ),
                    // Unreadable: shown as a mismatch.
                    None => (-1, -1),
                };
                let exists = api.count(&org, region).await.unwrap_or(-1);
                Check {
                    org,
                    region,
                    usage,
                    reserved,
                    exists,
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Prints what a verification found; returns whether it held.
fn report_checks(when: &str, checks: &[Check]) -> bool {
    let bad: Vec<&Check> = checks.iter().filter(|c| !c.holds()).collect();
    let usage: i64 = checks.iter().map(|c| c.usage.max(0)).sum();
    let exists: i64 = checks.iter().map(|c| c.exists.max(0)).sum();
    eprintln!(
        "bench: check {when}: {} quota documents, usage {usage}, existing {exists}, {} mismatch(es)",
        checks.len(),
        bad.len()
    );
    for c in bad.iter().take(10) {
        eprintln!("bench:   MISMATCH {c:?}");
    }
    bad.is_empty()
}

/// The floor: groups of [`CAS_PER_CREATE`] compare-and-set writes, as quota
/// writes a document: under a per-key lock in this process (quota's lock
/// stripes: one writer per key per instance, so no lost races within it),
/// read the entry's revision, `update` with it, and on a lost race read
/// again and retry.
#[derive(Clone)]
struct Floor {
    kv: kv::Store,
    locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    value: Bytes,
}

impl Floor {
    async fn open(url: &str) -> Result<Floor, String> {
        let client = crate::floors::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        // As quota opens its bucket: async-nats' create_key_value cannot
        // read nats-server 2.9's account info, so the stream is made as a
        // KV bucket is defined.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{FLOOR_BUCKET}"),
            subjects: vec![format!("$KV.{FLOOR_BUCKET}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("floor bucket: {e}"))?;
        let kv = js
            .get_key_value(FLOOR_BUCKET)
            .await
            .map_err(|e| format!("floor bucket: {e}"))?;
        let value = Bytes::from(vec![b'x'; FLOOR_VALUE_BYTES]);
        for k in 0..FLOOR_KEYS {
            kv.put(floor_key(k), value.clone())
                .await
                .map_err(|e| format!("floor put: {e}"))?;
        }
        Ok(Floor {
            kv,
            locks: Arc::new((0..FLOOR_KEYS).map(|_| Default::default()).collect()),
            value,
        })
    }

    async fn cas(&self, k: usize) -> Result<(), String> {
        let key = floor_key(k);
        let _lock = self.locks[k % FLOOR_KEYS].lock().await;
        for attempt in 0..32u64 {
            let revision = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| format!("Unavailable: {e}"))?
                .map_or(0, |e| e.revision);
            match self.kv.update(&key, self.value.clone(), revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tokio::time::sleep(Duration::from_millis(attempt.min(6))).await;
                }
                Err(e) => return Err(format!("Unavailable: {e}")),
            }
        }
        Err("Aborted: too many lost races".into())
    }

    /// One create's worth of writes on key `k`.
    async fn group(&self, k: usize) -> Result<(), String> {
        for _ in 0..CAS_PER_CREATE {
            self.cas(k).await?;
        }
        Ok(())
    }
}

fn floor_key(k: usize) -> String {
    format!("k{k:03}")
}

/// Which organizations a cell's calls go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    Hot,
    Spread,
}

impl Spread {
    fn label(self, orgs: usize) -> String {
        match self {
            Spread::Hot => "1 (hot)".into(),
            Spread::Spread => format!("{orgs}"),
        }
    }
}

/// The cells of one (spread, concurrency), one per round.
#[derive(Debug, Default)]
struct Cells {
    floor: Vec<Outcome>,
    create: Vec<Outcome>,
    delete: Vec<Outcome>,
}

/// A run over the stack: its API, a counter for fresh project ids.
struct Run {
    api: Api,
    probe: Probe,
    seq: Arc<AtomicUsize>,
}

impl Run {
    /// Creates in `orgs` (round-robin) with `n` in flight, bounded; returns
    /// what it measured and the names it made.
    async fn creates(
        &self,
        orgs: &[String],
        n: usize,
        max_calls: usize,
        max_time: Duration,
    ) -> Result<(Outcome, Vec<String>), String> {
        let made = Arc::new(Mutex::new(Vec::new()));
        let base = self.seq.fetch_add(max_calls, Ordering::Relaxed);
        let (api, orgs, made2) = (self.api.clone(), Arc::new(orgs.to_vec()), made.clone());
        let outcome = drive(n, max_calls, max_time, &self.probe, move |i| {
            let (api, orgs, made) = (api.clone(), orgs.clone(), made2.clone());
            async move {
                let id = format!("w{:08}", base + i);
                let org = &orgs[i % orgs.len()];
                api.create(org, &id).await?;
                if let Ok(mut made) = made.lock() {
                    made.push(format!("projects/{id}"));
                }
                Ok(())
            }
        })
        .await?;
        let names = made.lock().map(|m| m.clone()).unwrap_or_default();
        Ok((outcome, names))
    }

    async fn deletes(&self, names: Vec<String>, n: usize) -> Result<Outcome, String> {
        let count = names.len();
        let (api, names) = (self.api.clone(), Arc::new(names));
        drive(n, count, Duration::from_secs(3600), &self.probe, move |i| {
            let (api, names) = (api.clone(), names.clone());
            async move { api.delete(&names[i]).await }
        })
        .await
    }
}

/// Runs the writes mode and prints its tables.
pub(crate) async fn run(bins: &Binaries, plan: Plan) -> Result<(), String> {
    if plan.spread_orgs == 0 || plan.calls == 0 || !plan.seconds.is_finite() || plan.seconds <= 0.0
    {
        return Err("--writes-orgs, --writes-calls and --writes-seconds must be positive".into());
    }
    let orgs = Orgs::new(plan.spread_orgs);
    let stack = Stack::start(bins, &plan).await?;
    let channel = stack.gateway.channel().await?;
    let key = plan.operator_key.clone();
    setup(&channel, &key, &orgs, plan.limit).await?;
    let floor = Floor::open(&stack.nats.url()).await?;
    let run = Run {
        api: Api {
            client: ProjectServiceClient::new(channel.clone()),
            authorization: AsciiMetadataValue::try_from(format!("Bearer {key}"))
                .map_err(|e| format!("bad key: {e}"))?,
        },
        probe: stack.probe(),
        seq: Arc::new(AtomicUsize::new(0)),
    };
    let max_time = Duration::from_secs_f64(plan.seconds);

    // Warm-up, not reported: connections, caches, the buckets' first pages.
    let (warm, names) = run
        .creates(std::slice::from_ref(&orgs.warm), 16, 300, max_time)
        .await?;
    let warm_delete = run.deletes(names, 16).await?;
    eprintln!(
        "bench: warm-up: {:.0} creates/s, {:.0} deletes/s, errors {:?} {:?}",
        warm.rate(),
        warm_delete.rate(),
        warm.first_error,
        warm_delete.first_error
    );

    let spreads = [Spread::Hot, Spread::Spread];
    let mut cells: BTreeMap<(usize, usize), Cells> = BTreeMap::new();
    let mut checks_ok = true;
    for round in 0..plan.rounds {
        let last = round + 1 == plan.rounds;
        for (c, &n) in plan.concurrency.iter().enumerate() {
            for (s, &spread) in spreads.iter().enumerate() {
                let which = spread.label(plan.spread_orgs);
                // The floor right before its create cell, so a machine that
                // speeds up or slows down moves both.
                let f = floor.clone();
                let floor_cell = drive(n, plan.calls, max_time, &run.probe, move |i| {
                    let f = f.clone();
                    async move {
                        let k = match spread {
                            Spread::Hot => 0,
                            Spread::Spread => i % FLOOR_KEYS,
                        };
                        f.group(k).await
                    }
                })
                .await?;
                let cell_orgs: Vec<String> = match spread {
                    Spread::Hot => vec![orgs.hot.clone()],
                    Spread::Spread => orgs.spread.clone(),
                };
                let (create, names) = run.creates(&cell_orgs, n, plan.calls, max_time).await?;
                if last {
                    let checks = verify(&run.api, &channel, &key, &cell_orgs).await;
                    checks_ok &= report_checks(
                        &format!("after the creates, {which} organization(s), {n} in flight"),
                        &checks,
                    );
                }
                let delete = run.deletes(names, n).await?;
                for (what, o) in [
                    ("floor", &floor_cell),
                    ("create", &create),
                    ("delete", &delete),
                ] {
                    eprintln!(
                        "bench: round {}/{} {what} {which} org(s) at {n} in flight: {} ok in {:.2} s = {:.0}/s, p50 {:?}, p99 {:?}{}",
                        round + 1,
                        plan.rounds,
                        o.ok,
                        o.elapsed.as_secs_f64(),
                        o.rate(),
                        o.p50,
                        o.p99,
                        match &o.first_error {
                            Some(e) => format!(", errors {:?}, first: {e}", o.errors),
                            None => String::new(),
                        }
                    );
                }
                let entry = cells.entry((c, s)).or_default();
                entry.floor.push(floor_cell);
                entry.create.push(create);
                entry.delete.push(delete);
            }
        }
    }

    // Over-allocation: more creates than the limit, at the highest
    // concurrency, in one organization; exactly the limit may exist.
    let n = plan.concurrency.iter().copied().max().unwrap_or(64);
    let (limited, _) = run
        .creates(
            std::slice::from_ref(&orgs.limited),
            n,
            plan.limit_attempts,
            Duration::from_secs(600),
        )
        .await?;
    let limit_checks = verify(
        &run.api,
        &channel,
        &key,
        std::slice::from_ref(&orgs.limited),
    )
    .await;
    let limit_ok = limited.ok == plan.limit as u64
        && limit_checks
            .iter()
            .all(|c| c.holds() && c.exists == plan.limit);
    report_checks("after the limit run", &limit_checks);

    let final_checks = verify(&run.api, &channel, &key, &orgs.all()).await;
    checks_ok &= report_checks("at the end, every organization", &final_checks);
    drop(stack);

    print_report(
        &plan,
        &cells,
        &spreads,
        &Limited {
            outcome: limited,
            checks: limit_checks,
            ok: limit_ok,
            n,
        },
        (checks_ok, &final_checks),
    );
    Ok(())
}

struct Limited {
    outcome: Outcome,
    checks: Vec<Check>,
    ok: bool,
    n: usize,
}

/// The round whose rate is the median; its p99 and CPU stand for the cell,
/// with p50 the median of the rounds'.
fn median(outcomes: &[Outcome]) -> Option<Outcome> {
    let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
    if sorted.is_empty() {
        return None;
    }
    let mut p50s: Vec<Duration> = sorted.iter().map(|o| o.p50).collect();
    p50s.sort();
    sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut cell = sorted[sorted.len() / 2].clone();
    cell.p50 = p50s[p50s.len() / 2];
    Some(cell)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn print_report(
    plan: &Plan,
    cells: &BTreeMap<(usize, usize), Cells>,
    spreads: &[Spread],
    limited: &Limited,
    (checks_ok, final_checks): (bool, &[Check]),
) {
    println!("## Nordlys bench: writes\n");
    println!("Machine: {}", crate::report::machine());
    println!(
        "Gateway (default route: direct gRPC) with quota and regiond sto1 and osl1 on the kv \
         backend, release processes on one nats-server; an operator's key naming the \
         organization. CreateProject placed in sto1 and osl1, each with its own project id and \
         request id; each cell at most {} calls or {:.1} s, whichever ends first, rate = calls \
         that succeeded / wall time; the delete cell deletes what its create cell made, at the \
         same concurrency. Floor: groups of {CAS_PER_CREATE} JetStream KV compare-and-set writes \
         ({} B values; per-key lock in the bench process as in quota, read the revision, \
         update with it, retried on a lost race) against 1 key (hot) or {FLOOR_KEYS} keys \
         (spread), measured right before each create cell. Median over {} round(s).\n",
        plan.calls, plan.seconds, FLOOR_VALUE_BYTES, plan.rounds
    );
    println!(
        "| call | organizations | in flight | calls/s | p50 | p99 | errors | floor groups/s | floor p50 | creates/s / floor groups/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut cpu_rows: Vec<(String, Outcome)> = Vec::new();
    for (what, pick) in [
        ("CreateProject", 0usize),
        ("DeleteProject", 1),
        ("floor: 4 KV CAS", 2),
    ] {
        for (c, &n) in plan.concurrency.iter().enumerate() {
            for (s, spread) in spreads.iter().enumerate() {
                let Some(cell) = cells.get(&(c, s)) else {
                    continue;
                };
                let which = spread.label(plan.spread_orgs);
                let outcomes = match pick {
                    0 => &cell.create,
                    1 => &cell.delete,
                    _ => &cell.floor,
                };
                let Some(m) = median(outcomes) else { continue };
                let errors: u64 = outcomes.iter().map(Outcome::error_count).sum();
                cpu_rows.push((format!("{what} | {which} | {n}"), m.clone()));
                if pick == 2 {
                    continue;
                }
                let (floor_rate, floor_p50, ratio) = match (pick, median(&cell.floor)) {
                    (0, Some(f)) => {
                        // The ratio within each round, then the median.
                        let mut ratios: Vec<f64> = cell
                            .create
                            .iter()
                            .zip(&cell.floor)
                            .map(|(c, f)| c.rate() / f.rate().max(1e-9))
                            .collect();
                        ratios.sort_by(f64::total_cmp);
                        let r = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
                        (format!("{:.0}", f.rate()), ms(f.p50), format!("{r:.2}"))
                    }
                    _ => (String::new(), String::new(), String::new()),
                };
                println!(
                    "| {what} | {which} | {n} | {:.0} | {} | {} | {errors} | {floor_rate} | {floor_p50} | {ratio} |",
                    m.rate(),
                    ms(m.p50),
                    ms(m.p99),
                );
            }
        }
    }
    let notes: Vec<String> = cells
        .values()
        .flat_map(|c| c.create.iter().chain(&c.delete).chain(&c.floor))
        .filter_map(|o| o.first_error.clone())
        .collect();
    if let Some(first) = notes.first() {
        println!("\nFailed calls: {}; first: {first}", notes.len());
    }

    println!(
        "\nCPU per call by process, in microseconds (user + system from /proc, the median \
         round), and in parentheses the cores that process used over the cell (CPU seconds / \
         wall seconds; 2 = both cores):\n"
    );
    println!(
        "| call | organizations | in flight | {} | total |",
        PROCS.join(" | ")
    );
    println!("|---|---|---:|{}---:|", "---:|".repeat(PROCS.len()));
    for (label, o) in &cpu_rows {
        let mut line = format!("| {label} |");
        let wall = o.elapsed.as_secs_f64().max(1e-9);
        for name in PROCS {
            match o.cpu.cpu_us.iter().find(|(p, _)| *p == name) {
                Some((_, us)) => {
                    let cores = us * o.all_calls as f64 / 1e6 / wall;
                    line.push_str(&format!(" {us:.0} ({cores:.2}) |"));
                }
                None => line.push_str(" |"),
            }
        }
        let total: f64 = o.cpu.cpu_us.iter().map(|(_, v)| v).sum();
        let cores = total * o.all_calls as f64 / 1e6 / wall;
        println!("{line} {total:.0} ({cores:.2}) |");
    }

    let l = &limited.outcome;
    println!(
        "\nOver-allocation: organization limit {} projects per region, {} creates attempted \
         at {} in flight: {} succeeded, refused {:?}, in {:.2} s. {}",
        plan.limit,
        plan.limit_attempts,
        limited.n,
        l.ok,
        l.errors,
        l.elapsed.as_secs_f64(),
        if limited.ok {
            "Exactly the limit exists and usage says so: no over-allocation."
        } else {
            "NOT as expected (see the check below)."
        }
    );
    for c in &limited.checks {
        println!(
            "- {} in {}: usage {}, reserved {}, existing (ListProjects) {}",
            c.org, c.region, c.usage, c.reserved, c.exists
        );
    }
    let usage: i64 = final_checks.iter().map(|c| c.usage).sum();
    let exists: i64 = final_checks.iter().map(|c| c.exists).sum();
    println!(
        "\nUsage against what exists, after the last round's creates and at the end, for every \
         organization used ({} quota documents at the end: usage {usage}, existing {exists}): {}",
        final_checks.len(),
        if checks_ok {
            "equal everywhere, nothing reserved: nothing lost or double-counted."
        } else {
            "MISMATCHES (listed on stderr)."
        }
    );
}
