//! The reference topology (deploy/): a three-node JetStream cluster, a
//! leaf node per region, each service logging in with its own nkey and
//! limited to its own subjects and buckets.

use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    event_service_client::EventServiceClient, project_service_client::ProjectServiceClient,
    GetProjectRequest, ListEventsRequest,
};
use nordlys_tests::bearer;
use nordlys_tests::cluster::{deploy_dir, ClusterStack, NatsCluster};
use nordlys_transport::permissions;
use tokio::sync::mpsc;

/// The generated files of deploy/nats are what the code renders.
#[test]
fn deploy_files_follow_the_code() {
    let dir = deploy_dir().join("nats");
    for (name, text) in permissions::server_files("nordlys-quota", &["sto1", "osl1"], "hub") {
        let shipped = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("deploy/nats/{name}: {e}"));
        assert_eq!(
            shipped, text,
            "deploy/nats/{name} is stale: run `nordlysctl nats config --regions sto1,osl1 --out deploy/nats`"
        );
    }
}

/// A client that reports the errors the server sends it (NATS refuses a
/// publish or subscription asynchronously).
async fn client_as(
    url: &str,
    cluster: &NatsCluster,
    seed: Option<String>,
) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
    // Both rustls providers are in a workspace build: name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut options = match seed {
        Some(seed) => async_nats::ConnectOptions::with_nkey(seed),
        None => async_nats::ConnectOptions::new(),
    };
    options = options
        .add_root_certificates(cluster.ca.ca.clone())
        .require_tls(true)
        .max_reconnects(Some(1))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.to_string());
            }
        });
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|u| u.parse().expect("a server URL"))
        .collect();
    let client = options.connect(servers).await?;
    Ok((client, rx))
}

fn seed_of(cluster: &NatsCluster, user: &str) -> String {
    std::fs::read_to_string(cluster.seed_file(user))
        .expect("seed")
        .trim()
        .to_string()
}

/// Waits for the server's permission refusal among `events`.
async fn refused(events: &mut mpsc::UnboundedReceiver<String>, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if event.contains("Permissions Violation") => return,
            Ok(Some(_)) => continue,
            _ => panic!("no permissions violation for {what}"),
        }
    }
}

#[tokio::test]
async fn services_work_through_the_cluster_and_strangers_cannot_reach_them() {
    let stack = ClusterStack::start().await;
    let tenant = stack.gateway.tenant("acme").await;
    stack
        .gateway
        .create_project(&tenant.key, "web", &["sto1", "osl1"])
        .await
        .expect("create through the cluster");
    let mut projects = ProjectServiceClient::new(stack.gateway.channel().await);
    let project = projects
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/web".to_string(),
            },
            &tenant.key,
        ))
        .await
        .expect("read through the cluster")
        .into_inner();
    assert_eq!(project.regions.len(), 2, "{project:?}");
    // The gateway's permissions cover the audit stream (three replicas).
    let events = EventServiceClient::new(stack.gateway.channel().await)
        .list_events(bearer(ListEventsRequest::default(), &tenant.key))
        .await
        .expect("the audit log through the cluster")
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.r#type == "io.nordlys.v1.project.created" && e.subject == "projects/web"),
        "{events:?}"
    );
    let cluster = &stack.cluster;

    // No credentials, or a key the servers do not know: not let in, on the
    // hub nor on a leaf.
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    for url in [cluster.hub_url(), cluster.leaf_url("sto1")] {
        for seed in [None, Some(stranger.clone())] {
            let refused = client_as(&url, cluster, seed.clone()).await;
            assert!(
                refused.is_err(),
                "{url} let in {}",
                if seed.is_some() {
                    "an unknown key"
                } else {
                    "no credentials"
                }
            );
        }
    }

    // The forged call of a region's own daemon: osl1's key cannot ask sto1
    // as the gateway, nor listen to sto1's calls, nor read the quota bucket.
    let (osl1, mut events) = client_as(
        &cluster.leaf_url("osl1"),
        cluster,
        Some(seed_of(cluster, "regiond-osl1")),
    )
    .await
    .expect("osl1's daemon's key is let in");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("nordlys-caller", "operator;;operator");
    let forged = tokio::time::timeout(
        Duration::from_secs(2),
        osl1.request_with_headers(
            "nordlys.v1.sto1.RegiondService.GetProject",
            headers,
            bytes::Bytes::new(),
        ),
    )
    .await;
    assert!(
        !matches!(forged, Ok(Ok(_))),
        "osl1's key got an answer from sto1"
    );
    refused(&mut events, "osl1 publishing to sto1").await;
    let _sub = osl1
        .subscribe("nordlys.v1.sto1.RegiondService.>")
        .await
        .expect("subscribe is sent");
    refused(&mut events, "osl1 listening to sto1").await;
    let js = async_nats::jetstream::with_domain(osl1.clone(), "hub");
    let read =
        tokio::time::timeout(Duration::from_secs(3), js.get_key_value("nordlys-quota")).await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "osl1's key opened the quota bucket"
    );

    // The quota service's key cannot call a region's methods other than
    // counting, and the gateway's cannot listen to calls.
    let (quota, mut events) =
        client_as(&cluster.hub_url(), cluster, Some(seed_of(cluster, "quota")))
            .await
            .expect("quota's key is let in");
    let _ = quota
        .publish("nordlys.v1.sto1.RegiondService.DeleteProject", "x".into())
        .await;
    refused(&mut events, "quota publishing DeleteProject").await;
    let (gateway, mut events) = client_as(
        &cluster.hub_url(),
        cluster,
        Some(seed_of(cluster, "gateway")),
    )
    .await
    .expect("the gateway's key is let in");
    let _sub = gateway
        .subscribe("nordlys.quota.v1.QuotaController.>")
        .await
        .expect("subscribe is sent");
    refused(&mut events, "the gateway listening to quota calls").await;
    let js = async_nats::jetstream::new(gateway.clone());
    let read =
        tokio::time::timeout(Duration::from_secs(3), js.get_key_value("nordlys-quota")).await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "the gateway's key opened the quota bucket"
    );
}

/// Every variable the shipped server configurations read is set by the
/// example environment files or by `nordlysctl nats keygen`'s nats.env.
#[test]
fn deploy_configs_read_only_documented_variables() {
    let dir = deploy_dir().join("nats");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("deploy/nats/{name}: {e}"))
    };
    let variables = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split('$').skip(1))
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect::<String>()
            })
            .filter(|v| v.starts_with("NORDLYS_"))
            .collect()
    };
    let generated: Vec<String> = permissions::hub_users("nordlys-quota", &[])
        .iter()
        .chain(&[
            permissions::regiond("sto1", permissions::JetStreamApi::Local),
            permissions::regiond("osl1", permissions::JetStreamApi::Local),
        ])
        .map(|u| u.nkey_variable())
        .chain(["sto1", "osl1"].map(permissions::leaf_password_variable))
        .collect();
    for (config, example) in [
        ("hub.conf", "node.env.example"),
        ("leaf.conf", "leaf.env.example"),
    ] {
        let example = read(example);
        let mut needed = variables(&read(config));
        for (name, text) in permissions::server_files("nordlys-quota", &["sto1", "osl1"], "hub") {
            // The hub includes accounts.conf and leaf-users.conf; a leaf,
            // its region's leaf-accounts file.
            let leaf_file = name.starts_with("leaf-accounts");
            if (config == "leaf.conf") == leaf_file {
                needed.extend(variables(&text));
            }
        }
        for variable in needed {
            assert!(
                example.contains(&format!("{variable}=")) || generated.contains(&variable),
                "{config} reads ${variable}, which no example environment sets"
            );
        }
    }
}
