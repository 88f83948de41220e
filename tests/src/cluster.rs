//! The reference NATS topology on loopback: three JetStream nodes (domain
//! `hub`, TLS, routes that prove themselves with the mesh CA), one leaf node
//! per region, every Nordlys service logging in with its own nkey.
//!
//! The servers run the files of `deploy/nats/` (hub.conf and leaf.conf as
//! shipped; the generated accounts files rendered here by the same code as
//! `nordlysctl nats config`), so the reference deployment is what the tests
//! exercise.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nordlys_transport::permissions;
use tempfile::TempDir;

use crate::{find_nats_server, log_tail, terminate_child};

/// How long a node may take to report healthy.
const NODE_READY: Duration = Duration::from_secs(30);

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("deploy"))
        .unwrap_or_else(|| PathBuf::from("deploy"))
}

/// A CA and certificates it signed, as PEM files in a directory.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate.
    pub ca: PathBuf,
    dir: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/{name}-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA cert: {e}"));
        let ca = dir.join(format!("{name}-ca.pem"));
        write(&ca, &cert.pem());
        TestCa {
            ca,
            dir: dir.to_path_buf(),
            params,
            key,
        }
    }

    /// A certificate for 127.0.0.1 and localhost usable by servers and
    /// clients (NATS routes are both), as (cert, key) files named `name`.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap_or_else(|e| panic!("cert params: {e}"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("cert {name}: {e}"));
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}.key"));
        write(&cert_path, &cert.pem());
        write(&key_path, &key.serialize_pem());
        (cert_path, key_path)
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// One nats-server of the topology: a hub node or a region's leaf.
#[derive(Debug)]
pub struct NatsNode {
    /// `n1`, `n2`, `n3`, `leaf-sto1`.
    pub name: String,
    config: PathBuf,
    env: Vec<(String, String)>,
    /// The client port.
    pub client_port: u16,
    /// The monitoring port (`/healthz`, `/jsz`, `/leafz`).
    pub monitor_port: u16,
    log: PathBuf,
    child: Option<Child>,
    binary: PathBuf,
}

impl NatsNode {
    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&self.config)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Waits until the monitoring endpoint `path` answers 200.
    fn wait_for(&mut self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match http_get(self.monitor_port, path) {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = e,
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited with {status}\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} not ready ({path}) within {timeout:?}: {last}\n{}",
            self.name,
            log_tail(&self.log)
        );
    }

    /// The monitoring endpoint `path`'s body (e.g. `/leafz`).
    pub fn monitor(&self, path: &str) -> Result<String, String> {
        http_get(self.monitor_port, path).map(|(_, body)| body)
    }

    /// SIGKILL: no goodbye to the cluster, as a crashed machine.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, waiting for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child, Duration::from_secs(10));
        }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- {} log tail\n{}", self.name, log_tail(&self.log));
        }
    }
}

/// A status code and body from a loopback monitoring port (HTTP/1.0, so the
/// server closes the connection after the body).
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The three hub nodes, a leaf per region, the keys of every service.
#[derive(Debug)]
pub struct NatsCluster {
    /// The hub nodes, `n1`..`n3`.
    pub nodes: Vec<NatsNode>,
    /// The leaf node of each region.
    pub leaves: BTreeMap<String, NatsNode>,
    /// The mesh CA (servers' certificates, routes).
    pub ca: TestCa,
    keys: PathBuf,
    seeds: BTreeMap<String, String>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts the hub and a leaf for each of `regions`; returns once every
    /// node is healthy and every leaf is linked.
    pub fn start(regions: &[&str]) -> NatsCluster {
        let binary = find_nats_server();
        let dir = tempfile::Builder::new()
            .prefix("nordlys-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let root = dir.path().to_path_buf();
        let certs = root.join("tls");
        let keys = root.join("keys");
        for d in [&certs, &keys] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        }
        let ca = TestCa::new(&certs, "mesh");
        let (server_cert, server_key) = ca.issue("nats-server");

        // Keys: an nkey per service, a password per leaf.
        let mut users = permissions::hub_users("nordlys-quota", &[]);
        users.extend(
            regions
                .iter()
                .map(|r| permissions::regiond(r, permissions::JetStreamApi::Domain("hub"))),
        );
        let mut secrets: Vec<(String, String)> = Vec::new();
        let mut seeds = BTreeMap::new();
        for user in &users {
            let pair = nkeys::KeyPair::new_user();
            let seed = pair.seed().unwrap_or_else(|e| panic!("nkey seed: {e}"));
            let path = keys.join(format!("{}.nk", user.name));
            write(&path, &format!("{seed}\n"));
            seeds.insert(user.name.clone(), path.display().to_string());
            secrets.push((user.nkey_variable(), pair.public_key()));
        }
        let mut leaf_passwords = BTreeMap::new();
        for region in regions {
            let password = format!("leaf-{region}-{}", crate::free_port());
            secrets.push((
                permissions::leaf_password_variable(region),
                password.clone(),
            ));
            leaf_passwords.insert(region.to_string(), password);
        }

        // The configuration files: as shipped, plus the generated ones.
        let nats_dir = root.join("nats");
        fs::create_dir_all(&nats_dir).unwrap_or_else(|e| panic!("{e}"));
        let shipped = deploy_dir().join("nats");
        for name in ["hub.conf", "leaf.conf"] {
            fs::copy(shipped.join(name), nats_dir.join(name))
                .unwrap_or_else(|e| panic!("cannot copy deploy/nats/{name}: {e}"));
        }
        let generated = permissions::server_files("nordlys-quota", regions, "hub");
        for (name, text) in &generated {
            write(&nats_dir.join(name), text);
        }

        let ports: Vec<[u16; 4]> = (0..3)
            .map(|_| {
                [
                    crate::free_port(),
                    crate::free_port(),
                    crate::free_port(),
                    crate::free_port(),
                ]
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, [client, cluster, leaf, monitor]) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mut env = vec![
                ("NORDLYS_NATS_NAME".to_string(), name.clone()),
                (
                    "NORDLYS_NATS_LISTEN".to_string(),
                    format!("127.0.0.1:{client}"),
                ),
                (
                    "NORDLYS_NATS_MONITOR".to_string(),
                    format!("127.0.0.1:{monitor}"),
                ),
                (
                    "NORDLYS_NATS_STORE".to_string(),
                    root.join(&name).join("store").display().to_string(),
                ),
                (
                    "NORDLYS_NATS_CLUSTER_LISTEN".to_string(),
                    format!("127.0.0.1:{cluster}"),
                ),
                (
                    "NORDLYS_NATS_LEAF_LISTEN".to_string(),
                    format!("127.0.0.1:{leaf}"),
                ),
                (
                    "NORDLYS_NATS_CERT".to_string(),
                    server_cert.display().to_string(),
                ),
                (
                    "NORDLYS_NATS_KEY".to_string(),
                    server_key.display().to_string(),
                ),
                ("NORDLYS_NATS_CA".to_string(), ca.ca.display().to_string()),
            ];
            for (j, ports) in ports.iter().enumerate() {
                env.push((
                    format!("NORDLYS_NATS_ROUTE_{}", j + 1),
                    format!("nats-route://127.0.0.1:{}", ports[1]),
                ));
            }
            env.extend(secrets.iter().cloned());
            nodes.push(NatsNode {
                log: root.join(format!("{name}.log")),
                name,
                config: nats_dir.join("hub.conf"),
                env,
                client_port: *client,
                monitor_port: *monitor,
                child: None,
                binary: binary.clone(),
            });
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_for("/healthz", NODE_READY);
        }

        let mut leaves = BTreeMap::new();
        for region in regions {
            let name = format!("leaf-{region}");
            let leaf_dir = root.join(&name);
            fs::create_dir_all(&leaf_dir).unwrap_or_else(|e| panic!("{e}"));
            fs::copy(nats_dir.join("leaf.conf"), leaf_dir.join("leaf.conf"))
                .unwrap_or_else(|e| panic!("{e}"));
            fs::copy(
                nats_dir.join(format!("leaf-accounts-{region}.conf")),
                leaf_dir.join("leaf-accounts.conf"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let (cert, key) = ca.issue(&name);
            let (client, monitor) = (crate::free_port(), crate::free_port());
            let mut env = vec![
                ("NORDLYS_LEAF_NAME".to_string(), name.clone()),
                (
                    "NORDLYS_LEAF_LISTEN".to_string(),
                    format!("127.0.0.1:{client}"),
                ),
                (
                    "NORDLYS_LEAF_MONITOR".to_string(),
                    format!("127.0.0.1:{monitor}"),
                ),
                ("NORDLYS_LEAF_CERT".to_string(), cert.display().to_string()),
                ("NORDLYS_LEAF_KEY".to_string(), key.display().to_string()),
                ("NORDLYS_NATS_CA".to_string(), ca.ca.display().to_string()),
            ];
            for (j, ports) in ports.iter().enumerate() {
                env.push((
                    format!("NORDLYS_HUB_URL_{}", j + 1),
                    format!(
                        "nats-leaf://leaf-{region}:{}@127.0.0.1:{}",
                        leaf_passwords[*region], ports[2]
                    ),
                ));
            }
            env.extend(secrets.iter().cloned());
            let mut node = NatsNode {
                log: root.join(format!("{name}.log")),
                name,
                config: leaf_dir.join("leaf.conf"),
                env,
                client_port: client,
                monitor_port: monitor,
                child: None,
                binary: binary.clone(),
            };
            node.spawn();
            leaves.insert(region.to_string(), node);
        }
        let mut cluster = NatsCluster {
            nodes,
            leaves,
            ca,
            keys,
            seeds,
            dir,
        };
        for region in regions {
            cluster.wait_leaf_linked(region);
        }
        cluster
    }

    /// Waits until `region`'s leaf node is linked to the hub.
    pub fn wait_leaf_linked(&mut self, region: &str) {
        let leaf = self
            .leaves
            .get_mut(region)
            .unwrap_or_else(|| panic!("no leaf for {region}"));
        leaf.wait_for("/healthz", NODE_READY);
        let deadline = Instant::now() + NODE_READY;
        while Instant::now() < deadline {
            if let Ok(body) = leaf.monitor("/leafz") {
                if body.contains("\"leafnodes\": 1") {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "leaf of {region} not linked within {NODE_READY:?}\n{}",
            log_tail(leaf.log_path())
        );
    }

    /// The hub's seed URLs, comma-separated (TLS).
    pub fn hub_url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("tls://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The URL of `region`'s leaf node (TLS).
    pub fn leaf_url(&self, region: &str) -> String {
        let leaf = self
            .leaves
            .get(region)
            .unwrap_or_else(|| panic!("no leaf for {region}"));
        format!("tls://127.0.0.1:{}", leaf.client_port)
    }

    /// The nkey seed file of `user` (`gateway`, `quota`, `regiond-sto1`).
    pub fn seed_file(&self, user: &str) -> &str {
        self.seeds
            .get(user)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no key for {user}"))
    }

    /// The `[mesh_tls]` environment of the gateway or a regiond: a
    /// certificate of the mesh CA for the direct gRPC route.
    pub fn mesh_tls_env(&self, name: &str) -> Vec<(String, String)> {
        let (cert, key) = self.ca.issue(&format!("mesh-{name}"));
        vec![
            (
                "NORDLYS_MESH_TLS__CA_FILE".to_string(),
                self.ca.ca.display().to_string(),
            ),
            (
                "NORDLYS_MESH_TLS__CERT_FILE".to_string(),
                cert.display().to_string(),
            ),
            (
                "NORDLYS_MESH_TLS__KEY_FILE".to_string(),
                key.display().to_string(),
            ),
        ]
    }

    /// The environment that makes a Nordlys service log in as `user`, over
    /// TLS, with bucket replicas 3 (and, for a region's daemons, the hub's
    /// JetStream domain). The inbox prefix is each service's default.
    pub fn service_env(&self, user: &str) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "NORDLYS_NATS__NKEY_FILE".to_string(),
                self.seed_file(user).to_string(),
            ),
            (
                "NORDLYS_NATS__CA_FILE".to_string(),
                self.ca.ca.display().to_string(),
            ),
            ("NORDLYS_NATS__REPLICAS".to_string(), "3".to_string()),
        ];
        if user.starts_with("regiond-") {
            env.push((
                "NORDLYS_NATS__JETSTREAM_DOMAIN".to_string(),
                "hub".to_string(),
            ));
        }
        env
    }

    /// The scratch directory (keys, certificates, stores, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the services' key files.
    pub fn keys_dir(&self) -> &Path {
        &self.keys
    }

    /// Kills hub node `index` (0-based) with SIGKILL.
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts hub node `index` again on its store; waits until healthy
    /// (caught up with the cluster's streams).
    pub fn restart_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.spawn();
        node.wait_for("/healthz", Duration::from_secs(60));
    }

    /// What hub node `index` reports of its copy of stream `stream`
    /// (`/jsz`'s stream detail; `None` when the node is down or does not
    /// hold the stream).
    fn stream_detail(&self, index: usize, stream: &str) -> Option<serde_json::Value> {
        let node = self.nodes.get(index).filter(|n| n.is_running())?;
        let body = node.monitor("/jsz?accounts=true&streams=true").ok()?;
        let jsz = serde_json::from_str::<serde_json::Value>(&body).ok()?;
        let detail = jsz["account_details"]
            .as_array()?
            .iter()
            .filter_map(|account| account["stream_detail"].as_array())
            .flatten()
            .find(|detail| detail["name"] == stream)
            .cloned();
        detail
    }

    /// Every stream hub node `index` knows, with its configured replicas
    /// (`/jsz` with stream configs); empty when the node is down.
    pub fn stream_replicas(&self, index: usize) -> Vec<(String, u64)> {
        let Some(node) = self.nodes.get(index).filter(|n| n.is_running()) else {
            return Vec::new();
        };
        let Ok(body) = node.monitor("/jsz?accounts=true&streams=true&config=true") else {
            return Vec::new();
        };
        let jsz = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default();
        let mut streams: Vec<(String, u64)> = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|account| account["stream_detail"].as_array())
            .flatten()
            .filter_map(|detail| {
                Some((
                    detail["name"].as_str()?.to_string(),
                    detail["config"]["num_replicas"].as_u64()?,
                ))
            })
            .collect();
        streams.sort();
        streams.dedup();
        streams
    }

    /// Stream `stream`'s last sequence in hub node `index`'s own copy.
    pub fn last_seq(&self, index: usize, stream: &str) -> Option<u64> {
        self.stream_detail(index, stream)?["state"]["last_seq"].as_u64()
    }

    /// Waits until every running hub node's copy of `stream` has the same
    /// last sequence (healthz alone does not compare contents).
    pub fn wait_caught_up(&self, stream: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seqs: Vec<Option<u64>> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].is_running())
                .map(|i| self.last_seq(i, stream))
                .collect();
            if seqs.iter().all(Option::is_some) && seqs.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{stream} not caught up on every node within {timeout:?}: {seqs:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the hub node leading stream `stream` (a bucket `b`'s
    /// stream is `KV_b`), as the running nodes report it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter_map(|i| self.stream_detail(i, stream))
            .find_map(|detail| detail["cluster"]["leader"].as_str().map(str::to_string))?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Stops `region`'s leaf node (SIGKILL).
    pub fn cut_leaf(&mut self, region: &str) {
        if let Some(leaf) = self.leaves.get_mut(region) {
            leaf.kill();
        }
    }

    /// Starts `region`'s leaf node again; waits until linked.
    pub fn restore_leaf(&mut self, region: &str) {
        if let Some(leaf) = self.leaves.get_mut(region) {
            leaf.spawn();
        }
        self.wait_leaf_linked(region);
    }
}

/// The whole of Nordlys on the reference topology: quota and the gateway
/// on the hub cluster, a kv-backed regiond for `sto1` and `osl1` on their
/// regions' leaf nodes, every bucket at three replicas, mutual TLS on the
/// direct route.
///
/// Fields drop in declaration order: the gateway stops first, NATS last.
#[derive(Debug)]
pub struct ClusterStack {
    /// The gateway (hub).
    pub gateway: crate::Gateway,
    /// `sto1`'s daemon (leaf `sto1`).
    pub sto1: crate::Regiond,
    /// `osl1`'s daemon (leaf `osl1`).
    pub osl1: crate::Regiond,
    /// The quota service (hub).
    pub quota: crate::Quota,
    /// The NATS servers.
    pub cluster: NatsCluster,
}

impl ClusterStack {
    /// Starts everything; returns once the gateway sees both regions.
    pub async fn start() -> ClusterStack {
        ClusterStack::start_with(&[]).await
    }

    /// Like [`ClusterStack::start`], with more gateway arguments.
    pub async fn start_with(gateway_args: &[&str]) -> ClusterStack {
        let cluster = NatsCluster::start(&["sto1", "osl1"]);
        // Reservations made without a TTL of their own lapse in 30 s rather
        // than the default 60 (the gateway's carry its own, 120 s).
        let quota = crate::Quota::start_at(
            &cluster.hub_url(),
            &[
                "--reconcile-interval-secs".to_string(),
                "0".to_string(),
                "--reservation-ttl".to_string(),
                "30".to_string(),
            ],
            &cluster.service_env("quota"),
        );
        let regiond = |region: &str| {
            let mut env = cluster.service_env(&format!("regiond-{region}"));
            env.extend(cluster.mesh_tls_env(&format!("regiond-{region}")));
            // Settle what a fault left behind in seconds, not the default 30.
            env.push(("NORDLYS_SETTLE_GRACE_MS".to_string(), "3000".to_string()));
            env.push(("NORDLYS_SETTLE_INTERVAL_MS".to_string(), "500".to_string()));
            crate::Regiond::start_at(
                &cluster.leaf_url(region),
                region,
                &["--backend".to_string(), "kv".to_string()],
                &env,
            )
        };
        let sto1 = regiond("sto1");
        let osl1 = regiond("osl1");
        let mut opts = crate::GatewayOpts::default();
        opts.args.extend(gateway_args.iter().map(|a| a.to_string()));
        let mut env = cluster.service_env("gateway");
        env.extend(cluster.mesh_tls_env("gateway"));
        let gateway = crate::Gateway::start_at(&cluster.hub_url(), &opts, &env);
        gateway
            .wait_for_regions(|regions| {
                crate::instances(regions, "sto1") == 1 && crate::instances(regions, "osl1") == 1
            })
            .await;
        ClusterStack {
            gateway,
            sto1,
            osl1,
            quota,
            cluster,
        }
    }
}
