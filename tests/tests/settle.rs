//! Quota that stays equal to what exists when calls are cut short: deletes
//! that finish and free their quota once, creates whose answer was lost
//! still counted, and request ids that name exactly one create. regiond's
//! test crash hook (`NORDLYS_TEST_CRASH_AFTER`) aborts it at a chosen step,
//! as `kill -9` would.

use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    region_status::State, AccessRule, CreateAccessRuleRequest, CreateNetworkRequest,
    CreateProjectRequest, DeleteProjectRequest, Direction, GetNetworkRequest, GetProjectRequest,
    Network, Project, Protocol, ResourceCounts,
};
use nordlys_tests::{bearer, instances, Regiond, Stack, StackOpts, Tenant};
use tonic::Code;

/// The sweeper takes over notes this old (ms), looking this often.
const GRACE: &str = "300";
const INTERVAL: &str = "200";

fn fast_settle() -> Vec<(String, String)> {
    vec![
        ("NORDLYS_SETTLE_GRACE_MS".into(), GRACE.into()),
        ("NORDLYS_SETTLE_INTERVAL_MS".into(), INTERVAL.into()),
    ]
}

/// A stack with one instance per region whose sweepers act quickly.
async fn stack() -> Stack {
    Stack::start_with(StackOpts {
        sto1_instances: 1,
        regiond_env: fast_settle(),
        ..StackOpts::default()
    })
    .await
}

/// Replaces the `sto1` instance with one started with `env` (the crash
/// hook), and waits until the gateway sees the new one.
async fn replace_sto1(stack: &mut Stack, env: &[(&str, &str)]) {
    stack.sto1_a.kill();
    stack.wait_for_regions(|r| instances(r, "sto1") == 0).await;
    let mut all: Vec<(&str, &str)> = vec![
        ("NORDLYS_SETTLE_GRACE_MS", GRACE),
        ("NORDLYS_SETTLE_INTERVAL_MS", INTERVAL),
    ];
    all.extend_from_slice(env);
    stack.sto1_a = Regiond::start_env(&stack.nats, "sto1", &["--backend", "kv"], &all);
    stack.wait_for_regions(|r| instances(r, "sto1") == 1).await;
}

/// Replaces the `sto1` instance with one whose sweeper waits ten minutes, so
/// what a crash left half-way stays so until a call finishes it.
async fn replace_sto1_without_sweeper(stack: &mut Stack) {
    stack.sto1_a.kill();
    stack.wait_for_regions(|r| instances(r, "sto1") == 0).await;
    stack.sto1_a = Regiond::start_env(
        &stack.nats,
        "sto1",
        &["--backend", "kv"],
        &[("NORDLYS_SETTLE_GRACE_MS", "600000")],
    );
    stack.wait_for_regions(|r| instances(r, "sto1") == 1).await;
}

/// Whether `regiond` has exited, within a few seconds.
async fn ended(regiond: &mut Regiond) -> bool {
    for _ in 0..50 {
        if !regiond.is_running() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn usage(stack: &Stack, tenant: &Tenant, region: &str) -> ResourceCounts {
    stack
        .quota(&tenant.key, &tenant.organization, region)
        .await
        .usage
        .unwrap_or_default()
}

/// Polls until `region`'s usage is `want`, for up to 15 s.
async fn wait_usage(stack: &Stack, tenant: &Tenant, region: &str, want: ResourceCounts) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = usage(stack, tenant, region).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "usage in {region} stayed {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counts(projects: i64, networks: i64, access_rules: i64) -> ResourceCounts {
    ResourceCounts {
        projects,
        networks,
        access_rules,
        ..Default::default()
    }
}

/// A project in `sto1` with one network and one access rule.
async fn project_with_children(stack: &Stack, tenant: &Tenant, id: &str) {
    stack
        .create_project(&tenant.key, id, &["sto1"])
        .await
        .expect("CreateProject");
    NetworkServiceClient::new(stack.channel().await)
        .create_network(bearer(
            CreateNetworkRequest {
                parent: format!("projects/{id}"),
                network_id: "net".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.1.0.0/24".into(),
                    ..Default::default()
                }),
                request_id: format!("{id}-net"),
            },
            &tenant.key,
        ))
        .await
        .expect("CreateNetwork");
    AccessRuleServiceClient::new(stack.channel().await)
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: format!("projects/{id}"),
                access_rule_id: "ssh".into(),
                access_rule: Some(AccessRule {
                    region: "sto1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Tcp as i32,
                    port_range_min: 22,
                    port_range_max: 22,
                    remote_cidr: "192.0.2.0/24".into(),
                    ..Default::default()
                }),
                request_id: format!("{id}-ssh"),
            },
            &tenant.key,
        ))
        .await
        .expect("CreateAccessRule");
}

async fn delete_project(stack: &Stack, key: &str, id: &str) -> Result<(), tonic::Status> {
    ProjectServiceClient::new(stack.channel().await)
        .delete_project(bearer(
            DeleteProjectRequest {
                name: format!("projects/{id}"),
                ..Default::default()
            },
            key,
        ))
        .await
        .map(|_| ())
}

async fn project_exists(stack: &Stack, key: &str, id: &str) -> bool {
    match ProjectServiceClient::new(stack.channel().await)
        .get_project(bearer(
            GetProjectRequest {
                name: format!("projects/{id}"),
            },
            key,
        ))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("GetProject {id}: {s:?}"),
    }
}

async fn network_exists(stack: &Stack, key: &str, id: &str) -> bool {
    match NetworkServiceClient::new(stack.channel().await)
        .get_network(bearer(
            GetNetworkRequest {
                name: format!("projects/{id}/networks/net"),
            },
            key,
        ))
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == Code::NotFound => false,
        Err(s) => panic!("GetNetwork {id}: {s:?}"),
    }
}

#[tokio::test]
async fn a_delete_cut_short_is_finished_by_the_sweeper_and_frees_once() {
    let mut stack = stack().await;
    let tenant = stack.tenant("acme").await;
    project_with_children(&stack, &tenant, "web").await;
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 1, 1));

    // sto1 dies after noting the delete, before removing anything.
    replace_sto1(&mut stack, &[("NORDLYS_TEST_CRASH_AFTER", "remove-noted")]).await;
    let cut = delete_project(&stack, &tenant.key, "web").await;
    assert!(cut.is_err(), "the region died mid-delete: {cut:?}");
    assert!(ended(&mut stack.sto1_a).await, "the crash hook ended sto1");

    // A new sto1 finds the note and finishes the delete on its own.
    replace_sto1(&mut stack, &[]).await;
    wait_usage(&stack, &tenant, "sto1", counts(0, 0, 0)).await;
    assert!(!project_exists(&stack, &tenant.key, "web").await);
    assert!(!network_exists(&stack, &tenant.key, "web").await);
    // Nothing is given back twice: a new project counts from zero.
    stack
        .create_project(&tenant.key, "api", &["sto1"])
        .await
        .expect("CreateProject");
    wait_usage(&stack, &tenant, "sto1", counts(1, 0, 0)).await;
}

#[tokio::test]
async fn a_retried_delete_finishes_what_a_crash_cut_short() {
    let mut stack = stack().await;
    let tenant = stack.tenant("acme").await;
    project_with_children(&stack, &tenant, "web").await;

    // sto1 dies after removing the project, before giving its quota back.
    replace_sto1(&mut stack, &[("NORDLYS_TEST_CRASH_AFTER", "removed")]).await;
    assert!(delete_project(&stack, &tenant.key, "web").await.is_err());
    // The next sto1 gets the retry before its sweeper: the retry answers OK
    // (the delete it finishes was asked for), not NOT_FOUND.
    replace_sto1_without_sweeper(&mut stack).await;
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 1, 1));
    delete_project(&stack, &tenant.key, "web")
        .await
        .expect("the retried delete finishes the work");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
    let again = delete_project(&stack, &tenant.key, "web")
        .await
        .expect_err("now it is gone");
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
}

#[tokio::test]
async fn a_project_being_deleted_shows_deleting_and_takes_no_children() {
    let mut stack = stack().await;
    let tenant = stack.tenant("acme").await;
    project_with_children(&stack, &tenant, "web").await;
    replace_sto1(&mut stack, &[("NORDLYS_TEST_CRASH_AFTER", "remove-noted")]).await;
    assert!(delete_project(&stack, &tenant.key, "web").await.is_err());
    // A new sto1 whose sweeper waits: the delete is half-way.
    replace_sto1_without_sweeper(&mut stack).await;
    let project = ProjectServiceClient::new(stack.channel().await)
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            &tenant.key,
        ))
        .await
        .expect("still there")
        .into_inner();
    let sto1 = project
        .region_status
        .iter()
        .find(|s| s.region == "sto1")
        .expect("sto1's status");
    assert_eq!(sto1.state, State::Deleting as i32, "{project:?}");
    let refused = NetworkServiceClient::new(stack.channel().await)
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network_id: "late".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.9.0.0/24".into(),
                    ..Default::default()
                }),
                request_id: "late-net".into(),
            },
            &tenant.key,
        ))
        .await
        .expect_err("no child under a project being deleted");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // The retried delete finishes it.
    delete_project(&stack, &tenant.key, "web")
        .await
        .expect("the retry finishes the delete");
    assert!(!project_exists(&stack, &tenant.key, "web").await);
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_counted() {
    let mut stack = stack().await;
    let tenant = stack.tenant("acme").await;
    // sto1 dies after making the project, before anyone commits it.
    replace_sto1(&mut stack, &[("NORDLYS_TEST_CRASH_AFTER", "created")]).await;
    let lost = stack.create_project(&tenant.key, "web", &["sto1"]).await;
    assert!(lost.is_err(), "the region died mid-create: {lost:?}");
    replace_sto1(&mut stack, &[]).await;
    // The project exists, so it counts, once the sweeper has seen it.
    wait_usage(&stack, &tenant, "sto1", counts(1, 0, 0)).await;
    assert!(project_exists(&stack, &tenant.key, "web").await);
}

#[tokio::test]
async fn a_create_slower_than_its_caller_and_the_grace_still_counts_once() {
    let mut stack = stack().await;
    let tenant = stack.tenant("acme").await;
    // The cloud takes 2 s to make anything: far past the sweeper's grace
    // (300 ms) and the caller's deadline.
    replace_sto1(&mut stack, &[("NORDLYS_TEST_SLOW_CREATE_MS", "2000")]).await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let mut request = bearer(create_request("web", &["sto1"], "slow-1"), &tenant.key);
    request.set_timeout(Duration::from_millis(700));
    let gave_up = projects.create_project(request).await;
    assert!(
        gave_up.is_err(),
        "the caller's deadline passed first: {gave_up:?}"
    );
    // The create, once begun, runs to its end; its note stays fresh while
    // it runs, so no sweeper releases it before the project exists.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !project_exists(&stack, &tenant.key, "web").await {
        assert!(Instant::now() < deadline, "the create never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_usage(&stack, &tenant, "sto1", counts(1, 0, 0)).await;
    // The retry a careful client makes gets the project, counted once.
    let retried = projects
        .create_project(bearer(
            create_request("web", &["sto1"], "slow-1"),
            &tenant.key,
        ))
        .await
        .expect("the retry answers with the project");
    assert_eq!(retried.get_ref().name, "projects/web");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));
}

fn create_request(id: &str, regions: &[&str], request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: format!("Project {id}"),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        project_id: id.to_owned(),
        request_id: request_id.to_owned(),
    }
}

#[tokio::test]
async fn a_request_id_names_one_create() {
    let stack = stack().await;
    let tenant = stack.tenant("acme").await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let key = &tenant.key;

    let first = projects
        .create_project(bearer(create_request("web", &["sto1"], "req-1"), key))
        .await
        .expect("created")
        .into_inner();
    let again = projects
        .create_project(bearer(create_request("web", &["sto1"], "req-1"), key))
        .await
        .expect("the same create again")
        .into_inner();
    assert_eq!(again.create_time, first.create_time);
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));

    // The same id for another project: refused, nothing counted.
    let other = projects
        .create_project(bearer(create_request("api", &["sto1"], "req-1"), key))
        .await
        .expect_err("a request id names one create");
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));
    assert!(!project_exists(&stack, key, "api").await);

    // After the delete, the id does not quietly make it again.
    delete_project(&stack, key, "web").await.expect("deleted");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
    let reused = projects
        .create_project(bearer(create_request("web", &["sto1"], "req-1"), key))
        .await
        .expect_err("the id's create happened and was undone by a delete");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(!project_exists(&stack, key, "web").await);
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
    // A new id makes it again, counted.
    projects
        .create_project(bearer(create_request("web", &["sto1"], "req-2"), key))
        .await
        .expect("a new id creates");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));
}

#[tokio::test]
async fn a_refused_create_is_undone_and_its_retry_counts() {
    let stack = stack().await;
    let tenant = stack.tenant("acme").await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let key = &tenant.key;
    // `web` exists in osl1 only, so a create in both is refused by osl1 and
    // undone in sto1.
    projects
        .create_project(bearer(create_request("web", &["osl1"], "osl1-only"), key))
        .await
        .expect("created in osl1");
    let refused = projects
        .create_project(bearer(
            create_request("web", &["sto1", "osl1"], "both"),
            key,
        ))
        .await
        .expect_err("osl1 has it already");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(0, 0, 0));
    assert_eq!(usage(&stack, &tenant, "osl1").await, counts(1, 0, 0));

    // Once osl1's is gone, the same request succeeds and counts once each.
    delete_project(&stack, key, "web").await.expect("deleted");
    assert_eq!(usage(&stack, &tenant, "osl1").await, counts(0, 0, 0));
    projects
        .create_project(bearer(
            create_request("web", &["sto1", "osl1"], "both"),
            key,
        ))
        .await
        .expect("the retry creates");
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));
    assert_eq!(usage(&stack, &tenant, "osl1").await, counts(1, 0, 0));
    // And the sweeper's later look changes nothing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(usage(&stack, &tenant, "sto1").await, counts(1, 0, 0));
    assert_eq!(usage(&stack, &tenant, "osl1").await, counts(1, 0, 0));
}
