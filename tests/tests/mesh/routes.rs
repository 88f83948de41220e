//! The same scenario over `nats`, `grpc` and `auto`: identical answers,
//! rich error details included, whatever the transport.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use nordlys_proto::pb::nordlys::v1::{
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    CreateNetworkRequest, DeleteProjectRequest, ListProjectsRequest, Network,
};
use nordlys_tests::{bearer, Stack, StackOpts};
use tonic_types::StatusExt;

use super::support::{create, get};

fn outcome<T>(result: Result<T, tonic::Status>, show: impl Fn(T) -> String) -> String {
    match result {
        Ok(v) => format!("OK {}", show(v)),
        Err(s) => {
            let violations: Vec<String> = s
                .get_error_details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
                .unwrap_or_default();
            format!("{:?} {violations:?}", s.code())
        }
    }
}

async fn scenario(route: &str) -> (Vec<String>, BTreeMap<String, u64>) {
    let stack = Stack::start_with(StackOpts {
        route: route.to_owned(),
        ..StackOpts::default()
    })
    .await;
    let a = stack.tenant("alpha").await;
    let b = stack.tenant("beta").await;
    let ch = stack.channel().await;
    let mut out = Vec::new();
    let statuses = |p: nordlys_proto::pb::nordlys::v1::Project| {
        let s: Vec<String> = p
            .region_status
            .iter()
            .map(|s| format!("{}={}", s.region, s.state))
            .collect();
        format!("{} {s:?}", p.name)
    };

    out.push(outcome(
        create(&ch, &a.key, "web", &["sto1", "osl1"]).await,
        statuses,
    ));
    out.push(outcome(
        create(&ch, &a.key, "web", &["sto1", "osl1"]).await,
        statuses,
    ));
    out.push(outcome(
        create(&ch, &a.key, "bad", &["nowhere"]).await,
        statuses,
    ));
    out.push(outcome(
        get(&ch, &a.key, "projects/web", Duration::from_secs(5)).await,
        statuses,
    ));
    out.push(outcome(
        get(&ch, &b.key, "projects/web", Duration::from_secs(5)).await,
        statuses,
    ));
    let list = ProjectServiceClient::new(ch.clone())
        .list_projects(bearer(ListProjectsRequest::default(), &a.key))
        .await
        .map(tonic::Response::into_inner);
    out.push(outcome(list, |l| {
        format!(
            "{:?} {:?}",
            l.projects
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>(),
            l.unreachable
        )
    }));
    let mut networks = NetworkServiceClient::new(ch.clone());
    for cidr in ["10.1.0.1/24", "10.1.0.0/24"] {
        let created = networks
            .create_network(bearer(
                CreateNetworkRequest {
                    parent: "projects/web".into(),
                    network: Some(Network {
                        region: "sto1".into(),
                        cidr: cidr.into(),
                        ..Default::default()
                    }),
                    network_id: "net".into(),
                    request_id: String::new(),
                },
                &a.key,
            ))
            .await
            .map(tonic::Response::into_inner);
        out.push(outcome(created, |n| format!("{} {}", n.name, n.gateway_ip)));
    }
    let deleted = ProjectServiceClient::new(ch.clone())
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
                ..Default::default()
            },
            &a.key,
        ))
        .await
        .map(tonic::Response::into_inner);
    out.push(outcome(deleted, |d| {
        format!(
            "{:?}",
            d.region_status
                .iter()
                .map(|s| s.region.clone())
                .collect::<Vec<_>>()
        )
    }));
    out.push(outcome(
        get(&ch, &a.key, "projects/web", Duration::from_secs(5)).await,
        statuses,
    ));

    let stats = nats_requests(&stack.nats.url()).await;
    (out, stats)
}

/// Requests each regiond instance answered over NATS ($SRV.STATS).
async fn nats_requests(url: &str) -> BTreeMap<String, u64> {
    let client = async_nats::connect(url).await.expect("connect");
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply("$SRV.STATS.nordlys-regiond", inbox, "".into())
        .await
        .expect("publish");
    let mut counts = BTreeMap::new();
    while let Ok(Some(reply)) =
        tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
        let total: u64 = stats["endpoints"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["num_requests"].as_u64()).sum())
            .unwrap_or(0);
        counts.insert(stats["id"].as_str().unwrap_or_default().to_owned(), total);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_grpc_and_auto_give_identical_answers() {
    let _serial = super::support::serial().await;
    let (nats, nats_stats) = scenario("nats").await;
    let (grpc, grpc_stats) = scenario("grpc").await;
    let (auto, auto_stats) = scenario("auto").await;
    println!("scenario over nats:\n  {}", nats.join("\n  "));
    println!("NATS requests per regiond instance: nats={nats_stats:?} grpc={grpc_stats:?} auto={auto_stats:?}");
    assert_eq!(nats, grpc, "nats and grpc routes differ");
    assert_eq!(nats, auto, "nats and auto routes differ");
    // The expected shape, so identical-but-wrong cannot pass.
    assert!(nats[0].starts_with("OK projects/web"), "{}", nats[0]);
    assert!(nats[2].starts_with("InvalidArgument"), "{}", nats[2]);
    assert!(nats[4].starts_with("NotFound"), "{}", nats[4]);
    assert!(nats[6].contains("network.cidr"), "{}", nats[6]);
    assert!(
        nats[7].starts_with("OK projects/web/networks/net 10.1.0.1"),
        "{}",
        nats[7]
    );
    assert!(nats[9].starts_with("NotFound"), "{}", nats[9]);
    // The routes really differ: nats-only uses the queue groups, grpc-only never does.
    assert!(nats_stats.values().sum::<u64>() > 0, "{nats_stats:?}");
    assert_eq!(
        grpc_stats.values().sum::<u64>(),
        0,
        "grpc mode used NATS: {grpc_stats:?}"
    );
    assert_eq!(
        auto_stats.values().sum::<u64>(),
        0,
        "auto mode fell back without a fault: {auto_stats:?}"
    );
}
