//! `scripts/demo`, started as a user would, on free ports: what the tests
//! of the demo and of README's examples run against.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{bin_path, free_port};

/// How long the demo may take to come up (a first `--cluster` run makes
/// certificates and keys).
const READY: Duration = Duration::from_secs(180);

#[derive(Debug)]
pub struct Demo {
    /// The `scripts/demo` process.
    pub child: Child,
    /// What the demo tells the user to export (`export NAME=value` lines).
    pub exports: HashMap<String, String>,
    /// The gateway's gRPC address.
    pub listen: String,
    /// The gateway's HTTP address.
    pub http_listen: String,
    _state: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM: the demo stops its processes in order, even after a
        // failed test.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Starts `scripts/demo` on free ports with `env` added, and waits until it
/// has printed what to try.
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Demo {
    let state = tempfile::Builder::new()
        .prefix("nordlys-demo-")
        .tempdir()
        .expect("state dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let http_listen = format!("127.0.0.1:{}", free_port());
    let bin_dir = bin_path("gateway")
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let mut child = Command::new(repo_root().join("scripts/demo"))
        .args(args)
        .current_dir(repo_root())
        .env("NORDLYS_LISTEN", &listen)
        .env("NORDLYS_HTTP_LISTEN", &http_listen)
        .env("NORDLYS_DEMO_BIN_DIR", &bin_dir)
        .env("CARGO_TARGET_DIR", state.path())
        .env(
            "PATH",
            format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        let _ = etx.send(text);
    });
    let deadline = Instant::now() + READY;
    let mut exports = HashMap::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some((name, value)) = line
                    .trim()
                    .strip_prefix("export ")
                    .and_then(|a| a.split_once('='))
                {
                    exports.insert(name.to_string(), value.to_string());
                }
                if line.starts_with("Press Ctrl-C to stop.") {
                    break;
                }
            }
            Err(_) => {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                let _ = child.wait();
                let said = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                panic!("scripts/demo {args:?} did not come up:\n{said}");
            }
        }
    }
    Demo {
        child,
        exports,
        listen,
        http_listen,
        _state: state,
    }
}

impl Demo {
    /// The API key the demo printed for its organization's owner.
    pub fn key(&self) -> &str {
        self.exports
            .get("KEY")
            .map(String::as_str)
            .unwrap_or_default()
    }
}
