//! `nordlysctl bootstrap` makes an organization with an owner, limits and an
//! API key that works; running it again is fine.

use std::process::Command;

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, ListProjectsRequest,
};
use nordlys_tests::{bearer, bin_path, Stack, OPERATOR_KEY};

fn bootstrap(stack: &Stack, key: &str) -> std::process::Output {
    Command::new(bin_path("nordlysctl"))
        .args([
            "--endpoint",
            &format!("http://{}", stack.gateway.addr()),
            "bootstrap",
            "--org",
            "demo",
            "--owner",
            "owner@demo.example",
            "--limits",
            "projects=3,users=5,networks=2,access_rules=9",
            "--print-key-only",
        ])
        .env("NORDLYS_API_KEY", key)
        .output()
        .expect("run nordlysctl")
}

#[tokio::test]
async fn bootstrap_makes_a_working_key() {
    let stack = Stack::start().await;

    let output = bootstrap(&stack, OPERATOR_KEY);
    assert!(output.status.success(), "{output:?}");
    let key = String::from_utf8(output.stdout).expect("utf-8");
    let key = key.trim();
    assert!(!key.is_empty() && !key.contains(char::is_whitespace));

    let listed = ProjectServiceClient::new(stack.channel().await)
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("the new key works")
        .into_inner();
    assert!(listed.projects.is_empty());
    for region in ["sto1", "osl1"] {
        let quota = stack.quota(key, "organizations/demo", region).await;
        let limits = quota.limits.unwrap_or_default();
        assert_eq!(
            (
                limits.projects,
                limits.users,
                limits.networks,
                limits.access_rules
            ),
            (3, 5, 2, 9)
        );
    }

    // Again: the organization exists already, and a second key is made.
    let again = bootstrap(&stack, OPERATOR_KEY);
    assert!(again.status.success(), "{again:?}");
    assert_ne!(String::from_utf8_lossy(&again.stdout).trim(), key);

    // A wrong key fails with the gRPC code on stderr and a non-zero exit.
    let refused = bootstrap(&stack, "wrong");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
}
