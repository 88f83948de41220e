//! Quota: a create over the limit is RESOURCE_EXHAUSTED with a QuotaFailure
//! detail and leaves nothing behind in any region; usage shows in GetQuota.

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, DeleteProjectRequest, GetProjectRequest,
    ResourceCounts,
};
use nordlys_tests::{bearer, Stack, Tenant};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const LIMITS: ResourceCounts = ResourceCounts {
    projects: 2,
    users: 10,
    networks: 10,
    access_rules: 10,
};

fn assert_quota_failure(status: &Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let failure = details
        .quota_failure()
        .unwrap_or_else(|| panic!("no QuotaFailure detail in {status:?}"));
    assert!(!failure.violations.is_empty(), "{status:?}");
    assert!(
        failure.violations.iter().all(|v| !v.subject.is_empty()),
        "a violation without subject: {failure:?}"
    );
}

async fn names_in(stack: &Stack, key: &str, region: &str) -> Vec<String> {
    let mut listed = stack.projects_in(key, region).await;
    assert!(listed.unreachable.is_empty());
    listed.projects.sort_by(|a, b| a.name.cmp(&b.name));
    listed.projects.into_iter().map(|p| p.name).collect()
}

async fn counts(stack: &Stack, tenant: &Tenant, region: &str) -> (i64, i64) {
    let quota = stack.quota(&tenant.key, &tenant.organization, region).await;
    assert_eq!(quota.limits.unwrap_or_default().projects, LIMITS.projects);
    (
        quota.usage.unwrap_or_default().projects,
        quota.reserved.unwrap_or_default().projects,
    )
}

#[tokio::test]
async fn a_third_project_over_a_limit_of_two_is_refused_and_leaves_nothing() {
    let stack = Stack::start().await;
    let tenant = stack.tenant_with_limits("acme", LIMITS).await;
    let key = &tenant.key;

    for id in ["one", "two"] {
        stack
            .create_project(key, id, &["sto1", "osl1"])
            .await
            .unwrap_or_else(|s| panic!("CreateProject {id}: {s:?}"));
    }
    for region in ["sto1", "osl1"] {
        assert_eq!(counts(&stack, &tenant, region).await, (2, 0), "{region}");
    }

    let refused = stack
        .create_project(key, "three", &["sto1", "osl1"])
        .await
        .expect_err("over the limit");
    assert_quota_failure(&refused);

    let got = ProjectServiceClient::new(stack.channel().await)
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/three".into(),
            },
            key,
        ))
        .await
        .expect_err("nothing was created");
    assert_eq!(got.code(), Code::NotFound);
    for region in ["sto1", "osl1"] {
        assert_eq!(
            names_in(&stack, key, region).await,
            ["projects/one", "projects/two"],
            "{region}"
        );
        assert_eq!(counts(&stack, &tenant, region).await, (2, 0), "{region}");
    }

    // Deleting one frees a slot in both regions.
    ProjectServiceClient::new(stack.channel().await)
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/one".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteProject");
    for region in ["sto1", "osl1"] {
        assert_eq!(counts(&stack, &tenant, region).await, (1, 0), "{region}");
    }
    stack
        .create_project(key, "three", &["sto1", "osl1"])
        .await
        .expect("room again after a delete");
}

#[tokio::test]
async fn one_full_region_refuses_the_whole_placement() {
    let stack = Stack::start().await;
    let tenant = stack.tenant_with_limits("acme", LIMITS).await;
    let key = &tenant.key;
    stack
        .set_limits(
            &tenant.organization,
            "osl1",
            ResourceCounts {
                projects: 1,
                ..LIMITS
            },
        )
        .await;

    stack
        .create_project(key, "one", &["sto1", "osl1"])
        .await
        .expect("first project fits everywhere");
    let refused = stack
        .create_project(key, "two", &["sto1", "osl1"])
        .await
        .expect_err("osl1 is full");
    assert_quota_failure(&refused);

    // Not even in sto1, where there was room.
    assert_eq!(names_in(&stack, key, "sto1").await, ["projects/one"]);
    assert_eq!(names_in(&stack, key, "osl1").await, ["projects/one"]);
    let sto1 = stack.quota(key, &tenant.organization, "sto1").await;
    assert_eq!(sto1.usage.unwrap_or_default().projects, 1);
    assert_eq!(sto1.reserved.unwrap_or_default().projects, 0);

    // sto1 alone still has room.
    stack
        .create_project(key, "two", &["sto1"])
        .await
        .expect("sto1 alone has room");
}
