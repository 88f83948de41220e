//! The quota reconciler against real regions: a network removed behind
//! Nordlys's back (as when someone deletes it in Neutron directly) leaves
//! usage above what exists; `ReconcileQuotas` reports it, corrects it unless
//! asked only to report, and names resources that lost their parent.

use std::process::Command;

use async_nats::jetstream;
use bytes::Bytes;
use nordlys_proto::pb::nordlys::v1::{
    network_service_client::NetworkServiceClient, quota_service_client::QuotaServiceClient,
    CreateNetworkRequest, Network, ReconcileQuotasRequest, ReconcileQuotasResponse,
};
use nordlys_tests::{bearer, bin_path, Stack, StackOpts, OPERATOR_KEY};
use prost::Message;

/// What the kv backend stores under a resource's key (regiond's
/// `backend::kv::Record`).
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(string, tag = "1")]
    organization: String,
    #[prost(string, tag = "2")]
    request: String,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

async fn reconcile(
    stack: &Stack,
    organization: &str,
    validate_only: bool,
) -> ReconcileQuotasResponse {
    let mut request = bearer(
        ReconcileQuotasRequest {
            organization: organization.to_string(),
            validate_only,
        },
        OPERATOR_KEY,
    );
    request.set_timeout(std::time::Duration::from_secs(30));
    QuotaServiceClient::new(stack.channel().await)
        .reconcile_quotas(request)
        .await
        .expect("ReconcileQuotas")
        .into_inner()
}

/// Project `web` in sto1 with network `backend`.
async fn web_with_backend(stack: &Stack, key: &str) {
    stack
        .create_project(key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    NetworkServiceClient::new(stack.channel().await)
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network_id: "backend".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.3.0.0/24".into(),
                    ..Default::default()
                }),
                request_id: "net-1".into(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork");
}

#[tokio::test]
async fn drift_is_reported_then_corrected_and_orphans_named() {
    let stack = Stack::start_with(StackOpts {
        sto1_instances: 1,
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    web_with_backend(&stack, key).await;
    let usage = |q: nordlys_proto::pb::nordlys::v1::Quota| q.usage.unwrap_or_default();
    assert_eq!(
        usage(stack.quota(key, &tenant.organization, "sto1").await).networks,
        1
    );

    // Nothing differs yet.
    let clean = reconcile(&stack, &tenant.organization, true).await;
    assert!(clean.drifts.is_empty(), "{clean:?}");
    assert!(clean.checked >= 1, "{clean:?}");

    // The network goes behind Nordlys's back.
    let client = async_nats::connect(stack.nats.url()).await.expect("nats");
    let kv = jetstream::new(client)
        .get_key_value("nordlys-regiond-sto1")
        .await
        .expect("the region's bucket");
    kv.delete("n.projects/web/networks/backend")
        .await
        .expect("delete the record");

    // Reported, not corrected, when only asked to report.
    let seen = reconcile(&stack, &tenant.organization, true).await;
    assert_eq!(seen.drifts.len(), 1, "{seen:?}");
    let drift = &seen.drifts[0];
    assert_eq!(drift.quota, format!("{}/quotas/sto1", tenant.organization));
    assert_eq!(drift.usage.unwrap_or_default().networks, 1);
    assert_eq!(drift.existing.unwrap_or_default().networks, 0);
    assert!(!drift.corrected);
    assert_eq!(
        usage(stack.quota(key, &tenant.organization, "sto1").await).networks,
        1
    );

    // The same through nordlysctl, as an operator runs it.
    let out = Command::new(bin_path("nordlysctl"))
        .args([
            "--endpoint",
            &format!("http://{}", stack.gateway.addr()),
            "quota",
            "reconcile",
            "--org",
            "acme",
            "--dry-run",
        ])
        .env("NORDLYS_API_KEY", OPERATOR_KEY)
        .output()
        .expect("run nordlysctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("organizations/acme/quotas/sto1") && text.contains("networks"),
        "{text}"
    );

    // Corrected.
    let fixed = reconcile(&stack, &tenant.organization, false).await;
    assert_eq!(fixed.drifts.len(), 1, "{fixed:?}");
    assert!(fixed.drifts[0].corrected, "{fixed:?}");
    assert_eq!(
        usage(stack.quota(key, &tenant.organization, "sto1").await).networks,
        0
    );
    let after = reconcile(&stack, &tenant.organization, true).await;
    assert!(after.drifts.is_empty(), "{after:?}");
    // The quota service counted the one correction.
    let metrics = metrics_text(stack.quota.metrics_addr()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "nordlys_quota_reconcile_corrections_total 1"),
        "{metrics}"
    );

    // A network whose project is gone is named as an orphan.
    let ghost = Network {
        name: "projects/ghost/networks/lost".into(),
        region: "sto1".into(),
        cidr: "10.4.0.0/24".into(),
        ..Default::default()
    };
    let record = Record {
        organization: tenant.organization.clone(),
        request: String::new(),
        value: ghost.encode_to_vec(),
    };
    kv.put(
        "n.projects/ghost/networks/lost",
        Bytes::from(record.encode_to_vec()),
    )
    .await
    .expect("put the orphan");
    let orphaned = reconcile(&stack, &tenant.organization, true).await;
    assert!(
        orphaned
            .orphans
            .iter()
            .any(|o| o.contains("projects/ghost/networks/lost")),
        "{orphaned:?}"
    );

    // A member may not reconcile.
    let refused = QuotaServiceClient::new(stack.channel().await)
        .reconcile_quotas(bearer(ReconcileQuotasRequest::default(), key))
        .await
        .expect_err("operators only");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_region_that_removes_orphans_gives_their_quota_back() {
    let stack = Stack::start_with(StackOpts {
        sto1_instances: 1,
        regiond_env: vec![("NORDLYS_REMOVE_ORPHANS".into(), "true".into())],
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    web_with_backend(&stack, key).await;
    // The project goes behind Nordlys's back, its network stays: an orphan.
    let client = async_nats::connect(stack.nats.url()).await.expect("nats");
    let kv = jetstream::new(client)
        .get_key_value("nordlys-regiond-sto1")
        .await
        .expect("the region's bucket");
    kv.delete("p.projects/web")
        .await
        .expect("delete the project");

    let answer = reconcile(&stack, &tenant.organization, false).await;
    assert_eq!(
        answer.orphans,
        ["projects/web/networks/backend"],
        "{answer:?}"
    );
    assert!(
        kv.get("n.projects/web/networks/backend")
            .await
            .expect("get")
            .is_none(),
        "the orphan is gone"
    );
    // Its network was given back by its removal, the project by the
    // correction: usage says nothing exists.
    let usage = stack
        .quota(key, &tenant.organization, "sto1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!((usage.projects, usage.networks), (0, 0), "{answer:?}");
}

/// `GET /metrics` of a daemon, as text.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
