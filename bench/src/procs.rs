//! The processes the bench starts (nats-server, quota, regiond, gateway),
//! each behind a guard that stops it when dropped: on success, on error, on
//! Ctrl-C (the run future is dropped) and on panic (unwinding drops it).

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Worker threads of every process the bench starts (`--service-threads`);
/// unset, each runtime takes its default (one per CPU).
pub(crate) static SERVICE_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// How long a process may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child process; SIGTERM then SIGKILL on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    lines: Arc<Mutex<VecDeque<String>>>,
    // Kept for its lifetime: the log and any store live here.
    _dir: TempDir,
}

impl Proc {
    /// Starts `binary` with `args` and `env`; stdout lines are collected for
    /// [`Proc::wait_line`], stderr goes to a log file. `{dir}` in an argument
    /// is the process's own temp dir (removed when the guard drops).
    pub(crate) fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nordlys-bench-{name}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let log = dir.path().join(format!("{name}.log"));
        let log_file =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(
                args.iter()
                    .map(|a| a.replace("{dir}", &dir.path().display().to_string())),
            )
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            command.env(k, v);
        }
        if let Some(n) = SERVICE_THREADS.get() {
            // tokio's #[tokio::main] runtime reads it.
            command.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            let lines = lines.clone();
            // Keeps draining stdout so the child never blocks on a full pipe.
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut lines) = lines.lock() {
                        lines.push_back(line);
                    }
                }
            });
        }
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            lines,
            _dir: dir,
        })
    }

    /// The first stdout line starting with `prefix`, waiting up to `timeout`
    /// (an error with the log tail when the process exits or stays silent).
    pub(crate) async fn wait_line(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.find_line(prefix) {
                return Ok(line);
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "{} exited ({status}) before printing {prefix:?}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not print {prefix:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A stdout line starting with `prefix` printed so far.
    pub(crate) fn find_line(&self, prefix: &str) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// Waits for the ready line with the default timeout.
    pub(crate) async fn ready(&mut self, prefix: &str) -> Result<String, String> {
        self.wait_line(prefix, READY_TIMEOUT).await
    }

    /// The OS process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of its stderr log.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Asks it to stop (SIGTERM), waits up to `grace`, then kills it.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// The last 40 lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    const MAX: u64 = 8 * 1024;
    let Ok(mut file) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// nats-server with JetStream (quota keeps its data in a KV bucket) on a
/// port it picks itself (`-p -1`: no bind-then-release race).
#[derive(Debug)]
pub(crate) struct NatsServer {
    proc: Proc,
    port: u16,
}

impl NatsServer {
    pub(crate) async fn start() -> Result<NatsServer, String> {
        let binary = find_nats_server()?;
        // nats-server logs to stderr; the port is read from there.
        let mut proc = Proc::spawn(
            "nats-server",
            &binary,
            &[
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                "-1".into(),
                "-js".into(),
                "-sd".into(),
                "{dir}/jetstream".into(),
            ],
            &[],
        )?;
        const MARK: &str = "Listening for client connections on ";
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = fs::read_to_string(&proc.log).unwrap_or_default();
            let port = log
                .lines()
                .find(|l| l.contains(MARK))
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse::<u16>().ok());
            if let Some(port) = port {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(NatsServer { proc, port });
                }
            }
            if let Some(Ok(Some(status))) = proc.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "nats-server exited ({status}) while starting\n{}",
                    proc.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server did not listen within {READY_TIMEOUT:?}\n{}",
                    proc.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The OS process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// `nats://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn find_nats_server() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nats-server");
            sbin.is_file().then_some(sbin)
        })
        .ok_or_else(|| {
            "nats-server not found on PATH or at /usr/sbin/nats-server \
             (Debian: `apt-get install nats-server`)"
                .to_owned()
        })
}

/// `perf record` attached to a process, flat (no call graphs: cheap, and
/// enough for the top self costs).
#[derive(Debug)]
pub(crate) struct PerfRecord {
    child: Option<Child>,
    data: PathBuf,
    summary: PathBuf,
}

impl PerfRecord {
    /// Starts recording `pid` into `{dir}/{name}.perf.data`.
    pub(crate) fn start(dir: &Path, name: &str, pid: u32) -> Result<PerfRecord, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let data = dir.join(format!("{name}.perf.data"));
        let summary = dir.join(format!("{name}.perf.txt"));
        let log = fs::File::create(dir.join(format!("{name}.perf.log")))
            .map_err(|e| format!("cannot create the perf log: {e}"))?;
        let child = Command::new("perf")
            // Frame-pointer call graphs: cheap to record, and meaningful
            // in a build with frame pointers (the flat summary is right in
            // any build).
            .args([
                "record",
                "-F",
                "999",
                "-e",
                "cpu-clock",
                "--call-graph",
                "fp",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run perf: {e}"))?;
        // perf needs a moment to attach before the load starts.
        thread::sleep(Duration::from_millis(300));
        Ok(PerfRecord {
            child: Some(child),
            data,
            summary,
        })
    }

    /// Stops recording (SIGINT) and writes the flat `perf report` next to
    /// the data; returns its path.
    pub(crate) fn finish(mut self) -> Result<PathBuf, String> {
        let Some(mut child) = self.child.take() else {
            return Err("perf is not running".into());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = child.wait();
        let report = Command::new("perf")
            .arg("report")
            .arg("-i")
            .arg(&self.data)
            .args([
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "0.5",
                "--sort",
                "dso,symbol",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run perf report: {e}"))?;
        fs::write(&self.summary, &report.stdout)
            .map_err(|e| format!("cannot write {}: {e}", self.summary.display()))?;
        Ok(self.summary.clone())
    }
}

impl Drop for PerfRecord {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
