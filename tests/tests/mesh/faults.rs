//! Faults: a daemon killed, a direct port closed, nats-server restarted, a
//! daemon that hangs. Each test prints its figures.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, ListProjectsRequest,
};
use nordlys_tests::{bearer, instances, Regiond, Stack, StackOpts};

use super::support::{create, get, metrics, steady_gets, total};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_instances_fails_no_call() {
    let _serial = super::support::serial().await;
    let mut stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    create(&channel, &tenant.key, "steady", &["sto1"])
        .await
        .expect("create");

    let started = Instant::now();
    let load = tokio::spawn(steady_gets(
        channel.clone(),
        tenant.key.clone(),
        "projects/steady".into(),
        4,
        started + Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = started.elapsed();
    stack.sto1_a.kill(); // SIGKILL: no goodbye, sockets reset
    let tally = load.await.expect("load");
    println!(
        "kill -9 of one sto1 instance at {killed_at:?}: {} calls ok, {} failed, slowest {:?}",
        tally.ok,
        tally.failed.len(),
        tally.max_latency
    );
    let counters = metrics(stack.gateway.http_addr()).await;
    println!("gateway counters: {counters:?}");
    assert!(tally.failed.is_empty(), "failed calls: {:?}", tally.failed);
    assert!(
        total(&counters, "nordlys_gateway_ejections_total", &[]) >= 1.0,
        "the dead instance was ejected: {counters:?}"
    );
    assert!(
        tally.ok > 50,
        "too few calls to mean anything: {}",
        tally.ok
    );
    // A call that met the dead instance was retried at once, not after a timeout.
    assert!(
        tally.max_latency < Duration::from_millis(1500),
        "slowest call {:?}",
        tally.max_latency
    );
    // Discovery forgets it too.
    stack.wait_for_regions(|r| instances(r, "sto1") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_direct_port_falls_back_to_nats() {
    let _serial = super::support::serial().await;
    // Both sto1 daemons advertise a port nothing listens on.
    let stack = Stack::start_with(StackOpts {
        regiond_args: vec!["--grpc-advertise".into(), "127.0.0.1:9".into()],
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    let started = Instant::now();
    for i in 0..20 {
        create(
            &channel,
            &tenant.key,
            &format!("p-{i:02}"),
            &["sto1", "osl1"],
        )
        .await
        .unwrap_or_else(|s| panic!("create {i}: {s:?}"));
        get(
            &channel,
            &tenant.key,
            &format!("projects/p-{i:02}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|s| panic!("get {i}: {s:?}"));
    }
    let counters = metrics(stack.gateway.http_addr()).await;
    println!(
        "40 calls with every direct endpoint closed, over NATS: {:?}; counters {counters:?}",
        started.elapsed()
    );
    let over_nats = total(
        &counters,
        "nordlys_gateway_region_calls_total",
        &[("route", "nats")],
    );
    assert!(over_nats >= 40.0, "{counters:?}");

    // In grpc-only mode the same region is unavailable, precisely.
    let grpc_only = Stack::start_with(StackOpts {
        route: "grpc".into(),
        regiond_args: vec!["--grpc-advertise".into(), "127.0.0.1:9".into()],
        ..StackOpts::default()
    })
    .await;
    let tenant = grpc_only.tenant("acme").await;
    let err = create(&grpc_only.channel().await, &tenant.key, "nope", &["sto1"])
        .await
        .expect_err("no direct endpoint");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_keeps_direct_calls_working() {
    let _serial = super::support::serial().await;
    // The memory backend needs no NATS, so only the route is tested.
    let mut stack = Stack::start_with(StackOpts {
        backend: "memory".into(),
        sto1_instances: 1,
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    create(&channel, &tenant.key, "web", &["sto1", "osl1"])
        .await
        .expect("create");
    get(
        &channel,
        &tenant.key,
        "projects/web",
        Duration::from_secs(5),
    )
    .await
    .expect("get");

    stack.nats.stop();
    let down = Instant::now();
    let tally = steady_gets(
        channel.clone(),
        tenant.key.clone(),
        "projects/web".into(),
        2,
        down + Duration::from_secs(3),
    )
    .await;
    println!(
        "nats-server down for 3 s: {} gets ok over direct gRPC, {} failed",
        tally.ok,
        tally.failed.len()
    );
    assert!(tally.failed.is_empty(), "{:?}", tally.failed);
    assert!(tally.ok > 20, "{}", tally.ok);

    stack.nats.restart();
    let back = Instant::now();
    // Writes need the quota service over NATS again.
    let mut created = None;
    while back.elapsed() < Duration::from_secs(10) {
        if create(&channel, &tenant.key, "after", &["sto1"])
            .await
            .is_ok()
        {
            created = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = created.expect("creates work again after nats-server is back");
    // A daemon that appears now is discovered within 5 s.
    let fresh = Regiond::start_with(&stack.nats, "lul1", &["--backend", "memory"]);
    let seen_from = Instant::now();
    stack.wait_for_regions(|r| instances(r, "lul1") == 1).await;
    let discovered = seen_from.elapsed();
    println!("after nats-server came back: creates work in {created:?}; a new region is discovered in {discovered:?}");
    assert!(created < Duration::from_secs(5), "{created:?}");
    assert!(discovered < Duration::from_secs(5), "{discovered:?}");
    drop(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_daemon_does_not_hold_callers_past_their_deadline() {
    let _serial = super::support::serial().await;
    let stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    create(&channel, &tenant.key, "web", &["sto1", "osl1"])
        .await
        .expect("create");

    let pid = Pid::from_raw(stack.osl1.pid().expect("osl1 runs") as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let started = Instant::now();
    let got = get(
        &channel,
        &tenant.key,
        "projects/web",
        Duration::from_secs(1),
    )
    .await;
    let get_took = started.elapsed();
    let started = Instant::now();
    let mut request = bearer(ListProjectsRequest::default(), &tenant.key);
    request.set_timeout(Duration::from_secs(1));
    let list = ProjectServiceClient::new(channel.clone())
        .list_projects(request)
        .await;
    let list_took = started.elapsed();
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    println!(
        "osl1 hung: GetProject answered in {get_took:?} ({:?}), ListProjects in {list_took:?}",
        got.as_ref().map(|p| &p.region_status).map_err(|s| s.code())
    );
    assert!(get_took < Duration::from_millis(1500), "{get_took:?}");
    assert!(list_took < Duration::from_millis(1500), "{list_took:?}");
    // The answer is partial, not an error: sto1 still has it.
    let project = got.expect("sto1 answers");
    let osl1 = project
        .region_status
        .iter()
        .find(|s| s.region == "osl1")
        .expect("osl1 status");
    assert_eq!(osl1.state, 3, "osl1 is UNREACHABLE: {osl1:?}");
    let list = list.expect("list answers").into_inner();
    assert_eq!(list.unreachable, ["osl1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_slower_than_one_read_attempt_still_answers() {
    // osl1's one daemon lists in 1.5 s: longer than one read attempt (1 s),
    // within what a list waits for a region (2 s). Its attempt is kept, and
    // no second one is started beside it: that would only ask the same
    // daemon to repeat the same slow work.
    let served = list_a_slow_region(1).await;
    assert_eq!(served, 1.0, "a lone instance is asked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_is_hedged_on_another_instance() {
    // Two daemons in osl1, both slow: at 1 s a second attempt starts beside
    // the first (it may reach the other daemon), and the first answer wins.
    let served = list_a_slow_region(2).await;
    assert!(served >= 2.0, "hedged on the next route: {served} served");
}

/// Lists projects while each of osl1's `instances` daemons takes 1.5 s to
/// list; checks the answer is whole and in time, and returns how many
/// ListProjects calls osl1's daemons served for it.
async fn list_a_slow_region(instances_of_osl1: usize) -> f64 {
    let _serial = super::support::serial().await;
    let mut stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack.tenant("acme").await;
    let channel = stack.channel().await;
    create(&channel, &tenant.key, "web", &["osl1"])
        .await
        .expect("create");
    stack.osl1.kill();
    let slow = |stack: &Stack| {
        Regiond::start_env(
            &stack.nats,
            "osl1",
            &["--backend", "kv"],
            &[("NORDLYS_TEST_SLOW_LIST_MS", "1500")],
        )
    };
    stack.osl1 = slow(&stack);
    let more: Vec<Regiond> = (1..instances_of_osl1).map(|_| slow(&stack)).collect();
    stack
        .wait_for_regions(|r| instances(r, "osl1") == instances_of_osl1)
        .await;
    let started = Instant::now();
    let list = ProjectServiceClient::new(channel.clone())
        .list_projects(bearer(ListProjectsRequest::default(), &tenant.key))
        .await
        .expect("list")
        .into_inner();
    let took = started.elapsed();
    println!(
        "{instances_of_osl1} osl1 instance(s) list in 1.5 s: ListProjects answered in {took:?}"
    );
    assert!(list.unreachable.is_empty(), "{:?}", list.unreachable);
    let names: Vec<&str> = list.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["projects/web"]);
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // A hedge that lost still finishes its work in the daemon.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut served = 0.0;
    for daemon in std::iter::once(&stack.osl1).chain(&more) {
        let counters = metrics(daemon.metrics_addr()).await;
        served += total(
            &counters,
            "nordlys_regiond_requests_total",
            &[("method", "ListProjects")],
        );
    }
    served
}
