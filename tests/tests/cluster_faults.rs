//! The reference topology under faults: cluster nodes killed with SIGKILL
//! under load, a region's leaf node cut.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::region_service_client::RegionServiceClient;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, GetProjectRequest,
    ListProjectsRequest, ListRegionsRequest, Project, ResourceCounts,
};
use nordlys_tests::cluster::ClusterStack;
use nordlys_tests::{bearer, OPERATOR_KEY};
use tonic::transport::Channel;
use tonic::Code;

/// How long a client keeps retrying one idempotent call.
const CALL_BUDGET: Duration = Duration::from_secs(40);

/// What a client may retry with the same request id: the service could not
/// answer, or the attempt's own deadline passed (tonic reports that as
/// CANCELLED "Timeout expired").
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
    ) || (status.code() == Code::Cancelled && status.message().contains("Timeout expired"))
}

/// Calls `call` until it succeeds, fails for good, or [`CALL_BUDGET`]
/// has passed, pausing between attempts; the last answer.
async fn retrying<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + CALL_BUDGET;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Creates project `id` in `sto1` with request id `id`, retrying what may
/// be retried (same request id) within [`CALL_BUDGET`]; the last answer.
async fn create(channel: &Channel, key: &str, id: &str) -> Result<Project, tonic::Status> {
    let client = ProjectServiceClient::new(channel.clone());
    retrying(|| {
        let mut client = client.clone();
        let mut request = bearer(
            CreateProjectRequest {
                project: Some(Project {
                    display_name: format!("Project {id}"),
                    regions: vec!["sto1".to_string()],
                    ..Default::default()
                }),
                project_id: id.to_string(),
                request_id: format!("req-{id}"),
            },
            key,
        );
        request.set_timeout(Duration::from_secs(10));
        async move { client.create_project(request).await }
    })
    .await
}

/// Reads project `id`, retrying what may be retried within [`CALL_BUDGET`].
async fn get(channel: &Channel, key: &str, id: &str) -> Result<Project, tonic::Status> {
    let client = ProjectServiceClient::new(channel.clone());
    retrying(|| {
        let mut client = client.clone();
        let request = bearer(
            GetProjectRequest {
                name: format!("projects/{id}"),
            },
            key,
        );
        async move { client.get_project(request).await }
    })
    .await
}

/// Every project `key` sees in `sto1`, page by page; an error when sto1
/// did not answer.
async fn existing(channel: &Channel, key: &str) -> Result<usize, String> {
    let mut client = ProjectServiceClient::new(channel.clone());
    let (mut count, mut token) = (0, String::new());
    loop {
        let page = client
            .list_projects(bearer(
                ListProjectsRequest {
                    region: "sto1".to_string(),
                    page_size: 500,
                    page_token: token.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map_err(|s| format!("ListProjects: {s:?}"))?
            .into_inner();
        if !page.unreachable.is_empty() {
            return Err(format!("unreachable: {:?}", page.unreachable));
        }
        count += page.projects.len();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        token = page.next_page_token;
    }
}

/// Waits until the organization's sto1 usage equals what exists and
/// nothing is reserved any more; returns that count. A reservation whose
/// answer a killed node lost never reaches a region, and nobody can give
/// it back: it lapses at the gateway's reservation TTL (120 s), so the
/// wait outlasts that.
async fn settled_usage(stack: &ClusterStack, key: &str, organization: &str) -> i64 {
    let channel = stack.gateway.channel().await;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let exists = existing(&channel, key).await;
        let quota = stack.gateway.quota(key, organization, "sto1").await;
        let usage = quota.usage.unwrap_or_default().projects;
        let reserved = quota.reserved.unwrap_or_default().projects;
        if exists == Ok(usage as usize) && reserved == 0 {
            return usage;
        }
        assert!(
            Instant::now() < deadline,
            "usage {usage} (reserved {reserved}) never settled at the projects that exist: {exists:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn killed_cluster_nodes_lose_no_call_and_never_over_allocate() {
    let mut stack = ClusterStack::start().await;
    let steady = stack
        .gateway
        .tenant_with_limits(
            "steady",
            ResourceCounts {
                projects: 10_000,
                ..Default::default()
            },
        )
        .await;
    let channel = stack.gateway.channel().await;

    // Steady creates and reads; the leader of the quota bucket's stream is
    // killed a few seconds in.
    let stop_at = Instant::now() + Duration::from_secs(14);
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (channel, key) = (channel.clone(), steady.key.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut done = 0;
            while Instant::now() < stop_at {
                let id = format!("p{worker}-{done}");
                match create(&channel, &key, &id).await {
                    Ok(_) => {
                        if let Err(status) = get(&channel, &key, &id).await {
                            failures.push(format!("GetProject {id}: {status:?}"));
                        }
                    }
                    Err(status) => failures.push(format!("CreateProject {id}: {status:?}")),
                }
                done += 1;
            }
            (done, failures)
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let first = stack
        .cluster
        .stream_leader("KV_nordlys-quota")
        .expect("the quota bucket has a leader");
    stack.cluster.kill_node(first);
    let mut total = 0;
    for worker in workers {
        let (done, failures) = worker.await.expect("worker");
        assert!(failures.is_empty(), "calls failed: {failures:#?}");
        total += done;
    }
    assert!(total > 20, "only {total} creates in 14 s");
    let usage = settled_usage(&stack, &steady.key, &steady.organization).await;
    assert_eq!(usage, total as i64, "every create counted once");

    // The killed node rejoins and catches up: its copy of the quota
    // bucket ends where the others' do.
    stack.cluster.restart_node(first);
    stack
        .cluster
        .wait_caught_up("KV_nordlys-quota", Duration::from_secs(30));

    // 1,000 concurrent creates against a limit of 100, a node killed
    // halfway: exactly 100.
    let race = stack
        .gateway
        .tenant_with_limits(
            "race",
            ResourceCounts {
                projects: 100,
                ..Default::default()
            },
        )
        .await;
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creates = Vec::new();
    for i in 0..1000 {
        let (channel, key, started) = (channel.clone(), race.key.clone(), started.clone());
        creates.push(tokio::spawn(async move {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            create(&channel, &key, &format!("race-{i}")).await
        }));
    }
    while started.load(std::sync::atomic::Ordering::SeqCst) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = (first + 1) % 3;
    stack.cluster.kill_node(second);
    let (mut created, mut refused, mut other) = (0, 0, Vec::new());
    for create in creates {
        match create.await.expect("task") {
            Ok(_) => created += 1,
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => other.push(format!("{status:?}")),
        }
    }
    assert!(other.is_empty(), "unexpected answers: {other:#?}");
    assert_eq!((created, refused), (100, 900));
    assert_eq!(
        settled_usage(&stack, &race.key, &race.organization).await,
        100
    );

    // A second node down: no quorum. Writes refuse cleanly, reads of what
    // exists go on.
    let third = (first + 2) % 3;
    stack.cluster.kill_node(third);
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut request = bearer(
        CreateProjectRequest {
            project: Some(Project {
                display_name: "No quorum".to_string(),
                regions: vec!["sto1".to_string()],
                ..Default::default()
            }),
            project_id: "no-quorum".to_string(),
            request_id: String::new(),
        },
        &steady.key,
    );
    request.set_timeout(Duration::from_secs(15));
    let refused = projects
        .create_project(request)
        .await
        .expect_err("no quorum, no write");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Reads of what exists go on, over the direct route (retried while
    // the clients find the surviving node).
    let before = regiond_calls(&stack.sto1, "GetProject").await;
    let read = get(&channel, &steady.key, "p0-0").await;
    assert!(read.is_ok(), "reads go on without quorum: {read:?}");
    let after = regiond_calls(&stack.sto1, "GetProject").await;
    let direct = |calls: &[(String, f64)]| {
        calls
            .iter()
            .filter(|(route, _)| route == "grpc")
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    assert!(
        direct(&after) > direct(&before),
        "the read went over the direct route: {before:?} then {after:?}"
    );

    // Quorum back: nothing of the refused create was left behind.
    stack.cluster.restart_node(third);
    stack.cluster.restart_node(second);
    let usage = settled_usage(&stack, &steady.key, &steady.organization).await;
    assert_eq!(usage, total as i64, "the refused create left nothing");
    let gone = get(&channel, &steady.key, "no-quorum").await;
    assert_eq!(
        gone.map(|p| p.name).map_err(|s| s.code()),
        Err(Code::NotFound)
    );
    create(&channel, &steady.key, "after-quorum")
        .await
        .expect("writes work again");
}

#[tokio::test]
async fn a_cut_leaf_node_makes_only_its_region_unreachable_over_nats() {
    a_cut_leaf_node_makes_only_its_region_unreachable("nats").await;
}

/// The default route: direct gRPC to the daemons, NATS to find them.
#[tokio::test]
async fn a_cut_leaf_node_makes_only_its_region_unreachable_over_the_direct_route() {
    a_cut_leaf_node_makes_only_its_region_unreachable("auto").await;
}

async fn a_cut_leaf_node_makes_only_its_region_unreachable(route: &str) {
    let mut stack = ClusterStack::start_with(&["--route", route]).await;
    let tenant = stack.gateway.tenant("acme").await;
    let channel = stack.gateway.channel().await;
    stack
        .gateway
        .create_project(&tenant.key, "both", &["sto1", "osl1"])
        .await
        .expect("create in both regions");

    stack.cluster.cut_leaf("osl1");
    let mut regions = RegionServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = regions
            .list_regions(bearer(ListRegionsRequest::default(), OPERATOR_KEY))
            .await
            .expect("ListRegions")
            .into_inner();
        let up = |name: &str| {
            listed
                .regions
                .iter()
                .any(|r| r.name == format!("regions/{name}") && r.up)
        };
        assert!(up("sto1"), "sto1 must stay up: {listed:?}");
        if !up("osl1") {
            break;
        }
        assert!(Instant::now() < deadline, "osl1 still up: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut projects = ProjectServiceClient::new(channel.clone());
    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), &tenant.key))
        .await
        .expect("a list answers with what it can reach")
        .into_inner();
    assert_eq!(listed.unreachable, vec!["osl1".to_string()], "{listed:?}");
    assert_eq!(listed.projects.len(), 1, "{listed:?}");
    stack
        .gateway
        .create_project(&tenant.key, "sto1-only", &["sto1"])
        .await
        .expect("sto1 is untouched");

    let cut_over = Instant::now();
    stack.cluster.restore_leaf("osl1");
    loop {
        let listed = projects
            .list_projects(bearer(ListProjectsRequest::default(), &tenant.key))
            .await
            .expect("ListProjects")
            .into_inner();
        if listed.unreachable.is_empty() {
            break;
        }
        assert!(
            cut_over.elapsed() < Duration::from_secs(10),
            "osl1 not back 10 s after its leaf: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "osl1 answered again {:?} after its leaf returned",
        cut_over.elapsed()
    );
    stack
        .gateway
        .create_project(&tenant.key, "osl1-again", &["osl1"])
        .await
        .expect("osl1 serves again");
    // Served over the route the gateway was given.
    let served = regiond_calls(&stack.osl1, "CreateProject").await;
    let want = if route == "nats" { "nats" } else { "grpc" };
    assert!(
        served.iter().any(|(r, n)| r == want && *n >= 1.0),
        "osl1's CreateProject calls by route: {served:?}"
    );
}

/// osl1's count of `method` calls served, by route, from its `/metrics`.
async fn regiond_calls(regiond: &nordlys_tests::Regiond, method: &str) -> Vec<(String, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(regiond.metrics_addr())
        .await
        .expect("connect to /metrics");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text.lines()
        .filter(|l| {
            l.starts_with("nordlys_regiond_requests_total{")
                && l.contains(&format!("method=\"{method}\""))
        })
        .filter_map(|l| {
            let route = l.split("route=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((route, n))
        })
        .collect()
}
