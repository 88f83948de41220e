//! The kv backend against a real nats-server, beyond the conformance
//! suite: instances sharing a bucket, the index at scale, and the index
//! riding out a server restart.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use nordlys_proto::pb::nordlys::v1::{Membership, Network, Project, User};
use prost::Message;

use super::kv::Record;
use super::*;

const ACME: &str = "organizations/acme";

fn acme() -> Tenant {
    Tenant::Organization(ACME.into())
}

fn project(id: &str, org: &str) -> Project {
    Project {
        name: format!("projects/{id}"),
        organization: org.into(),
        ..Default::default()
    }
}

fn all(limit: usize) -> Filter {
    Filter {
        limit,
        ..Default::default()
    }
}

fn names(projects: &[Project]) -> Vec<&str> {
    projects.iter().map(|p| p.name.as_str()).collect()
}

async fn open(nats: &nordlys_tests::NatsServer) -> KvBackend {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    KvBackend::open(client, "sto1").await.expect("bucket")
}

#[tokio::test]
async fn instances_sharing_a_bucket_read_each_others_writes_at_once() {
    let nats = nordlys_tests::NatsServer::start();
    let (a, b) = (open(&nats).await, open(&nats).await);
    for i in 0..20 {
        let id = format!("p{i:02}");
        let writer = if i % 2 == 0 { &a } else { &b };
        let reader = if i % 2 == 0 { &b } else { &a };
        writer
            .create_project(&acme(), "", project(&id, ACME))
            .await
            .expect("create");
        // No sleep: the list waits for the index to reach the bucket.
        let listed = reader.list_projects(&all(100)).await.expect("list");
        assert_eq!(listed.len(), i + 1, "after {id}");
        assert_eq!(
            listed.last().map(|p| p.name.as_str()),
            Some(&*format!("projects/{id}"))
        );
    }

    // Children made on one instance are deleted with their project on the
    // other; a user's memberships likewise.
    b.create_user(
        &acme(),
        "",
        User {
            name: format!("{ACME}/users/ann"),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    for p in ["p00", "p01"] {
        b.create_membership(
            &acme(),
            "",
            Membership {
                name: format!("projects/{p}/members/ann"),
                user: format!("{ACME}/users/ann"),
                ..Default::default()
            },
        )
        .await
        .expect("membership");
    }
    b.create_network(
        &acme(),
        "",
        Network {
            name: "projects/p00/networks/n1".into(),
            ..Default::default()
        },
    )
    .await
    .expect("network");
    let counts = a.count(ACME).await.expect("count");
    assert_eq!((counts.projects, counts.users, counts.networks), (20, 1, 1));

    let removed = a
        .delete_project(&acme(), "projects/p00")
        .await
        .expect("delete");
    assert_eq!(removed.freed.networks, 1);
    let left = b.list_memberships(&all(10)).await.expect("list");
    assert_eq!(names_of(&left), ["projects/p01/members/ann"]);
    a.delete_user(&acme(), &format!("{ACME}/users/ann"))
        .await
        .expect("delete user");
    assert!(b.list_memberships(&all(10)).await.expect("list").is_empty());
    let counts = b.count(ACME).await.expect("count");
    assert_eq!((counts.projects, counts.users, counts.networks), (19, 0, 0));
}

fn names_of(memberships: &[Membership]) -> Vec<&str> {
    memberships.iter().map(|m| m.name.as_str()).collect()
}

/// Writes projects `from..to` straight into the bucket (as creates would),
/// many at a time, spread over `orgs` organizations.
async fn fill(nats: &nordlys_tests::NatsServer, from: usize, to: usize, orgs: usize) {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let kv = jetstream::new(client)
        .get_key_value("nordlys-regiond-sto1")
        .await
        .expect("bucket");
    futures::stream::iter(from..to)
        .map(|i| {
            let kv = kv.clone();
            async move {
                let org = format!("organizations/o{:03}", i % orgs);
                let p = project(&format!("p{i:06}"), &org);
                let record = Record {
                    organization: org,
                    request: String::new(),
                    value: p.encode_to_vec(),
                    deleting: false,
                };
                kv.put(format!("p.{}", p.name), Bytes::from(record.encode_to_vec()))
                    .await
                    .expect("put");
            }
        })
        .buffer_unordered(128)
        .collect::<Vec<()>>()
        .await;
}

/// The median time of `n` runs of a page.
async fn median_page(backend: &KvBackend, filter: &Filter, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let page = backend.list_projects(filter).await.expect("list");
        times.push(start.elapsed());
        assert_eq!(page.len(), filter.limit);
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn a_page_costs_a_page_however_many_projects_exist() {
    let nats = nordlys_tests::NatsServer::start();
    let backend = open(&nats).await;
    let (small, large, orgs) = (1_000, 20_000, 200);
    let middle = |total: usize| Filter {
        after: format!("projects/p{:06}", total / 2),
        limit: 50,
        ..Default::default()
    };
    let of_org = Filter {
        organization: Some("organizations/o007".into()),
        after: "projects/p000500".into(),
        limit: 50,
        ..Default::default()
    };

    fill(&nats, 0, small, orgs).await;
    let at_small = median_page(&backend, &middle(small), 21).await;
    fill(&nats, small, large, orgs).await;
    let at_large = median_page(&backend, &middle(large), 21).await;

    // Exact: sorted, after the bound, the organization's only.
    let page = backend.list_projects(&middle(large)).await.expect("list");
    let expected: Vec<String> = (large / 2 + 1..large / 2 + 51)
        .map(|i| format!("projects/p{i:06}"))
        .collect();
    assert_eq!(names(&page), expected);
    let before = backend.index_rows_scanned();
    let page = backend.list_projects(&of_org).await.expect("list");
    let expected: Vec<String> = (607..)
        .step_by(orgs)
        .take(50)
        .map(|i| format!("projects/p{i:06}"))
        .collect();
    assert_eq!(names(&page), expected);
    // A page steps over a page, not the 20,000 projects (nor the org's 100).
    assert_eq!(backend.index_rows_scanned() - before, 50);
    let before = backend.index_rows_scanned();
    backend.list_projects(&middle(large)).await.expect("list");
    assert_eq!(backend.index_rows_scanned() - before, 50);

    let counts = backend.count("organizations/o007").await.expect("count");
    assert_eq!(counts.projects, (large / orgs) as i64);

    // A second instance loads the whole bucket at open.
    let start = Instant::now();
    let other = open(&nats).await;
    let loaded = start.elapsed();
    assert_eq!(
        other
            .count("organizations/o199")
            .await
            .expect("count")
            .projects,
        (large / orgs) as i64
    );
    eprintln!(
        "page of 50: {at_small:?} at {small} projects, {at_large:?} at {large}; \
         a second instance loaded {large} in {loaded:?}"
    );
    assert!(
        at_large < at_small * 2 + Duration::from_millis(2),
        "a page at {large} projects took {at_large:?}, at {small} {at_small:?}"
    );
}

#[tokio::test]
async fn the_index_follows_the_bucket_across_a_server_restart() {
    let mut nats = nordlys_tests::NatsServer::start();
    let backend = open(&nats).await;
    backend
        .create_project(&acme(), "", project("before", ACME))
        .await
        .expect("create");
    nats.restart();
    // Written by another client once the server is back: the index must
    // pick it up through its resumed watch.
    let other = open(&nats).await;
    other
        .create_project(&acme(), "", project("after", ACME))
        .await
        .expect("create");
    other
        .delete_project(&acme(), "projects/before")
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match backend.list_projects(&all(10)).await {
            Ok(page) if names(&page) == ["projects/after"] => break,
            // Stale answers are a bug: a list waits for the index.
            Ok(page) => panic!("a stale list after the restart: {:?}", names(&page)),
            // UNAVAILABLE while reconnecting is fine.
            Err(e) => {
                assert!(
                    matches!(e, BackendError::Unavailable(_)),
                    "unexpected error {e:?}"
                );
                assert!(Instant::now() < deadline, "never caught up: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
