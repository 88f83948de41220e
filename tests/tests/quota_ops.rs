//! The quota service's applied-operations record and reconciler, against a
//! real nats-server and the real `quota` binary: documents stay small and
//! operations cost the same however many were made, give-backs and commits
//! count once, a commit of a forgotten reservation counts what it created,
//! and ReconcileQuotas repairs only confirmed drift (a fake region answers
//! CountResources on real NATS).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use nordlys_proto::pb::nordlys::quota::v1::{
    CommitRequest, CommitResponse, FreeRequest, FreeResponse, RegionCounts, ReserveRequest,
    ReserveResponse, UsageChange,
};
use nordlys_proto::pb::nordlys::regiond::v1::{
    CountResourcesRequest, CountResourcesResponse, PendingChange,
};
use nordlys_proto::pb::nordlys::v1::{
    CreateOrganizationRequest, GetQuotaRequest, Organization, Quota, ReconcileQuotasRequest,
    ReconcileQuotasResponse, ResourceCounts, UpdateQuotaRequest,
};
use nordlys_tests::{NatsServer, Process, Spec};
use nordlys_transport::{Identity, NatsChannel, Role};
use prost::Message;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const PREFIX: &str = "nordlys.quota.v1.QuotaController";
/// The confirm delay the tests give the reconciler.
const CONFIRM_MS: u64 = 200;

/// The quota binary with periodic reconciliation off (the tests call it) and
/// a short confirm delay.
fn start_quota(nats: &NatsServer) -> Process {
    Process::start(
        Spec::new("quota", "nordlys-quota ready")
            .args([
                "--nats-url",
                &nats.url(),
                "--reconcile-interval-secs",
                "0",
                "--insecure-dev",
            ])
            .env("NORDLYS_RECONCILE_CONFIRM_MS", &CONFIRM_MS.to_string())
            .env("NORDLYS_RECONCILE_TIMEOUT_MS", "2000"),
    )
}

#[derive(Clone)]
struct Client {
    channel: NatsChannel,
}

fn projects(n: i64) -> ResourceCounts {
    ResourceCounts {
        projects: n,
        ..Default::default()
    }
}

fn member_of(org: &str) -> Identity {
    Identity {
        organization: format!("organizations/{org}"),
        member: format!("organizations/{org}/members/someone@{org}.example"),
        role: Role::Member,
    }
}

impl Client {
    async fn connect(nats: &NatsServer) -> Client {
        let client = async_nats::connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", nats.url()));
        Client {
            channel: NatsChannel::new(client, Duration::from_secs(30)),
        }
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        caller: &Identity,
        message: Req,
    ) -> Result<Resp, Status> {
        let mut request = tonic::Request::new(message);
        caller.write(request.metadata_mut())?;
        self.channel
            .unary(format!("{PREFIX}.{method}"), request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn create_org(&self, id: &str) {
        let _: Organization = self
            .call(
                "CreateOrganization",
                &Identity::operator(),
                CreateOrganizationRequest {
                    organization: Some(Organization {
                        display_name: id.to_owned(),
                        ..Default::default()
                    }),
                    organization_id: id.to_owned(),
                },
            )
            .await
            .unwrap_or_else(|s| panic!("CreateOrganization {id}: {s:?}"));
    }

    async fn set_limit(&self, org: &str, region: &str, n: i64) {
        let _: Quota = self
            .call(
                "UpdateQuota",
                &Identity::operator(),
                UpdateQuotaRequest {
                    quota: Some(Quota {
                        name: format!("organizations/{org}/quotas/{region}"),
                        limits: Some(projects(n)),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["limits.projects".to_owned()],
                    }),
                },
            )
            .await
            .unwrap_or_else(|s| panic!("UpdateQuota {org}/{region}: {s:?}"));
    }

    async fn quota(&self, org: &str, region: &str) -> Quota {
        self.call(
            "GetQuota",
            &Identity::operator(),
            GetQuotaRequest {
                name: format!("organizations/{org}/quotas/{region}"),
            },
        )
        .await
        .unwrap_or_else(|s| panic!("GetQuota {org}/{region}: {s:?}"))
    }

    async fn usage(&self, org: &str, region: &str) -> i64 {
        self.quota(org, region)
            .await
            .usage
            .map_or(0, |c| c.projects)
    }

    async fn reserved(&self, org: &str, region: &str) -> i64 {
        self.quota(org, region)
            .await
            .reserved
            .map_or(0, |c| c.projects)
    }

    async fn reserve(
        &self,
        org: &str,
        id: &str,
        items: &[(&str, i64)],
    ) -> Result<ReserveResponse, Status> {
        self.call(
            "Reserve",
            &member_of(org),
            ReserveRequest {
                reservation_id: id.to_owned(),
                organization: format!("organizations/{org}"),
                items: items
                    .iter()
                    .map(|(region, n)| RegionCounts {
                        region: (*region).to_owned(),
                        counts: Some(projects(*n)),
                    })
                    .collect(),
                ttl_seconds: 0,
            },
        )
        .await
    }

    async fn commit(
        &self,
        org: &str,
        id: &str,
        regions: &[&str],
        created: &[(&str, i64)],
    ) -> Result<(), Status> {
        self.call::<_, CommitResponse>(
            "Commit",
            &member_of(org),
            CommitRequest {
                reservation_id: id.to_owned(),
                organization: format!("organizations/{org}"),
                regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                created: created
                    .iter()
                    .map(|(region, n)| RegionCounts {
                        region: (*region).to_owned(),
                        counts: Some(projects(*n)),
                    })
                    .collect(),
            },
        )
        .await
        .map(drop)
    }

    async fn free(&self, org: &str, changes: &[(&str, &str, i64)]) -> Result<(), Status> {
        self.call::<_, FreeResponse>(
            "Free",
            &member_of(org),
            FreeRequest {
                organization: format!("organizations/{org}"),
                items: Vec::new(),
                changes: changes
                    .iter()
                    .map(|(op, region, n)| UsageChange {
                        operation_id: (*op).to_owned(),
                        region: (*region).to_owned(),
                        counts: Some(projects(*n)),
                    })
                    .collect(),
            },
        )
        .await
        .map(drop)
    }

    async fn reconcile(
        &self,
        org: &str,
        validate_only: bool,
    ) -> Result<ReconcileQuotasResponse, Status> {
        self.call(
            "ReconcileQuotas",
            &Identity::operator(),
            ReconcileQuotasRequest {
                organization: if org.is_empty() {
                    String::new()
                } else {
                    format!("organizations/{org}")
                },
                validate_only,
            },
        )
        .await
    }
}

/// The stored quota document's size in bytes, read raw from the bucket.
async fn doc_size(nats: &NatsServer, org: &str, region: &str) -> usize {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("nordlys-quota").await.expect("bucket");
    kv.get(format!("quota.{org}.{region}"))
        .await
        .expect("get")
        .map_or(0, |b| b.len())
}

/// 50,000 reserve+commit pairs in one organization (two regions, at
/// concurrency 32). Debug builds run fewer by default (set
/// NORDLYS_SCALE_OPS=50000 to run them all there too): each pair is about
/// ten KV round trips, and a debug quota service is CPU-bound on this 2-core
/// machine (10,000 pairs take about 45 s, so 50,000 would take almost four
/// minutes; with a release quota binary, NORDLYS_BIN_DIR, 50,000 take about
/// 60 s). What matters is the same at any count: the document stays small
/// and the last tenth runs as fast as the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_stay_small_and_cost_stays_flat_at_scale() {
    let default_ops = if cfg!(debug_assertions) {
        10_000
    } else {
        50_000
    };
    let total: usize = std::env::var("NORDLYS_SCALE_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_ops);
    let nats = NatsServer::start();
    let _quota = start_quota(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("scale").await;
    let regions = ["sto1", "osl1"];
    for region in regions {
        client.set_limit("scale", region, 10_000_000).await;
    }

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, next, done) = (client.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let region = regions[i % regions.len()];
                let id = format!("scale-{i}");
                let r = client
                    .reserve("scale", &id, &[(region, 1)])
                    .await
                    .unwrap_or_else(|s| panic!("reserve {id}: {s:?}"));
                assert!(!r.already_committed, "{id}");
                client
                    .commit("scale", &id, &[region], &[])
                    .await
                    .unwrap_or_else(|s| panic!("commit {id}: {s:?}"));
                done.lock().expect("lock").push(Instant::now());
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = start.elapsed();
    let mut times = done.lock().expect("lock").clone();
    times.sort();
    assert_eq!(times.len(), total);
    let tenth = total / 10;
    let first = times[tenth - 1].duration_since(start);
    let last = times[total - 1].duration_since(times[total - 1 - tenth]);
    let us_per_op = |d: Duration| d.as_secs_f64() * 1e6 / tenth as f64;
    eprintln!(
        "scale: {total} reserve+commit pairs in {elapsed:?}; first tenth {:.0} us/pair, last tenth {:.0} us/pair",
        us_per_op(first),
        us_per_op(last)
    );
    assert!(
        last.as_secs_f64() < first.as_secs_f64() * 1.5,
        "the last tenth ({last:?}) is much slower than the first ({first:?})"
    );

    for region in regions {
        let size = doc_size(&nats, "scale", region).await;
        eprintln!("scale: quota.scale.{region} is {size} bytes");
        assert!(size < 16 * 1024, "quota.scale.{region} is {size} bytes");
        assert_eq!(
            client.usage("scale", region).await,
            (total / regions.len()) as i64
        );
    }
    // The earliest ids left the document long ago; they are still known.
    let again = client
        .reserve("scale", "scale-0", &[("sto1", 1)])
        .await
        .expect("reserve");
    assert!(again.already_committed, "scale-0 is remembered");
    client
        .commit("scale", "scale-0", &["sto1"], &[])
        .await
        .expect("commit");
    // And creates still work.
    client
        .reserve("scale", "scale-after", &[("sto1", 1)])
        .await
        .expect("reserve after");
    client
        .commit("scale", "scale-after", &["sto1"], &[])
        .await
        .expect("commit after");
    assert_eq!(
        client.usage("scale", "sto1").await,
        (total / regions.len()) as i64 + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_changes_count_once_however_often_retried() {
    let nats = NatsServer::start();
    let _quota = start_quota(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("frees").await;
    client
        .commit("frees", "c-1", &[], &[("sto1", 5)])
        .await
        .expect("commit");
    assert_eq!(client.usage("frees", "sto1").await, 5);

    let change = [("del:sto1:projects:p1", "sto1", 1)];
    for _ in 0..3 {
        client.free("frees", &change).await.expect("free");
    }
    assert_eq!(client.usage("frees", "sto1").await, 4, "retries count once");

    // A batch repeating an id and one already applied: only p2 counts.
    client
        .free(
            "frees",
            &[
                ("del:sto1:projects:p1", "sto1", 1),
                ("del:sto1:projects:p2", "sto1", 1),
                ("del:sto1:projects:p2", "sto1", 1),
            ],
        )
        .await
        .expect("free");
    assert_eq!(client.usage("frees", "sto1").await, 3);

    // Operation ids are checked like reservation ids, each field named.
    let err = client
        .free("frees", &[("ok-1", "sto1", 1), ("bad id!", "STO", -1)])
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    for field in [
        "changes[1].operation_id",
        "changes[1].region",
        "changes[1].counts.projects",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert_eq!(client.usage("frees", "sto1").await, 3, "nothing applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_created_counts_unknown_reservations_once_per_region() {
    let nats = NatsServer::start();
    let _quota = start_quota(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("made").await;
    client.set_limit("made", "sto1", 2).await;

    // Never reserved (or lapsed and forgotten): counted anyway, once, even
    // over the limit, since it exists.
    for _ in 0..2 {
        client
            .commit("made", "lost-1", &[], &[("sto1", 3)])
            .await
            .expect("commit");
    }
    assert_eq!(client.usage("made", "sto1").await, 3);
    let again = client
        .reserve("made", "lost-1", &[("sto1", 3)])
        .await
        .expect("reserve");
    assert!(again.already_committed);

    // A reservation over two regions: committing one with `created` leaves
    // the other to its own daemon.
    client.set_limit("made", "sto1", 100).await;
    client
        .reserve("made", "both-1", &[("sto1", 1), ("osl1", 1)])
        .await
        .expect("reserve");
    client
        .commit("made", "both-1", &[], &[("sto1", 1)])
        .await
        .expect("commit sto1");
    assert_eq!(client.usage("made", "sto1").await, 4);
    assert_eq!(client.reserved("made", "osl1").await, 1, "osl1 still held");
    client
        .commit("made", "both-1", &[], &[("osl1", 1)])
        .await
        .expect("commit osl1");
    client
        .commit("made", "both-1", &[], &[("osl1", 1)])
        .await
        .expect("commit osl1 again");
    assert_eq!(client.usage("made", "osl1").await, 1);
    assert_eq!(client.reserved("made", "osl1").await, 0);
}

/// A fake region answering CountResources with whatever the test sets.
struct FakeRegion {
    answer: Arc<Mutex<CountResourcesResponse>>,
    callers: Arc<Mutex<Vec<String>>>,
    /// Added to `existing.projects` on each call, to make a moving target.
    step: Arc<std::sync::atomic::AtomicI64>,
}

impl FakeRegion {
    async fn start(nats: &NatsServer, region: &str) -> FakeRegion {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let mut sub = client
            .subscribe(format!("nordlys.v1.{region}.RegiondService.CountResources"))
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let fake = FakeRegion {
            answer: Arc::new(Mutex::new(CountResourcesResponse::default())),
            callers: Arc::new(Mutex::new(Vec::new())),
            step: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        };
        let (answer, callers, step) =
            (fake.answer.clone(), fake.callers.clone(), fake.step.clone());
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let caller = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("nordlys-caller"))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                callers.lock().expect("lock").push(caller);
                // Only the organization asked about is answered for.
                let asked = CountResourcesRequest::decode(msg.payload).unwrap_or_default();
                let out = if asked.organization == "organizations/recon" {
                    answer.lock().expect("lock").clone()
                } else {
                    CountResourcesResponse::default()
                };
                let bump = step.load(std::sync::atomic::Ordering::Relaxed);
                if bump != 0 {
                    let mut a = answer.lock().expect("lock");
                    if let Some(e) = a.existing.as_mut() {
                        e.projects += bump;
                    }
                }
                let _ = client
                    .publish(reply, Bytes::from(out.encode_to_vec()))
                    .await;
            }
        });
        fake
    }

    fn set(&self, existing: i64, pending: Vec<PendingChange>, orphans: &[&str]) {
        *self.answer.lock().expect("lock") = CountResourcesResponse {
            existing: Some(projects(existing)),
            pending,
            orphans: orphans.iter().map(|o| (*o).to_owned()).collect(),
        };
    }
}

fn pending_create(id: &str, n: i64) -> PendingChange {
    PendingChange {
        operation_id: id.to_owned(),
        create: true,
        counts: Some(projects(n)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_corrects_only_confirmed_drift() {
    let nats = NatsServer::start();
    let _quota = start_quota(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("recon").await;
    let fake = FakeRegion::start(&nats, "fake1").await;
    client
        .commit("recon", "c-1", &[], &[("fake1", 5)])
        .await
        .expect("commit");
    // A region nobody serves.
    client
        .commit("recon", "c-2", &[], &[("gone1", 1)])
        .await
        .expect("commit");

    // Three exist, usage says five: reported, not corrected, when asked
    // only to validate.
    fake.set(3, Vec::new(), &["organizations/recon/projects/stray"]);
    let report = client.reconcile("recon", true).await.expect("reconcile");
    assert_eq!(report.drifts.len(), 1, "{report:?}");
    let drift = &report.drifts[0];
    assert_eq!(drift.quota, "organizations/recon/quotas/fake1");
    assert_eq!(drift.usage.map(|c| c.projects), Some(5));
    assert_eq!(drift.existing.map(|c| c.projects), Some(3));
    assert!(!drift.corrected);
    assert_eq!(report.unreachable, vec!["gone1".to_owned()]);
    assert_eq!(
        report.orphans,
        vec!["organizations/recon/projects/stray".to_owned()]
    );
    assert_eq!(client.usage("recon", "fake1").await, 5);
    assert!(fake
        .callers
        .lock()
        .expect("lock")
        .iter()
        .all(|c| c == "operator;;nordlys-quota"));

    // Corrected after two observations.
    let report = client.reconcile("recon", false).await.expect("reconcile");
    assert_eq!(report.drifts.len(), 1, "{report:?}");
    assert!(report.drifts[0].corrected, "{report:?}");
    assert_eq!(client.usage("recon", "fake1").await, 3);
    let report = client.reconcile("recon", false).await.expect("reconcile");
    assert!(report.drifts.is_empty(), "settled: {report:?}");

    // A create under way (in the region, not committed yet) is not drift;
    // once committed, the region still lists it until acknowledged, and it
    // is not counted twice.
    client
        .reserve("recon", "r-new", &[("fake1", 1)])
        .await
        .expect("reserve");
    fake.set(4, vec![pending_create("r-new", 1)], &[]);
    let report = client.reconcile("recon", false).await.expect("reconcile");
    assert!(report.drifts.is_empty(), "pending create: {report:?}");
    client
        .commit("recon", "r-new", &["fake1"], &[])
        .await
        .expect("commit");
    let report = client.reconcile("recon", false).await.expect("reconcile");
    assert!(report.drifts.is_empty(), "applied create: {report:?}");
    assert_eq!(client.usage("recon", "fake1").await, 4);
    assert_eq!(client.reserved("recon", "fake1").await, 0);

    // A difference that moves between the observations is left alone.
    fake.set(10, Vec::new(), &[]);
    fake.step.store(1, std::sync::atomic::Ordering::Relaxed);
    let report = client.reconcile("recon", false).await.expect("reconcile");
    assert_eq!(report.drifts.len(), 1, "{report:?}");
    assert!(!report.drifts[0].corrected);
    assert_eq!(client.usage("recon", "fake1").await, 4);

    // Operators only.
    let err = client
        .call::<_, ReconcileQuotasResponse>(
            "ReconcileQuotas",
            &member_of("recon"),
            ReconcileQuotasRequest::default(),
        )
        .await
        .expect_err("members may not");
    assert_eq!(err.code(), Code::PermissionDenied);
}
