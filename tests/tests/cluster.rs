//! The reference topology (deploy/): a three-node JetStream cluster, a
//! leaf node per region, each service logging in with its own nkey and
//! limited to its own subjects and buckets.

use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    event_service_client::EventServiceClient, project_service_client::ProjectServiceClient,
    GetProjectRequest, ListEventsRequest,
};
use nordlys_tests::cluster::{deploy_dir, ClusterStack, NatsCluster};
use nordlys_tests::{bearer, free_port};
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
    let options = match seed {
        Some(seed) => async_nats::ConnectOptions::with_nkey(seed),
        None => async_nats::ConnectOptions::new(),
    };
    connect(url, cluster, options).await
}

/// Like [`client_as`], logging in with `options`' credentials.
async fn connect(
    url: &str,
    cluster: &NatsCluster,
    options: async_nats::ConnectOptions,
) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
    // Both rustls providers are in a workspace build: name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, rx) = mpsc::unbounded_channel();
    let options = options
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

/// Waits for the server's refusal of `subject` among `events` (earlier
/// refusals of other subjects may still be queued).
async fn refused_on(events: &mut mpsc::UnboundedReceiver<String>, subject: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event))
                if event.contains("Permissions Violation")
                    && event.contains(&format!("\"{subject}\"")) =>
            {
                return
            }
            Ok(Some(event)) => seen.push(event),
            _ => panic!("no permissions violation on {subject} for {what}; saw {seen:?}"),
        }
    }
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
    // Every bucket and stream of the services at three replicas, as the
    // reference settings ask: quota's, each region's records, settle notes
    // and deleted request ids, and the audit stream.
    let streams = stack.cluster.stream_replicas(0);
    for want in [
        "KV_nordlys-quota",
        "KV_nordlys-quota-ops",
        "KV_nordlys-regiond-sto1",
        "KV_nordlys-regiond-osl1",
        "KV_nordlys-settle-sto1",
        "KV_nordlys-settle-osl1",
        "KV_nordlys-gone-sto1",
        "KV_nordlys-gone-osl1",
        "NORDLYS_EVENTS",
    ] {
        assert!(
            streams.iter().any(|(name, _)| name == want),
            "{want} missing: {streams:?}"
        );
    }
    assert!(
        streams.iter().all(|(_, replicas)| *replicas == 3),
        "every stream at three replicas: {streams:?}"
    );
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

    // With nkeys and mesh TLS nothing warns of missing credentials or of a
    // plaintext direct route (the public listeners have no [tls] here).
    for (log, warnings) in [
        (stack.quota.log_path(), &["INSECURE"][..]),
        (stack.sto1.log_path(), &["INSECURE", "PLAINTEXT"][..]),
        (stack.osl1.log_path(), &["INSECURE", "PLAINTEXT"][..]),
        (
            stack.gateway.log_path(),
            &["INSECURE", "direct gRPC to regiond is PLAINTEXT"][..],
        ),
    ] {
        let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains(" INFO "), "{}: not the log", log.display());
        for warning in warnings {
            assert!(!text.contains(warning), "{}: {warning}", log.display());
        }
    }

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
    // With the inbox prefix its permissions allow, as the daemon has: what
    // is refused below is refused for its subject.
    let inbox = permissions::regiond("osl1", permissions::JetStreamApi::Domain("hub")).inbox_prefix;
    let (osl1, mut events) = connect(
        &cluster.leaf_url("osl1"),
        cluster,
        async_nats::ConnectOptions::with_nkey(seed_of(cluster, "regiond-osl1"))
            .custom_inbox_prefix(inbox),
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
    // Its own bucket opens: what follows is refused for the key, not for
    // the route to the hub's JetStream.
    js.get_key_value("nordlys-regiond-osl1")
        .await
        .expect("osl1's key opens osl1's bucket");
    // Nor start quota's reservations (only the gateway reserves).
    let _ = osl1
        .publish("nordlys.quota.v1.QuotaController.Reserve", "x".into())
        .await;
    refused_on(
        &mut events,
        "nordlys.quota.v1.QuotaController.Reserve",
        "osl1 reserving quota",
    )
    .await;
    // Nor read sto1's records, through the bucket or a direct get.
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        js.get_key_value("nordlys-regiond-sto1"),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "osl1's key opened sto1's bucket"
    );
    refused_on(
        &mut events,
        "$JS.hub.API.STREAM.INFO.KV_nordlys-regiond-sto1",
        "osl1 opening sto1's bucket",
    )
    .await;
    let _ = osl1
        .publish(
            "$JS.hub.API.DIRECT.GET.KV_nordlys-regiond-sto1",
            "{\"last_by_subj\":\"$KV.nordlys-regiond-sto1.x\"}".into(),
        )
        .await;
    refused_on(
        &mut events,
        "$JS.hub.API.DIRECT.GET.KV_nordlys-regiond-sto1",
        "osl1 reading sto1's bucket directly",
    )
    .await;

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

    // A password that is not the leaf's: no client login with it...
    for url in [cluster.hub_url(), cluster.leaf_url("sto1")] {
        let options = async_nats::ConnectOptions::with_user_and_password(
            "leaf-sto1".to_string(),
            "not-the-password".to_string(),
        );
        assert!(
            connect(&url, cluster, options).await.is_err(),
            "{url} let in a wrong password"
        );
    }
    // ...and a leaf node that offers it is not linked to the hub.
    let rogue = RogueLeaf::start(cluster, "sto1", "not-the-password");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        // The TLS connection is made ("Leafnode connection created"); the
        // hub then refuses the login.
        let log = std::fs::read_to_string(&rogue.log).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("Leafnode Error") && l.contains("Authorization Violation"))
        {
            break line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub did not refuse the leaf's password within 10 s:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the hub refused a leaf with a wrong password: {refusal}");
    let linked: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            let leafz = node.monitor("/leafz").expect("/leafz");
            serde_json::from_str::<serde_json::Value>(&leafz).expect("JSON")["leafnodes"]
                .as_u64()
                .expect("a count")
        })
        .sum();
    assert_eq!(linked, 2, "only sto1's and osl1's own leaves are linked");
}

/// A leaf node of `region` on the shipped leaf.conf, logging in to the
/// hub's leaf ports with `password`.
struct RogueLeaf {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RogueLeaf {
    fn start(cluster: &NatsCluster, region: &str, password: &str) -> RogueLeaf {
        let dir = tempfile::tempdir().expect("a temp dir");
        let shipped = deploy_dir().join("nats");
        std::fs::copy(shipped.join("leaf.conf"), dir.path().join("leaf.conf")).expect("leaf.conf");
        std::fs::copy(
            shipped.join(format!("leaf-accounts-{region}.conf")),
            dir.path().join("leaf-accounts.conf"),
        )
        .expect("the region's leaf accounts");
        let name = format!("rogue-{region}");
        let (cert, key) = cluster.ca.issue(&name);
        let daemon = permissions::regiond(region, permissions::JetStreamApi::Domain("hub"));
        let mut env = vec![
            ("NORDLYS_LEAF_NAME".to_string(), name),
            (
                "NORDLYS_LEAF_LISTEN".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "NORDLYS_LEAF_MONITOR".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
            ("NORDLYS_LEAF_CERT".to_string(), cert.display().to_string()),
            ("NORDLYS_LEAF_KEY".to_string(), key.display().to_string()),
            (
                "NORDLYS_NATS_CA".to_string(),
                cluster.ca.ca.display().to_string(),
            ),
            (
                daemon.nkey_variable(),
                nkeys::KeyPair::new_user().public_key(),
            ),
        ];
        for (i, node) in cluster.nodes.iter().enumerate() {
            // The node's leaf port, as its monitoring port reports it.
            let varz = node.monitor("/varz").expect("/varz");
            let port = serde_json::from_str::<serde_json::Value>(&varz).expect("JSON")["leaf"]
                ["port"]
                .as_u64()
                .expect("a leaf port");
            env.push((
                format!("NORDLYS_HUB_URL_{}", i + 1),
                format!("nats-leaf://leaf-{region}:{password}@127.0.0.1:{port}"),
            ));
        }
        let log = dir.path().join("rogue.log");
        let child = std::process::Command::new(nats_server())
            .arg("-c")
            .arg(dir.path().join("leaf.conf"))
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log"))
            .spawn()
            .expect("nats-server starts");
        RogueLeaf {
            child,
            log,
            _dir: dir,
        }
    }
}

impl Drop for RogueLeaf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server on PATH or in /usr/sbin")
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
