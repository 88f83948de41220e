//! A bounded soak under faults, as an operator would try it: concurrent
//! creates, deletes and reads through two gateways (a few hundred calls over
//! about a minute, one fixed random seed) while a regional daemon is killed
//! and restarted, another paused and resumed, a quota instance killed,
//! nats-server restarted and a gateway killed. Afterwards, with no
//! reconciler running, quota usage equals what exists in every region, no
//! orphan exists, no limit was passed at any sampled moment, and no call was
//! answered INTERNAL or UNKNOWN. With `NORDLYS_TEST_BACKEND=openstack` the
//! regions are real Keystone and Neutron, and osl1's Neutron is killed and
//! restarted in the middle too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nordlys_proto::pb::nordlys::regiond::v1::{CountResourcesRequest, CountResourcesResponse};
use nordlys_proto::pb::nordlys::v1::{
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    CreateNetworkRequest, CreateProjectRequest, DeleteProjectRequest, GetProjectRequest,
    ListNetworksRequest, ListNetworksResponse, ListProjectsRequest, ListProjectsResponse, Network,
    Project, ResourceCounts,
};
use nordlys_tests::{bearer, Gateway, GatewayOpts, Stack, StackOpts, Tenant};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

const SEED: u64 = 0x6e6f72646c7973;
const WORKERS: u64 = 6;
const LOAD: Duration = Duration::from_secs(50);
/// Projects each worker picks its ids from: small, so creates and deletes
/// meet on the same names.
const IDS: u32 = 12;
const PROJECT_LIMIT: i64 = 30;
const NETWORK_LIMIT: i64 = 40;

fn limits() -> ResourceCounts {
    ResourceCounts {
        projects: PROJECT_LIMIT,
        users: 10,
        networks: NETWORK_LIMIT,
        access_rules: 10,
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct Seen {
    calls: u64,
    codes: BTreeMap<String, u64>,
    /// The first answer of each failing code, to read in the output.
    samples: BTreeMap<String, String>,
    /// INTERNAL or UNKNOWN answers, which must not happen.
    bad: Vec<String>,
    /// Usage over its limit at a sampled moment, which must not happen.
    over: Vec<String>,
}

fn pick_regions(rng: &mut StdRng) -> Vec<String> {
    match rng.random_range(0..3) {
        0 => vec!["sto1".into()],
        1 => vec!["osl1".into()],
        _ => vec!["sto1".into(), "osl1".into()],
    }
}

/// One worker: a seeded mix of calls, retrying an unanswered create with
/// the same request id, as a careful client does.
#[allow(clippy::too_many_arguments)]
async fn worker(
    n: u64,
    timeout: Duration,
    gateways: Vec<Channel>,
    gateway_b_alive: Arc<AtomicBool>,
    key: String,
    stop: Instant,
    seen: Arc<Mutex<Seen>>,
) {
    let mut rng = StdRng::seed_from_u64(SEED + n);
    let mut attempt = 0u64;
    while Instant::now() < stop {
        attempt += 1;
        // Gateway B is killed part-way: calls then go to A only, and calls
        // that were in flight to B when it died are not held against it.
        let use_b = rng.random_bool(0.5) && gateway_b_alive.load(Ordering::SeqCst);
        let channel = gateways[usize::from(use_b)].clone();
        let id = format!("p{n}x{}", rng.random_range(0..IDS));
        let op = rng.random_range(0..10);
        let request_id = format!("w{n}-{attempt}");
        let result: Result<(), tonic::Status> = match op {
            0..=3 => {
                let regions = pick_regions(&mut rng);
                let mut last = Ok(());
                // Up to three tries with the same request id.
                for _ in 0..3 {
                    let mut request = bearer(
                        CreateProjectRequest {
                            project: Some(Project {
                                display_name: format!("Soak {id}"),
                                regions: regions.clone(),
                                ..Default::default()
                            }),
                            project_id: id.clone(),
                            request_id: request_id.clone(),
                        },
                        &key,
                    );
                    request.set_timeout(timeout);
                    last = ProjectServiceClient::new(channel.clone())
                        .create_project(request)
                        .await
                        .map(|_| ());
                    match &last {
                        Err(s)
                            if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        _ => break,
                    }
                }
                last
            }
            4..=5 => {
                // Network names are per project, not per region: one name
                // in two regions would be two networks the API shows as one.
                let region = if rng.random_bool(0.5) { "sto1" } else { "osl1" };
                let mut request = bearer(
                    CreateNetworkRequest {
                        parent: format!("projects/{id}"),
                        network_id: format!("{region}-net{}", rng.random_range(0..3)),
                        network: Some(Network {
                            region: region.into(),
                            cidr: "10.2.0.0/24".into(),
                            ..Default::default()
                        }),
                        request_id: request_id.clone(),
                    },
                    &key,
                );
                request.set_timeout(timeout);
                NetworkServiceClient::new(channel.clone())
                    .create_network(request)
                    .await
                    .map(|_| ())
            }
            6..=7 => {
                let mut request = bearer(
                    DeleteProjectRequest {
                        name: format!("projects/{id}"),
                        ..Default::default()
                    },
                    &key,
                );
                request.set_timeout(timeout);
                ProjectServiceClient::new(channel.clone())
                    .delete_project(request)
                    .await
                    .map(|_| ())
            }
            _ => {
                let mut request = bearer(
                    GetProjectRequest {
                        name: format!("projects/{id}"),
                    },
                    &key,
                );
                request.set_timeout(timeout);
                ProjectServiceClient::new(channel.clone())
                    .get_project(request)
                    .await
                    .map(|_| ())
            }
        };
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.calls += 1;
            let code = match &result {
                Ok(()) => Code::Ok,
                Err(s) => s.code(),
            };
            *seen.codes.entry(format!("{code:?}")).or_default() += 1;
            if let Err(s) = &result {
                seen.samples
                    .entry(format!("{code:?}"))
                    .or_insert_with(|| format!("op {op} on {id}: {}", s.message()));
                let b_died = use_b && !gateway_b_alive.load(Ordering::SeqCst);
                if matches!(s.code(), Code::Internal | Code::Unknown) && !b_died {
                    seen.bad.push(format!("op {op} on {id}: {s:?}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    }
}

fn signal(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

/// Everything `tenant` has in `region`: projects and networks, read
/// through the public API (operator views are not needed: the tenant sees
/// all of its own).
async fn existing(channel: &Channel, tenant: &Tenant, region: &str) -> Option<ResourceCounts> {
    existing_names(channel, tenant, region)
        .await
        .map(|(projects, networks)| ResourceCounts {
            projects: projects.len() as i64,
            networks: networks.len() as i64,
            ..Default::default()
        })
}

/// The names of what `tenant` has in `region`, through the public API.
async fn existing_names(
    channel: &Channel,
    tenant: &Tenant,
    region: &str,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut projects = Vec::new();
    let mut token = String::new();
    loop {
        let page = ProjectServiceClient::new(channel.clone())
            .list_projects(bearer(
                ListProjectsRequest {
                    region: region.into(),
                    page_size: 100,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &tenant.key,
            ))
            .await
            .ok()?
            .into_inner();
        if !page.unreachable.is_empty() {
            return None;
        }
        projects.extend(page.projects.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut networks = Vec::new();
    for project in &projects {
        let page = NetworkServiceClient::new(channel.clone())
            .list_networks(bearer(
                ListNetworksRequest {
                    parent: project.clone(),
                    page_size: 100,
                    ..Default::default()
                },
                &tenant.key,
            ))
            .await
            .ok()?
            .into_inner();
        networks.extend(
            page.networks
                .into_iter()
                .filter(|n| n.region == region)
                .map(|n| n.name),
        );
    }
    Some((projects, networks))
}

/// The names regiond itself lists (operator identity, NATS).
async fn region_names(nats: &str, region: &str, organization: &str, method: &str) -> Vec<String> {
    use nordlys_proto::pb::nordlys::regiond::v1::ListRequest;
    let client = async_nats::connect(nats).await.expect("nats");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("nordlys-caller", "operator;;soak-test");
    let reply = client
        .request_with_headers(
            format!("nordlys.v1.{region}.RegiondService.{method}"),
            headers,
            ListRequest {
                organization: organization.to_string(),
                limit: 1000,
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
        )
        .await
        .expect("List");
    match method {
        "ListProjects" => ListProjectsResponse::decode(reply.payload)
            .map(|r| r.projects.into_iter().map(|p| p.name).collect())
            .unwrap_or_default(),
        _ => ListNetworksResponse::decode(reply.payload)
            .map(|r| r.networks.into_iter().map(|n| n.name).collect())
            .unwrap_or_default(),
    }
}

/// What regiond itself counts and finds orphaned (operator identity, NATS).
async fn region_count(nats: &str, region: &str, organization: &str) -> CountResourcesResponse {
    let client = async_nats::connect(nats).await.expect("nats");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("nordlys-caller", "operator;;soak-test");
    let reply = client
        .request_with_headers(
            format!("nordlys.v1.{region}.RegiondService.CountResources"),
            headers,
            CountResourcesRequest {
                organization: organization.to_string(),
            }
            .encode_to_vec()
            .into(),
        )
        .await
        .expect("CountResources");
    CountResourcesResponse::decode(reply.payload).expect("CountResourcesResponse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_equals_what_exists_after_faults() {
    let openstack = std::env::var("NORDLYS_TEST_BACKEND").is_ok_and(|b| b == "openstack");
    // The sweeper's grace must outlast a request a killed daemon left in
    // flight at the cloud: Keystone finishes one in up to a few seconds
    // here, so a note older than that is safe to judge.
    let grace = if openstack { "6000" } else { "2000" };
    let mut stack = Stack::start_with(StackOpts {
        quota_instances: 2,
        // No reconciler: what settles must settle on its own.
        quota_args: vec!["--reconcile-interval-secs".into(), "0".into()],
        regiond_env: vec![
            ("NORDLYS_SETTLE_GRACE_MS".into(), grace.into()),
            ("NORDLYS_SETTLE_INTERVAL_MS".into(), "500".into()),
            ("RUST_LOG".into(), "info,nordlys_regiond=debug".into()),
        ],
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant_with_limits("soak", limits()).await;
    let mut gateway_b = Gateway::start(&stack.nats, &GatewayOpts::default());
    let gateways = vec![stack.channel().await, gateway_b.channel().await];
    let alive_b = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let stop = started + LOAD;
    let mut tasks = Vec::new();
    // OpenStack's Keystone and Neutron answer in hundreds of milliseconds
    // here: fewer callers, and the deadlines a client of them would set.
    let (workers, timeout) = if openstack {
        (3, Duration::from_secs(15))
    } else {
        (WORKERS, Duration::from_secs(3))
    };
    for n in 0..workers {
        tasks.push(tokio::spawn(worker(
            n,
            timeout,
            gateways.clone(),
            Arc::clone(&alive_b),
            tenant.key.clone(),
            stop,
            Arc::clone(&seen),
        )));
    }

    // The sampler: usage never above its limit.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let channel = gateways[0].clone();
        let (key, org) = (tenant.key.clone(), tenant.organization.clone());
        let (seen, sampling) = (Arc::clone(&seen), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                for region in ["sto1", "osl1"] {
                    let got = nordlys_proto::pb::nordlys::v1::quota_service_client::QuotaServiceClient::new(channel.clone())
                        .get_quota(bearer(
                            nordlys_proto::pb::nordlys::v1::GetQuotaRequest {
                                name: format!("{org}/quotas/{region}"),
                            },
                            &key,
                        ))
                        .await;
                    if let Ok(q) = got {
                        let u = q.into_inner().usage.unwrap_or_default();
                        if u.projects > PROJECT_LIMIT || u.networks > NETWORK_LIMIT {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .over
                                .push(format!("{region}: {u:?}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let at = |secs: u64| started + Duration::from_secs(secs);
    let until = |t: Instant| tokio::time::sleep_until(t.into());
    // A regional daemon killed, then restarted.
    until(at(5)).await;
    if let Some(b) = stack.sto1_b.as_mut() {
        b.kill();
    }
    until(at(10)).await;
    if let Some(b) = stack.sto1_b.as_mut() {
        b.restart();
    }
    // Another paused, then resumed.
    until(at(14)).await;
    signal(stack.osl1.pid(), Signal::SIGSTOP);
    until(at(19)).await;
    signal(stack.osl1.pid(), Signal::SIGCONT);
    // One quota instance killed.
    until(at(23)).await;
    if let Some(q) = stack.quota_b.as_mut() {
        q.kill();
    }
    // nats-server restarted (same port and store).
    until(at(28)).await;
    tokio::task::block_in_place(|| stack.nats.restart());
    // On OpenStack regions (NORDLYS_TEST_BACKEND=openstack): osl1's
    // Neutron killed, down for a while, and started again.
    if openstack {
        until(at(31)).await;
        tokio::task::block_in_place(|| {
            nordlys_tests::openstack::shared_region("osl1").restart_neutron(Duration::from_secs(5))
        });
    }
    // One gateway killed.
    until(at(38)).await;
    alive_b.store(false, Ordering::SeqCst);
    gateway_b.kill();

    for task in tasks {
        task.await.expect("worker");
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");

    // Let every daemon's sweeper settle what the faults left behind, then
    // compare, region by region, without any reconciler.
    let channel = stack.channel().await;
    let deadline = Instant::now() + Duration::from_secs(if openstack { 120 } else { 40 });
    let mut last = String::new();
    let settled = loop {
        let mut all_equal = true;
        last.clear();
        for region in ["sto1", "osl1"] {
            let usage = stack
                .quota(&tenant.key, &tenant.organization, region)
                .await
                .usage
                .unwrap_or_default();
            let exists = existing(&channel, &tenant, region).await;
            let count = region_count(&stack.nats.url(), region, &tenant.organization).await;
            let equal = exists
                .as_ref()
                .is_some_and(|e| e.projects == usage.projects && e.networks == usage.networks)
                && count.pending.is_empty();
            all_equal &= equal;
            last.push_str(&format!(
                "{region}: usage {usage:?}, existing {exists:?}, regiond counts {:?}, pending {}, orphans {:?}\n",
                count.existing, count.pending.len(), count.orphans
            ));
        }
        if all_equal || Instant::now() > deadline {
            break all_equal;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Every worker and the sampler are done: take what they saw.
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "soak: {} calls in {:?}, answers {:?}\n{:#?}\n{last}",
        seen.calls,
        started.elapsed(),
        seen.codes,
        seen.samples
    );
    let enough = if openstack { 40 } else { 200 };
    assert!(seen.calls >= enough, "too few calls: {}", seen.calls);
    assert!(
        seen.bad.is_empty(),
        "INTERNAL or UNKNOWN answers: {:#?}",
        seen.bad
    );
    assert!(
        seen.over.is_empty(),
        "usage over its limit: {:#?}",
        seen.over
    );
    if !settled {
        // Keep the daemons' logs to read the drift's story.
        let dir = std::env::temp_dir().join("nordlys-soak-logs");
        let _ = std::fs::create_dir_all(&dir);
        for (name, path) in [
            ("sto1-a", stack.sto1_a.log_path()),
            ("osl1", stack.osl1.log_path()),
            ("gateway", stack.gateway.log_path()),
            ("gateway-b", gateway_b.log_path()),
            ("quota", stack.quota.log_path()),
        ] {
            let _ = std::fs::copy(&path, dir.join(format!("{name}.log")));
        }
        if let Some(b) = &stack.sto1_b {
            let _ = std::fs::copy(b.log_path(), dir.join("sto1-b.log"));
        }
        println!("daemon logs kept in {}", dir.display());
        for region in ["sto1", "osl1"] {
            let api = existing_names(&channel, &tenant, region).await;
            for method in ["ListProjects", "ListNetworks"] {
                let own =
                    region_names(&stack.nats.url(), region, &tenant.organization, method).await;
                let seen: Vec<&String> = match &api {
                    Some((p, n)) => {
                        if method == "ListProjects" {
                            p.iter().collect()
                        } else {
                            n.iter().collect()
                        }
                    }
                    None => Vec::new(),
                };
                let only_region: Vec<&String> = own.iter().filter(|x| !seen.contains(x)).collect();
                let only_api: Vec<&&String> = seen.iter().filter(|x| !own.contains(x)).collect();
                println!("{region} {method}: only in regiond {only_region:?}; only through the API {only_api:?}");
            }
        }
    }
    assert!(settled, "usage differs from what exists:\n{last}");
    for region in ["sto1", "osl1"] {
        let count = region_count(&stack.nats.url(), region, &tenant.organization).await;
        assert!(
            count.orphans.is_empty(),
            "orphans in {region}: {:?}",
            count.orphans
        );
    }
}
