//! A real Kubernetes control plane on loopback: etcd (Debian's
//! `etcd-server`), kube-apiserver and kube-controller-manager (built from
//! source by `scripts/build-kube`), with the flags controller-runtime's
//! envtest uses, TLS from a CA made per cluster and static bearer tokens.
//! The controller manager runs the namespace and resourcequota controllers
//! only: without the first, a deleted namespace stays `Terminating` forever.
//! With it, a delete takes a little over 5 s: the controller waits 5 s after
//! each namespace event before acting (`namespaceDeletionGracePeriod`).
//! etcd 3.4 lacks watch progress requests, so the apiserver serves
//! consistent lists from etcd rather than its cache (it logs this once).
//!
//! ```no_run
//! use nordlys_tests::kube;
//!
//! if !kube::available("my_test") {
//!     return; // binaries absent and NORDLYS_REQUIRE_KUBE unset
//! }
//! let cluster = kube::shared();
//! let out = cluster.kubectl(&["get", "namespaces", "-o", "name"]);
//! assert!(out.status.success());
//! // cluster.kubeconfig() is a kubeconfig for the `kube` crate's client.
//! ```
//!
//! Every daemon logs to a file in the cluster's temp dir, whose tail a
//! failed start panics with. Each also has a shell watchdog that kills it
//! when the test process is gone, so the [`shared`] cluster, which lives in
//! a `static` and is never dropped, leaves nothing behind.

use std::{
    fmt::Write as _,
    fs,
    io::Read,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{cluster::TestCa, free_port, log_tail};

/// Set (to anything) to make tests that need Kubernetes fail instead of
/// skip when etcd, kubectl or the Kubernetes binaries are missing.
pub const REQUIRE_ENV: &str = "NORDLYS_REQUIRE_KUBE";

/// A directory holding `kube-apiserver` and `kube-controller-manager`;
/// without it, `scripts/build-kube` is run (and builds them if needed).
pub const BIN_DIR_ENV: &str = "NORDLYS_KUBE_BIN_DIR";

/// The user of [`KubeCluster::kubeconfig`] (group `system:masters`).
pub const ADMIN_USER: &str = "nordlys-admin";

/// How long etcd, or the apiserver, may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

const ETCD: &str = "/usr/bin/etcd";
const KUBECTL: &str = "/usr/bin/kubectl";
const APISERVER: &str = "kube-apiserver";
const CONTROLLER_MANAGER: &str = "kube-controller-manager";
const CONTROLLER_MANAGER_USER: &str = "nordlys-controller-manager";

/// The directory of the Kubernetes binaries, or why there is none. Found
/// once per process: `scripts/build-kube` may build for many minutes.
fn bin_dir() -> Result<&'static Path, &'static str> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(find_bin_dir)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

fn find_bin_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-kube");
            // stderr passes through: a first build shows Go's progress.
            let out = Command::new(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}); set {BIN_DIR_ENV} to a directory with {APISERVER} and {CONTROLLER_MANAGER}",
                    script.display(),
                    out.status
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        }
    };
    for binary in [APISERVER, CONTROLLER_MANAGER] {
        if !dir.join(binary).is_file() {
            return Err(format!("no {binary} in {}", dir.display()));
        }
    }
    Ok(dir)
}

/// What is missing to run a cluster here, if anything.
fn missing() -> Option<String> {
    for (path, package) in [(ETCD, "etcd-server"), (KUBECTL, "kubectl")] {
        if !Path::new(path).is_file() {
            return Some(format!("{path} is not installed ({package})"));
        }
    }
    bin_dir().err().map(str::to_owned)
}

/// Whether a test that needs Kubernetes should run. Without etcd, kubectl
/// or the Kubernetes binaries (built by `scripts/build-kube` when Go is
/// there) it prints why it skips and returns false, unless [`REQUIRE_ENV`]
/// is set, when it panics instead.
pub fn available(test: &str) -> bool {
    let Some(reason) = missing() else {
        return true;
    };
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{test}: {REQUIRE_ENV} is set but {reason}");
    }
    eprintln!("SKIPPED {test}: {reason} (set {REQUIRE_ENV}=1 to fail instead)");
    false
}

/// A cluster shared by every test of the process, started on first use;
/// its daemons exit with the process.
pub fn shared() -> &'static KubeCluster {
    static CLUSTER: OnceLock<KubeCluster> = OnceLock::new();
    CLUSTER.get_or_init(KubeCluster::start)
}

/// One daemon, its log file, and the watchdog that kills it should the
/// test process go away without dropping it.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    watchdog: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program` with stdout and stderr appended to `log`. When the
    /// test process is gone, the watchdog kills it and removes `cleanup`.
    fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Daemon {
        let open = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()))
        };
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(open())
            .stderr(open())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        // Killed before its daemon on a normal stop, the watchdog only acts
        // once the test process has exited; until then nobody reaps the
        // daemon, so its pid cannot have gone to another process.
        let cleanup = cleanup.map(|p| p.display().to_string()).unwrap_or_default();
        let watchdog = Command::new("/bin/sh")
            .args([
                "-c",
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
                 kill -9 \"$2\" 2>/dev/null; \
                 if [ -n \"$3\" ]; then sleep 2; rm -rf \"$3\"; fi",
                "nordlys-kube-watchdog",
            ])
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(cleanup)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("no watchdog for {name}: {e}"))
            .ok();
        Daemon {
            name,
            child,
            watchdog,
            log: log.to_path_buf(),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics with the log's tail if the daemon has exited.
    fn check_running(&mut self, doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited with {status} {doing}; {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }

    /// SIGKILL, as a crash would; the listening ports are free once it
    /// has been reaped.
    fn kill(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd, kube-apiserver and kube-controller-manager on loopback, with a
/// kubeconfig for an admin user (group `system:masters`) that verifies the
/// apiserver's certificate against the cluster's own CA.
///
/// Fields drop in declaration order: the controller manager stops first,
/// then the apiserver, etcd, and last the temp dir.
#[derive(Debug)]
pub struct KubeCluster {
    controller_manager: Daemon,
    /// `None` while stopped by [`KubeCluster::stop_apiserver`]; behind a
    /// lock so the shared cluster can be stopped through a reference.
    apiserver: Mutex<Option<Daemon>>,
    etcd: Daemon,
    apiserver_args: Vec<String>,
    apiserver_bin: PathBuf,
    port: u16,
    kubeconfig: PathBuf,
    dir: TempDir,
}

impl KubeCluster {
    /// Starts a private cluster and waits until the apiserver is ready and
    /// the namespace controller runs.
    pub fn start() -> KubeCluster {
        let started = Instant::now();
        let bins = bin_dir().unwrap_or_else(|reason| panic!("cannot start Kubernetes: {reason}"));
        let dir = tempfile::Builder::new()
            .prefix("nordlys-kube-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let d = dir.path();
        let path = |name: &str| d.join(name).display().to_string();
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{port}");

        // TLS: a CA of this cluster, a serving certificate for 127.0.0.1 and
        // localhost, and the key that signs service account tokens.
        let ca = TestCa::new(d, "kube");
        let (cert, key) = ca.issue("apiserver");
        let sa_key =
            rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("service account key: {e}"));
        write(&d.join("service-account.key"), &sa_key.serialize_pem());
        // The apiserver reads no public key out of a PKCS#8 private key.
        write(&d.join("service-account.pub"), &sa_key.public_key_pem());
        let ca_pem = fs::read(&ca.ca).unwrap_or_else(|e| panic!("{}: {e}", ca.ca.display()));

        let admin_token = random_token();
        let cm_token = random_token();
        write(
            &d.join("tokens.csv"),
            &format!(
                "{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n\
                 {cm_token},{CONTROLLER_MANAGER_USER},{CONTROLLER_MANAGER_USER},\"system:masters\"\n"
            ),
        );
        let kubeconfig = d.join("kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(&server, &ca_pem, ADMIN_USER, &admin_token),
        );
        let cm_kubeconfig = d.join("controller-manager.kubeconfig");
        write(
            &cm_kubeconfig,
            &kubeconfig_yaml(&server, &ca_pem, CONTROLLER_MANAGER_USER, &cm_token),
        );

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            "--name=nordlys".into(),
            format!("--data-dir={}", path("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=nordlys={peer_url}"),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
            // Test data: durability buys nothing and fsync is slow.
            "--unsafe-no-fsync".into(),
        ];
        // The etcd watchdog, the last daemon to go, takes the temp dir along.
        let mut etcd = Daemon::spawn(
            "etcd",
            Path::new(ETCD),
            &etcd_args,
            &d.join("etcd.log"),
            Some(d),
        );
        wait_for_port(&mut etcd, etcd_port);

        // envtest's flags (controller-runtime, controlplane/apiserver.go),
        // with static tokens instead of client certificates.
        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", path("apiserver-certs")),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", path("service-account.pub")),
            format!(
                "--service-account-signing-key-file={}",
                path("service-account.key")
            ),
            format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            // No token controller runs to give service accounts tokens.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        let cluster_apiserver_bin = bins.join(APISERVER);
        let apiserver = Daemon::spawn(
            "kube-apiserver",
            &cluster_apiserver_bin,
            &apiserver_args,
            &d.join("kube-apiserver.log"),
            None,
        );

        let cm_args: Vec<String> = vec![
            format!("--kubeconfig={}", cm_kubeconfig.display()),
            "--controllers=namespace-controller,resourcequota-controller,clusterrole-aggregation-controller".into(),
            // Nothing scrapes it: no port, no delegated authentication.
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
        ];
        // Started right away: it waits for the apiserver by itself.
        let controller_manager = Daemon::spawn(
            "kube-controller-manager",
            &bins.join(CONTROLLER_MANAGER),
            &cm_args,
            &d.join("kube-controller-manager.log"),
            None,
        );

        let mut cluster = KubeCluster {
            controller_manager,
            apiserver: Mutex::new(Some(apiserver)),
            etcd,
            apiserver_args,
            apiserver_bin: cluster_apiserver_bin,
            port,
            kubeconfig,
            dir,
        };
        {
            let mut apiserver = cluster.apiserver.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(apiserver) = apiserver.as_mut() {
                cluster.wait_ready(apiserver);
            }
        }
        cluster.wait_for_namespace_controller();
        eprintln!(
            "kube: cluster at {} ready in {:.1?} (dir {})",
            cluster.server(),
            started.elapsed(),
            cluster.dir.path().display()
        );
        cluster
    }

    /// `https://127.0.0.1:{port}`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The apiserver's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A kubeconfig for [`ADMIN_USER`]: bearer token, the server's URL and
    /// the cluster CA as `certificate-authority-data`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's temp dir (logs, certificates, etcd's data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `kubectl --kubeconfig {kubeconfig} {args}`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {KUBECTL}: {e}"))
    }

    /// [`KubeCluster::kubectl`] that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the apiserver (SIGKILL, as a crash would). etcd and the
    /// controller manager keep running.
    pub fn stop_apiserver(&self) {
        let mut apiserver = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut daemon) = apiserver.take() {
            daemon.kill();
        }
    }

    /// Starts the apiserver again on the same port, etcd and flags, and
    /// waits until it is ready. Does nothing if it runs.
    pub fn start_apiserver(&self) {
        let mut apiserver = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        if apiserver.is_some() {
            return;
        }
        let mut daemon = Daemon::spawn(
            "kube-apiserver",
            &self.apiserver_bin,
            &self.apiserver_args,
            &self.dir.path().join("kube-apiserver.log"),
            None,
        );
        self.wait_ready(&mut daemon);
        *apiserver = Some(daemon);
    }

    /// The last lines of each daemon's log.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            let log = self.dir.path().join(format!("{name}.log"));
            let _ = writeln!(text, "=== {name} ({}):\n{}", log.display(), log_tail(&log));
        }
        text
    }

    /// Polls `/readyz` (authenticated, through kubectl) until it says `ok`.
    fn wait_ready(&self, apiserver: &mut Daemon) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("(port closed)");
        loop {
            apiserver.check_running("while starting");
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    return;
                }
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready within {START_TIMEOUT:?}; last /readyz: {last}\n{}",
                    log_tail(&apiserver.log)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the controller manager has started its namespace
    /// controller, so a namespace deleted right after start goes away, and
    /// has aggregated the rules of the user-facing ClusterRoles (`edit` is
    /// empty until then).
    fn wait_for_namespace_controller(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.etcd.check_running("while the cluster started");
            self.controller_manager.check_running("while starting");
            let log = fs::read_to_string(&self.controller_manager.log).unwrap_or_default();
            if log
                .lines()
                .any(|l| l.contains("Started controller") && l.contains("namespace"))
                && self.edit_role_has_rules()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-controller-manager did not start its namespace controller within {START_TIMEOUT:?}:\n{}",
                    log_tail(&self.controller_manager.log)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl KubeCluster {
    fn edit_role_has_rules(&self) -> bool {
        let out = self.kubectl(&[
            "get",
            "clusterrole",
            "edit",
            "-o",
            "jsonpath={.rules[*].verbs}",
        ]);
        out.status.success() && !out.stdout.is_empty()
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Waits until a daemon accepts connections on `port`.
fn wait_for_port(daemon: &mut Daemon, port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        daemon.check_running("while starting");
        if Instant::now() > deadline {
            panic!(
                "{} did not listen on port {port} within {START_TIMEOUT:?}:\n{}",
                daemon.name,
                log_tail(&daemon.log)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn kubeconfig_yaml(server: &str, ca_pem: &[u8], user: &str, token: &str) -> String {
    let ca = base64(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: nordlys\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  \
         user:\n    token: {token}\ncontexts:\n- name: nordlys\n  context:\n    \
         cluster: nordlys\n    user: {user}\ncurrent-context: nordlys\n"
    )
}

/// 128 random bits in hex, from the kernel.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("cannot read /dev/urandom: {e}"));
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Standard base64 with padding (for `certificate-authority-data`; one
/// use does not warrant a dependency).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Regions on the cluster

/// regiond's arguments for a kube region on `cluster` in installation
/// namespace `installation` (so regions and tests sharing a cluster never
/// see each other), with more `[kube]` settings in `kube_toml` (tiers, ...):
/// writes its config file beside the cluster's.
pub fn regiond_args(cluster: &KubeCluster, installation: &str, kube_toml: &str) -> Vec<String> {
    let dir = cluster.dir().join(format!("regiond-{installation}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let config = dir.join("regiond.toml");
    std::fs::write(
        &config,
        format!(
            "[kube]\nkubeconfig = {:?}\nnamespace = {installation:?}\ntimeout_secs = 20\n{kube_toml}\n",
            cluster.kubeconfig().display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    vec![
        "--backend".to_string(),
        "kube".to_string(),
        "--insecure-dev".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ]
}

/// A regiond `--backend kube` serving `region` on `cluster` (see
/// [`regiond_args`]), with environment `env`.
pub fn regiond(
    nats_url: &str,
    cluster: &KubeCluster,
    region: &str,
    installation: &str,
    kube_toml: &str,
    env: &[(&str, &str)],
) -> crate::Regiond {
    let args = regiond_args(cluster, installation, kube_toml);
    crate::Regiond::start_at(nats_url, region, &args, &owned(env))
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the regions tests run have networks: not with
/// `NORDLYS_TEST_BACKEND=kube` (Kubernetes has no tenant networks), so
/// scenarios hold an access rule where they would hold a network.
pub fn regions_have_networks() -> bool {
    std::env::var(crate::openstack::BACKEND_ENV).as_deref() != Ok("kube")
}

/// With `NORDLYS_TEST_BACKEND=kube`, a regiond on the shared cluster, in
/// an installation namespace of its NATS server (each test's stack) and
/// region: the scenario tests written for the simulated backends then run
/// unchanged against Kubernetes. Other arguments pass through; a
/// `--backend` is replaced.
pub fn regiond_from_env<S: AsRef<str>>(
    nats: &crate::NatsServer,
    region: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Option<crate::Regiond> {
    if std::env::var(crate::openstack::BACKEND_ENV).ok()? != "kube" {
        return None;
    }
    assert!(
        available(crate::openstack::BACKEND_ENV),
        "{}=kube needs etcd, kubectl and the kube binaries (scripts/build-kube)",
        crate::openstack::BACKEND_ENV
    );
    let cluster = shared();
    let installation = format!("t{}-{region}", nats.port());
    let mut all = regiond_args(cluster, &installation, "");
    let mut rest = args.iter().map(|a| a.as_ref().to_string());
    while let Some(arg) = rest.next() {
        if arg == "--backend" {
            rest.next();
        } else if !arg.starts_with("--backend=") {
            all.push(arg);
        }
    }
    Some(crate::Regiond::start_at(
        &nats.url(),
        region,
        &all,
        &owned(env),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), expected);
        }
    }
}
