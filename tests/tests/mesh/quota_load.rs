//! The quota service under load: restarted mid-stream it loses nothing, and
//! 1,000 concurrent creates against a limit of 100 with two quota instances
//! give exactly 100 projects.

use std::time::{Duration, Instant};

use futures::future::join_all;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, ListProjectsRequest, ResourceCounts,
};
use nordlys_tests::{bearer, Stack, StackOpts};
use tonic::transport::Channel;

use super::support::create;

/// Every project the key sees, all pages.
async fn count_projects(channel: &Channel, key: &str) -> usize {
    let mut client = ProjectServiceClient::new(channel.clone());
    let (mut token, mut total) = (String::new(), 0);
    loop {
        let page = client
            .list_projects(bearer(
                ListProjectsRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .expect("list")
            .into_inner();
        assert!(page.unreachable.is_empty(), "{:?}", page.unreachable);
        total += page.projects.len();
        if page.next_page_token.is_empty() {
            return total;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_quota_service_under_load_loses_no_reservation() {
    let _serial = super::support::serial().await;
    let mut stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack
        .tenant_with_limits(
            "acme",
            ResourceCounts {
                projects: 100_000,
                users: 10,
                networks: 10,
                access_rules: 10,
            },
        )
        .await;
    let channel = stack.channel().await;
    let until = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for c in 0..4 {
        let (channel, key) = (channel.clone(), tenant.key.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            let mut i = 0;
            while Instant::now() < until {
                match create(&channel, &key, &format!("c{c}-{i:04}"), &["sto1"]).await {
                    Ok(_) => ok += 1,
                    Err(s) => {
                        assert!(
                            matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                            ),
                            "{s:?}"
                        );
                        refused += 1;
                    }
                }
                i += 1;
            }
            (ok, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.quota.restart();
    let (mut ok, mut refused) = (0, 0);
    for c in clients {
        let (o, r) = c.await.expect("client");
        ok += o;
        refused += r;
    }
    // Commits that met the restart finish in the background.
    let mut usage = 0;
    for _ in 0..50 {
        let quota = stack.quota(&tenant.key, &tenant.organization, "sto1").await;
        usage = quota.usage.unwrap_or_default().projects;
        let reserved = quota.reserved.unwrap_or_default().projects;
        if usage == i64::from(ok) && reserved == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let existing = count_projects(&channel, &tenant.key).await;
    println!("quota restarted under load: {ok} creates ok, {refused} refused while it was down; {existing} projects exist; usage {usage}");
    assert!(ok > 20, "{ok}");
    assert_eq!(
        existing, ok as usize,
        "every successful create exists, nothing else"
    );
    assert_eq!(usage, i64::from(ok), "usage equals what was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_creates_against_a_limit_of_100() {
    let _serial = super::support::serial().await;
    let stack = Stack::start_with(StackOpts {
        quota_instances: 2,
        ..StackOpts::default()
    })
    .await;
    let tenant = stack
        .tenant_with_limits(
            "race",
            ResourceCounts {
                projects: 100,
                users: 10,
                networks: 10,
                access_rules: 10,
            },
        )
        .await;
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(stack.channel().await);
    }
    let started = Instant::now();
    let outcomes = join_all((0..1000).map(|i| {
        let (channel, key) = (channels[i % 8].clone(), tenant.key.clone());
        async move { create(&channel, &key, &format!("race-{i:04}"), &["sto1"]).await }
    }))
    .await;
    let took = started.elapsed();
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let exhausted = outcomes
        .iter()
        .filter(|o| matches!(o, Err(s) if s.code() == tonic::Code::ResourceExhausted))
        .count();
    let other: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .filter(|s| s.code() != tonic::Code::ResourceExhausted)
        .map(|s| format!("{:?} {}", s.code(), s.message()))
        .collect();
    let existing = count_projects(&channels[0], &tenant.key).await;
    let quota = stack.quota(&tenant.key, &tenant.organization, "sto1").await;
    println!(
        "1000 concurrent creates, limit 100, two quota instances: {ok} ok, {exhausted} RESOURCE_EXHAUSTED, {} other, {existing} exist, usage {:?}, in {took:?}",
        other.len(),
        quota.usage
    );
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(ok, 100);
    assert_eq!(exhausted, 900);
    assert_eq!(existing, 100, "nothing left behind");
    assert_eq!(quota.usage.unwrap_or_default().projects, 100);
}
