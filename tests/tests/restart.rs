//! Quota state lives in JetStream KV: a restarted quota service keeps the
//! usage, the organizations and the API keys.

use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use nordlys_tests::Stack;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn a_restarted_quota_service_keeps_usage() {
    let mut stack = Stack::start().await;
    let limits = ResourceCounts {
        projects: 2,
        users: 10,
        networks: 10,
        access_rules: 10,
    };
    let tenant = stack.tenant_with_limits("acme", limits).await;
    let key = &tenant.key;
    stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");

    let before = stack.quota.id().to_owned();
    stack.quota.restart();
    assert_ne!(stack.quota.id(), before, "a new instance");

    for region in ["sto1", "osl1"] {
        let quota = stack.quota(key, &tenant.organization, region).await;
        assert_eq!(quota.usage.unwrap_or_default().projects, 1, "{region}");
        assert_eq!(quota.limits.unwrap_or_default().projects, 2, "{region}");
    }
    // The kept usage still counts: one more fits, the next does not.
    stack
        .create_project(key, "api", &["sto1", "osl1"])
        .await
        .expect("second project fits");
    let refused = stack
        .create_project(key, "third", &["sto1", "osl1"])
        .await
        .expect_err("limit of two reached");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_error_details().quota_failure().is_some());
}
