//! Both sto1 instances share the region's queue group: NATS spreads calls
//! over them, as $SRV.STATS shows. The gateway is pinned to the NATS route
//! (its default prefers direct gRPC, which micro stats do not count).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, ListProjectsRequest,
};
use nordlys_tests::{bearer, Stack, StackOpts};

/// Requests per regiond instance id, from every instance's $SRV.STATS answer.
async fn requests_per_instance(nats_url: &str) -> HashMap<String, u64> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply("$SRV.STATS.nordlys-regiond", inbox, "".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");

    let mut counts = HashMap::new();
    // Every instance answers at once; stop after a quiet moment.
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        let stats: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("stats are JSON");
        let id = stats["id"].as_str().expect("an id").to_owned();
        let total: u64 = stats["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| e["num_requests"].as_u64().unwrap_or(0))
            .sum();
        counts.insert(id, total);
    }
    counts
}

#[tokio::test]
async fn both_sto1_instances_serve_calls() {
    let stack = Stack::start_with(StackOpts {
        route: "nats".into(),
        ..StackOpts::default()
    })
    .await;
    let key = stack.tenant("acme").await.key;
    stack
        .create_project(&key, "web", &["sto1"])
        .await
        .expect("CreateProject");

    let mut projects = ProjectServiceClient::new(stack.channel().await);
    // 40 calls to sto1: both instances get some unless the queue group is
    // broken (the chance of one getting none is 2^-39).
    for _ in 0..40 {
        let listed = projects
            .list_projects(bearer(
                ListProjectsRequest {
                    region: "sto1".into(),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .expect("ListProjects")
            .into_inner();
        assert_eq!(listed.projects.len(), 1);
    }

    let counts = requests_per_instance(&stack.nats.url()).await;
    let a = counts.get(stack.sto1_a.id()).copied();
    let b = counts
        .get(stack.sto1_b.as_ref().map(|r| r.id()).unwrap_or_default())
        .copied();
    assert!(
        a.is_some() && b.is_some(),
        "both answer $SRV.STATS: {counts:?}"
    );
    assert!(a > Some(0) && b > Some(0), "both serve: {counts:?}");
    assert!(
        a.unwrap_or(0) + b.unwrap_or(0) >= 40,
        "every call was counted: {counts:?}"
    );
    assert!(counts.contains_key(stack.osl1.id()), "{counts:?}");
}
