//! Test harness: runs `nats-server` and the Nordlys binaries as real processes
//! on loopback, behind guards that kill them on drop.
//!
//! ```no_run
//! # async fn demo() {
//! use nordlys_tests::{bearer, Stack};
//! use nordlys_proto::pb::nordlys::v1::{
//!     project_service_client::ProjectServiceClient, ListProjectsRequest,
//! };
//!
//! let stack = Stack::start().await;
//! let tenant = stack.tenant("acme").await;
//! let mut projects = ProjectServiceClient::new(stack.channel().await);
//! let page = projects
//!     .list_projects(bearer(ListProjectsRequest::default(), &tenant.key))
//!     .await
//!     .unwrap();
//! assert!(page.into_inner().projects.is_empty());
//! # }
//! ```
//!
//! Every process gets dynamic ports and its own temp dir; its stderr goes to a
//! log file whose tail is printed when a test panics, so a failure shows what
//! the daemons said.

pub mod cluster;
pub mod demo;
pub mod kube;
pub mod openstack;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nordlys_proto::pb::nordlys::v1::{
    self as pb, organization_service_client::OrganizationServiceClient,
    project_service_client::ProjectServiceClient, quota_service_client::QuotaServiceClient,
    region_service_client::RegionServiceClient, ApiKey, CreateApiKeyRequest, CreateMemberRequest,
    CreateOrganizationRequest, CreateProjectRequest, GetQuotaRequest, ListProjectsRequest,
    ListProjectsResponse, ListRegionsRequest, ListRegionsResponse, Member, Organization,
    OrganizationRole, Project, ResourceCounts, UpdateQuotaRequest,
};
use tempfile::TempDir;
use tonic::transport::Channel;

/// The operator key every [`Stack`] gateway is started with.
pub const OPERATOR_KEY: &str = "test-operator-key";

/// How long a process may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// An OpenAPI path template made concrete: each `{variable}` becomes `x`,
/// keeping a custom verb (`{environment}:apply` becomes `x:apply`).
pub fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.split_once('}')) {
                Some((_, verb)) => format!("x{verb}"),
                None => s.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Adds `authorization: Bearer {key}` to a request.
pub fn bearer<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}")
        .parse()
        .unwrap_or_else(|e| panic!("API key {key:?} is not valid metadata: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

// ---------------------------------------------------------------------------
// nats-server

/// A `nats-server -js` on a dynamic loopback port with its own store dir.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
}

impl NatsServer {
    /// Starts nats-server with JetStream and waits until it accepts connections.
    pub fn start() -> NatsServer {
        let binary = find_nats_server();
        let dir = tempfile::Builder::new()
            .prefix("nordlys-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut server = NatsServer {
            child: None,
            port: 0,
            dir,
            binary,
        };
        // `-p -1` lets the server pick a free port without a bind-then-release
        // race; restarts then reuse the port it picked.
        server.spawn("-1");
        server
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s). The store is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child, Duration::from_secs(10));
        }
    }

    /// Stops the server and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&self.port.to_string());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self, port: &str) {
        let store = self.dir.path().join("jetstream");
        let log_path = self.log_path();
        // Truncate: the port is parsed from this run's log only.
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(port) = self.read_port() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "nats-server exited with {status} while starting\n{}",
                    log_tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not accept connections within {READY_TIMEOUT:?}\n{}",
                    log_tail(&log_path)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_port(&self) -> Option<u16> {
        const MARK: &str = "Listening for client connections on ";
        let log = fs::read_to_string(self.log_path()).ok()?;
        let line = log.lines().find(|l| l.contains(MARK))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- nats-server log tail\n{}", log_tail(&self.log_path()));
        }
    }
}

fn find_nats_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nats-server");
            sbin.is_file().then_some(sbin)
        })
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH or at /usr/sbin/nats-server: \
                 install it (Debian: `apt-get install nats-server`)"
            )
        })
}

// ---------------------------------------------------------------------------
// Our binaries

/// A loopback port for a server that binds it itself later (nats-server
/// nodes, Keystone and Neutron, which import for a while first). It is taken below the
/// kernel's ephemeral range (32768 and up): a port from `bind(:0)` is one
/// that any outgoing connection of the run may take meanwhile as its own
/// source port.
pub fn free_port() -> u16 {
    use std::time::{SystemTime, UNIX_EPOCH};
    // A different start per process and call; no RNG needed for a spread.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    for i in 0..SPAN {
        let port = (LOW + (seed.wrapping_add(i.wrapping_mul(7_919))) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

/// Path of one of the workspace's binaries, built next to this test executable.
///
/// `CARGO_BIN_EXE_*` only exists for binaries of the crate under test, so walk
/// up from the test executable (`target/{profile}/deps/foo-hash`) to the
/// profile dir. `NORDLYS_BIN_DIR` overrides the search.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("NORDLYS_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        if path.is_file() {
            return path;
        }
        panic!("{} not found (NORDLYS_BIN_DIR)", path.display());
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "binary `{name}` not found above {}: run `cargo build --workspace --bins` first",
                exe.display()
            )
        })
}

/// How to start a process and recognise that it is ready.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Binary name in the target dir (see [`bin_path`]).
    pub name: String,
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The stdout line prefix that means "serving".
    pub ready_prefix: String,
    /// How long to wait for it.
    pub ready_timeout: Duration,
}

impl Spec {
    /// A spec with no arguments and the default timeout.
    pub fn new(name: &str, ready_prefix: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            ready_prefix: ready_prefix.to_owned(),
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Spec {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running binary of ours. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Process {
    spec: Spec,
    child: Option<std::process::Child>,
    ready: String,
    dir: TempDir,
    runs: u32,
    /// Stdout lines after the ready line.
    lines: Option<mpsc::Receiver<String>>,
}

impl Process {
    /// Spawns the process and waits for its ready line; panics with the log
    /// tail when it exits or stays silent.
    pub fn start(spec: Spec) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nordlys-{}-", spec.name))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let mut process = Process {
            spec,
            child: None,
            ready: String::new(),
            dir,
            runs: 0,
            lines: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let binary = bin_path(&self.spec.name);
        self.runs += 1;
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let mut command = Command::new(&binary);
        command
            .args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // Plain logs: they are read in files and in panic messages.
        command.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        for (k, v) in &self.spec.env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        self.child = Some(child);

        // A thread forwards stdout lines, and keeps draining after the ready
        // line so the child never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) if line.starts_with(&self.spec.ready_prefix) => {
                    self.ready = line;
                    self.lines = Some(rx);
                    return;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().map(|c| c.wait());
                    panic!(
                        "{} exited ({status:?}) before printing {:?}\n{}",
                        self.spec.name,
                        self.spec.ready_prefix,
                        log_tail(&log_path)
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {:?} within {:?}\n{}",
                    self.spec.name,
                    self.spec.ready_prefix,
                    self.spec.ready_timeout,
                    log_tail(&log_path)
                );
            }
        }
    }

    /// The ready line it printed.
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// Waits for a later stdout line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let rx = self.lines.as_ref()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// A `key=value` field of the ready line.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.ready.split_whitespace().find_map(|word| {
            word.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGHUP (the services reload their TLS certificates on it).
    pub fn hangup(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.spec.name));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap_or_else(|e| panic!("cannot send SIGHUP to {}: {e}", self.spec.name));
    }

    /// The stderr log file (all runs, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.spec.name))
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks it to stop (SIGTERM) and waits up to 10 s, then kills it.
    /// Returns the exit status, `None` when it was not running or had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate_child(&mut child, Duration::from_secs(10))
    }

    /// Terminates it and starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- {} log tail ({})\n{}",
                self.spec.name,
                self.ready,
                log_tail(&self.log_path())
            );
        }
    }
}

fn terminate_child(child: &mut std::process::Child, grace: Duration) -> Option<ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        return child.wait().ok();
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The last 60 lines of a log file.
pub fn log_tail(path: &Path) -> String {
    const MAX: u64 = 16 * 1024;
    let Ok(mut file) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

// ---------------------------------------------------------------------------
// Typed guards

/// The quota service.
#[derive(Debug)]
pub struct Quota(Process);

impl Quota {
    /// Starts `quota --nats-url {nats}`.
    pub fn start(nats: &NatsServer) -> Quota {
        Quota::start_with(nats, &[] as &[&str])
    }

    /// Like [`Quota::start`], with more arguments.
    pub fn start_with<S: AsRef<str>>(nats: &NatsServer, args: &[S]) -> Quota {
        Quota::start_env(nats, args, &[])
    }

    /// Like [`Quota::start_with`], with environment variables.
    pub fn start_env<S: AsRef<str>>(
        nats: &NatsServer,
        args: &[S],
        env: &[(String, String)],
    ) -> Quota {
        let mut all = vec!["--insecure-dev".to_owned()];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        Quota::start_at(&nats.url(), &all, env)
    }

    /// Starts `quota --nats-url {url} ARGS` with environment `env` (the
    /// NATS credentials of a [`cluster::NatsCluster`], ...).
    pub fn start_at(url: &str, args: &[String], env: &[(String, String)]) -> Quota {
        let mut spec = Spec::new("quota", "nordlys-quota ready")
            .args(["--nats-url", url])
            .args(metrics_listen(args))
            .args(args.iter().cloned());
        for (key, value) in env {
            spec = spec.env(key, value);
        }
        Quota(Process::start(spec))
    }

    /// The micro service instance id.
    pub fn id(&self) -> &str {
        self.0.field("id").unwrap_or_default()
    }

    /// Where it serves `GET /metrics` (from its ready line).
    pub fn metrics_addr(&self) -> SocketAddr {
        metrics_addr(&self.0)
    }
}

/// `--metrics-listen 127.0.0.1:0` (a free port, shown on the ready line),
/// unless the test's own arguments choose.
fn metrics_listen(args: &[String]) -> Vec<String> {
    if args.iter().any(|a| a.starts_with("--metrics-listen")) {
        return Vec::new();
    }
    vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]
}

/// The `metrics=` address of a process's ready line.
fn metrics_addr(process: &Process) -> SocketAddr {
    process
        .field("metrics")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics= on the ready line {:?}", process.ready_line()))
}

impl std::ops::Deref for Quota {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Quota {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

/// One regiond instance.
#[derive(Debug)]
pub struct Regiond {
    process: Process,
    region: String,
}

impl Regiond {
    /// Starts `regiond --nats-url {nats} --region {region}` (default backend).
    pub fn start(nats: &NatsServer, region: &str) -> Regiond {
        Regiond::start_with(nats, region, &[] as &[&str])
    }

    /// Like [`Regiond::start`], with more arguments (`--backend memory`, ...).
    pub fn start_with<S: AsRef<str>>(nats: &NatsServer, region: &str, args: &[S]) -> Regiond {
        Regiond::start_env(nats, region, args, &[])
    }

    /// Like [`Regiond::start_with`], with environment variables
    /// (`NORDLYS_SETTLE_GRACE_MS`, the test crash hook, ...).
    pub fn start_env<S: AsRef<str>>(
        nats: &NatsServer,
        region: &str,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Regiond {
        // NORDLYS_TEST_BACKEND=openstack: the same tests on local OpenStack regions.
        if let Some(regiond) = openstack::regiond_from_env(nats, region, args, env) {
            return regiond;
        }
        // NORDLYS_TEST_BACKEND=kube: the same tests on Kubernetes regions.
        if let Some(regiond) = kube::regiond_from_env(nats, region, args, env) {
            return regiond;
        }
        let mut all = vec!["--insecure-dev".to_owned()];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Regiond::start_at(&nats.url(), region, &all, &env)
    }

    /// Starts `regiond --nats-url {url} --region {region} ARGS` with
    /// environment `env`.
    pub fn start_at(url: &str, region: &str, args: &[String], env: &[(String, String)]) -> Regiond {
        let mut spec = Spec::new("regiond", "nordlys-regiond ready")
            .args(["--nats-url", url, "--region", region])
            .args(metrics_listen(args))
            .args(args.iter().cloned());
        for (key, value) in env {
            spec = spec.env(key, value);
        }
        Regiond {
            process: Process::start(spec),
            region: region.to_owned(),
        }
    }

    /// The micro service instance id (changes on restart).
    pub fn id(&self) -> &str {
        self.process.field("id").unwrap_or_default()
    }

    /// The region it serves.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Where it serves `GET /metrics` (from its ready line).
    pub fn metrics_addr(&self) -> SocketAddr {
        metrics_addr(&self.process)
    }
}

impl std::ops::Deref for Regiond {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Regiond {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Gateway options.
#[derive(Debug, Clone)]
pub struct GatewayOpts {
    /// `--operator-key`.
    pub operator_key: String,
    /// `--regions`.
    pub regions: Vec<String>,
    /// More arguments.
    pub args: Vec<String>,
    /// How clients reach it when it serves TLS (its `[tls]` comes in a
    /// config file among `args`); `None`: plaintext.
    pub tls: Option<ClientTls>,
}

impl Default for GatewayOpts {
    fn default() -> GatewayOpts {
        GatewayOpts {
            operator_key: OPERATOR_KEY.to_owned(),
            regions: vec!["sto1".to_owned(), "osl1".to_owned()],
            args: Vec::new(),
            tls: None,
        }
    }
}

/// How test clients reach a gateway that serves TLS: a client
/// configuration that trusts its certificate, and the name to check.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The client configuration (ALPN is set per connection).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The server name sent and verified, e.g. `localhost`.
    pub server_name: String,
}

/// A gRPC channel to `addr` over TLS (ALPN h2), with the harness's
/// timeouts. The connection is made by rustls under tonic, so tonic needs
/// no TLS feature of its own.
pub async fn tls_channel(
    addr: SocketAddr,
    tls: &ClientTls,
) -> Result<Channel, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = (*tls.config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())?;
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(
        Channel::from_shared(format!("https://{}:{}", tls.server_name, addr.port()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_with_connector(connect)
            .await?,
    )
}

/// The gateway, listening on a dynamic loopback port.
#[derive(Debug)]
pub struct Gateway {
    process: Process,
    addr: SocketAddr,
    http_addr: SocketAddr,
    tls: Option<ClientTls>,
}

impl Gateway {
    /// Starts the gateway on `127.0.0.1:0` and reads the bound address.
    pub fn start(nats: &NatsServer, opts: &GatewayOpts) -> Gateway {
        Gateway::start_at(&nats.url(), opts, &[])
    }

    /// Like [`Gateway::start`], on NATS at `url`, with environment `env`.
    pub fn start_at(url: &str, opts: &GatewayOpts, env: &[(String, String)]) -> Gateway {
        let mut spec = Spec::new("gateway", "nordlys-gateway listening on ")
            .args([
                "--nats-url",
                url,
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--operator-key",
                &opts.operator_key,
                "--regions",
                &opts.regions.join(","),
            ])
            .args(opts.args.iter().cloned());
        for (key, value) in env {
            spec = spec.env(key, value);
        }
        let mut process = Process::start(spec);
        let addr = process
            .ready_line()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad gateway ready line {:?}", process.ready_line()));
        // The HTTP/JSON listener's line follows the gRPC one.
        let http_line = process
            .wait_line("nordlys-gateway http listening on ", READY_TIMEOUT)
            .unwrap_or_else(|| panic!("the gateway printed no HTTP listening line"));
        let http_addr = http_line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("bad gateway http line {http_line:?}"));
        Gateway {
            process,
            addr,
            http_addr,
            tls: opts.tls.clone(),
        }
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP/JSON address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://{http_addr}` (`https://` when it serves TLS).
    pub fn http_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// A connected gRPC channel (over TLS when it serves TLS).
    pub async fn channel(&self) -> Channel {
        if let Some(tls) = &self.tls {
            return tls_channel(self.addr, tls).await.unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the gateway at {} over TLS: {e}",
                    self.addr
                )
            });
        }
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap_or_else(|e| panic!("bad gateway address: {e}"))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the gateway at {}: {e}", self.addr))
    }
}

impl std::ops::Deref for Gateway {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

// ---------------------------------------------------------------------------
// The whole stack

/// nats-server, quota, regiond `sto1` ×2 and `osl1` ×1, and the gateway
/// (or the shape [`StackOpts`] asks for).
///
/// Fields drop in declaration order: the gateway stops first, nats-server last.
#[derive(Debug)]
pub struct Stack {
    /// The gateway.
    pub gateway: Gateway,
    /// First `sto1` instance.
    pub sto1_a: Regiond,
    /// Second `sto1` instance (absent when [`StackOpts::sto1_instances`] is 1).
    pub sto1_b: Option<Regiond>,
    /// The `osl1` instance.
    pub osl1: Regiond,
    /// The quota service.
    pub quota: Quota,
    /// A second quota instance, when asked for.
    pub quota_b: Option<Quota>,
    /// The NATS server.
    pub nats: NatsServer,
}

/// The shape of a [`Stack`].
#[derive(Debug, Clone)]
pub struct StackOpts {
    /// Gateway `--route`: `auto` (default), `nats` or `grpc`.
    pub route: String,
    /// regiond `--backend`: `kv` (default) or `memory`.
    pub backend: String,
    /// `sto1` instances: 2 (default) or 1.
    pub sto1_instances: usize,
    /// Quota service instances: 1 (default) or 2.
    pub quota_instances: usize,
    /// More arguments for every regiond `sto1` instance.
    pub regiond_args: Vec<String>,
    /// More gateway arguments.
    pub gateway_args: Vec<String>,
    /// Environment variables of every regiond instance.
    pub regiond_env: Vec<(String, String)>,
    /// Environment variables of the gateway.
    pub gateway_env: Vec<(String, String)>,
    /// More arguments for every quota instance.
    pub quota_args: Vec<String>,
    /// Environment variables of every quota instance.
    pub quota_env: Vec<(String, String)>,
    /// How clients reach the gateway when it serves TLS (its `[tls]` comes
    /// in a config file among `gateway_args`).
    pub gateway_tls: Option<ClientTls>,
}

impl Default for StackOpts {
    fn default() -> StackOpts {
        StackOpts {
            route: "auto".to_owned(),
            backend: "kv".to_owned(),
            sto1_instances: 2,
            quota_instances: 1,
            regiond_args: Vec::new(),
            gateway_args: Vec::new(),
            regiond_env: Vec::new(),
            gateway_env: Vec::new(),
            quota_args: Vec::new(),
            quota_env: Vec::new(),
            gateway_tls: None,
        }
    }
}

/// An organization with an owner and an API key, made by [`Stack::tenant`].
#[derive(Debug, Clone)]
pub struct Tenant {
    /// `organizations/{id}`.
    pub organization: String,
    /// `organizations/{id}/members/{principal}`.
    pub member: String,
    /// The API key secret.
    pub key: String,
}

impl Stack {
    /// Starts everything and waits until the gateway sees both regions, with
    /// both `sto1` instances.
    pub async fn start() -> Stack {
        Stack::start_with(StackOpts::default()).await
    }

    /// A stack of the given shape; waits until the gateway sees every
    /// regiond instance.
    pub async fn start_with(opts: StackOpts) -> Stack {
        let nats = NatsServer::start();
        let quota = Quota::start_env(&nats, &opts.quota_args, &opts.quota_env);
        let quota_b = (opts.quota_instances > 1)
            .then(|| Quota::start_env(&nats, &opts.quota_args, &opts.quota_env));
        let mut sto1_args = vec!["--backend".to_owned(), opts.backend.clone()];
        sto1_args.extend(opts.regiond_args.iter().cloned());
        let osl1_args = ["--backend".to_owned(), opts.backend.clone()];
        let env: Vec<(&str, &str)> = opts
            .regiond_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sto1_a = Regiond::start_env(&nats, "sto1", &sto1_args, &env);
        let sto1_b =
            (opts.sto1_instances > 1).then(|| Regiond::start_env(&nats, "sto1", &sto1_args, &env));
        let osl1 = Regiond::start_env(&nats, "osl1", &osl1_args, &env);
        let mut gateway_opts = GatewayOpts::default();
        gateway_opts
            .args
            .extend(["--route".to_owned(), opts.route.clone()]);
        gateway_opts.args.extend(opts.gateway_args.iter().cloned());
        gateway_opts.tls = opts.gateway_tls.clone();
        let gateway = Gateway::start_at(&nats.url(), &gateway_opts, &opts.gateway_env);
        let stack = Stack {
            gateway,
            sto1_a,
            sto1_b,
            osl1,
            quota,
            quota_b,
            nats,
        };
        let sto1 = opts.sto1_instances.clamp(1, 2);
        stack
            .wait_for_regions(|regions| {
                instances(regions, "sto1") == sto1 && instances(regions, "osl1") == 1
            })
            .await;
        stack
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> Channel {
        self.gateway.channel().await
    }

    /// Polls ListRegions (operator key) until `ready` holds, for up to 20 s.
    pub async fn wait_for_regions(&self, ready: impl Fn(&ListRegionsResponse) -> bool) {
        self.gateway.wait_for_regions(ready).await
    }

    /// Creates organization `id` with owner `owner@{id}.example`, generous
    /// limits in both regions, and an API key for the owner.
    pub async fn tenant(&self, id: &str) -> Tenant {
        self.gateway.tenant(id).await
    }

    /// Like [`Stack::tenant`] with the given limits in `sto1` and `osl1`.
    pub async fn tenant_with_limits(&self, id: &str, limits: ResourceCounts) -> Tenant {
        self.gateway.tenant_with_limits(id, limits).await
    }

    /// Sets an organization's limits in one region (operator key).
    pub async fn set_limits(&self, organization: &str, region: &str, limits: ResourceCounts) {
        self.gateway.set_limits(organization, region, limits).await
    }

    /// An organization's quota in one region, read with `key`.
    pub async fn quota(&self, key: &str, organization: &str, region: &str) -> pb::Quota {
        self.gateway.quota(key, organization, region).await
    }

    /// Creates project `id` placed in `regions`, with `key`.
    pub async fn create_project(
        &self,
        key: &str,
        id: &str,
        regions: &[&str],
    ) -> Result<Project, tonic::Status> {
        self.gateway.create_project(key, id, regions).await
    }

    /// The projects `key` sees in `region` (ListProjects filtered by region).
    pub async fn projects_in(&self, key: &str, region: &str) -> ListProjectsResponse {
        self.gateway.projects_in(key, region).await
    }
}

/// What tests do through a gateway with the operator key.
impl Gateway {
    /// Polls ListRegions (operator key) until `ready` holds, for up to 20 s.
    pub async fn wait_for_regions(&self, ready: impl Fn(&ListRegionsResponse) -> bool) {
        let mut client = RegionServiceClient::new(self.channel().await);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = None;
        while Instant::now() < deadline {
            match client
                .list_regions(bearer(ListRegionsRequest::default(), OPERATOR_KEY))
                .await
            {
                Ok(response) => {
                    let response = response.into_inner();
                    if ready(&response) {
                        return;
                    }
                    last = Some(format!("{response:?}"));
                }
                Err(status) => last = Some(format!("{status:?}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("regions not as expected within {READY_TIMEOUT:?}; last answer: {last:?}");
    }

    /// Creates organization `id` with owner `owner@{id}.example`, generous
    /// limits in both regions, and an API key for the owner.
    pub async fn tenant(&self, id: &str) -> Tenant {
        let limits = ResourceCounts {
            projects: 100,
            users: 100,
            networks: 100,
            access_rules: 100,
        };
        self.tenant_with_limits(id, limits).await
    }

    /// Like [`Gateway::tenant`] with the given limits in `sto1` and `osl1`.
    pub async fn tenant_with_limits(&self, id: &str, limits: ResourceCounts) -> Tenant {
        let mut orgs = OrganizationServiceClient::new(self.channel().await);
        let organization = orgs
            .create_organization(bearer(
                CreateOrganizationRequest {
                    organization: Some(Organization {
                        display_name: format!("Test organization {id}"),
                        ..Default::default()
                    }),
                    organization_id: id.to_owned(),
                },
                OPERATOR_KEY,
            ))
            .await
            .unwrap_or_else(|s| panic!("CreateOrganization {id}: {s:?}"))
            .into_inner()
            .name;
        let member = orgs
            .create_member(bearer(
                CreateMemberRequest {
                    parent: organization.clone(),
                    member: Some(Member {
                        role: OrganizationRole::Owner as i32,
                        ..Default::default()
                    }),
                    member_id: format!("owner@{id}.example"),
                },
                OPERATOR_KEY,
            ))
            .await
            .unwrap_or_else(|s| panic!("CreateMember in {id}: {s:?}"))
            .into_inner()
            .name;
        for region in ["sto1", "osl1"] {
            self.set_limits(&organization, region, limits).await;
        }
        let key = orgs
            .create_api_key(bearer(
                CreateApiKeyRequest {
                    parent: organization.clone(),
                    api_key: Some(ApiKey {
                        member: member.clone(),
                        display_name: "test key".to_owned(),
                        ..Default::default()
                    }),
                },
                OPERATOR_KEY,
            ))
            .await
            .unwrap_or_else(|s| panic!("CreateApiKey in {id}: {s:?}"))
            .into_inner()
            .secret;
        Tenant {
            organization,
            member,
            key,
        }
    }

    /// Sets an organization's limits in one region (operator key).
    pub async fn set_limits(&self, organization: &str, region: &str, limits: ResourceCounts) {
        QuotaServiceClient::new(self.channel().await)
            .update_quota(bearer(
                UpdateQuotaRequest {
                    quota: Some(pb::Quota {
                        name: format!("{organization}/quotas/{region}"),
                        limits: Some(limits),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
                OPERATOR_KEY,
            ))
            .await
            .unwrap_or_else(|s| panic!("UpdateQuota {organization}/{region}: {s:?}"));
    }

    /// An organization's quota in one region, read with `key`.
    pub async fn quota(&self, key: &str, organization: &str, region: &str) -> pb::Quota {
        QuotaServiceClient::new(self.channel().await)
            .get_quota(bearer(
                GetQuotaRequest {
                    name: format!("{organization}/quotas/{region}"),
                },
                key,
            ))
            .await
            .unwrap_or_else(|s| panic!("GetQuota {organization}/{region}: {s:?}"))
            .into_inner()
    }

    /// Creates project `id` placed in `regions`, with `key`.
    pub async fn create_project(
        &self,
        key: &str,
        id: &str,
        regions: &[&str],
    ) -> Result<Project, tonic::Status> {
        ProjectServiceClient::new(self.channel().await)
            .create_project(bearer(
                CreateProjectRequest {
                    project: Some(Project {
                        display_name: format!("Project {id}"),
                        regions: regions.iter().map(|r| r.to_string()).collect(),
                        ..Default::default()
                    }),
                    project_id: id.to_owned(),
                    request_id: String::new(),
                },
                key,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The projects `key` sees in `region` (ListProjects filtered by region).
    pub async fn projects_in(&self, key: &str, region: &str) -> ListProjectsResponse {
        ProjectServiceClient::new(self.channel().await)
            .list_projects(bearer(
                ListProjectsRequest {
                    region: region.into(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .unwrap_or_else(|s| panic!("ListProjects region={region}: {s:?}"))
            .into_inner()
    }
}

/// Creates project `id` in `regions` with `key`, under request id
/// `req-{id}` (so a retry of the same id is recognised).
pub async fn create_project(
    channel: &Channel,
    key: &str,
    id: &str,
    regions: &[&str],
) -> Result<Project, tonic::Status> {
    ProjectServiceClient::new(channel.clone())
        .create_project(bearer(
            CreateProjectRequest {
                project: Some(Project {
                    display_name: format!("Project {id}"),
                    regions: regions.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                }),
                project_id: id.to_owned(),
                request_id: format!("req-{id}"),
            },
            key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// ApplyEnvironment of `env` with `key`: its plan when `validate_only`.
pub async fn apply_environment(
    channel: &Channel,
    key: &str,
    env: &pb::Environment,
    validate_only: bool,
) -> Result<pb::ApplyEnvironmentResponse, tonic::Status> {
    pb::environment_service_client::EnvironmentServiceClient::new(channel.clone())
        .apply_environment(bearer(
            pb::ApplyEnvironmentRequest {
                environment: Some(env.clone()),
                validate_only,
                request_id: String::new(),
            },
            key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Evaluates a list call (an expression that awaits the answer) until the
/// answer names no region `unreachable`, at most ten times half a second
/// apart, and panics if some region never answers. A region's cloud under
/// test load may miss a list's wait for it, and a test about what a list
/// holds asks again, as a client wanting the whole list would.
#[macro_export]
macro_rules! whole_list {
    ($list:expr) => {{
        let mut tries = 0;
        loop {
            let answer = $list;
            if answer.unreachable.is_empty() {
                break answer;
            }
            tries += 1;
            if tries == 10 {
                panic!(
                    "a list named {:?} unreachable ten times",
                    answer.unreachable
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }};
}

/// How many instances of `region` ListRegions reports (0 when down or absent).
pub fn instances(regions: &ListRegionsResponse, region: &str) -> usize {
    let name = format!("regions/{region}");
    regions
        .regions
        .iter()
        .find(|r| r.name == name && r.up)
        .map_or(0, |r| r.instances.len())
}
