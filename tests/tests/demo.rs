//! The README's quick start: `scripts/demo` (and `scripts/demo --cluster`,
//! the reference deployment) comes up, bootstraps its organization, serves
//! the calls it prints with the key it prints, and stops everything on
//! Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, GetProjectRequest, Project,
};
use nordlys_tests::{bearer, bin_path, free_port};

/// How long the demo may take to come up (the cluster makes certificates
/// and keys and starts five nats-servers first).
const READY: Duration = Duration::from_secs(180);

struct Demo {
    child: Child,
    key: String,
    listen: String,
    http_listen: String,
    _state: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A failed test still stops the demo's processes.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn start(args: &[&str]) -> Demo {
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
        let text: Vec<String> = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = etx.send(text.join("\n"));
    });
    let deadline = std::time::Instant::now() + READY;
    let mut key = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(k) = line.trim().strip_prefix("export KEY=") {
                    key = Some(k.to_string());
                }
                if line.starts_with("Press Ctrl-C to stop.") {
                    break;
                }
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
                let _ = child.wait();
                let said = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                panic!("scripts/demo {args:?} did not come up:\n{said}");
            }
        }
    }
    Demo {
        child,
        key: key.expect("the demo printed the owner's key"),
        listen,
        http_listen,
        _state: state,
    }
}

/// What the printed commands do: a project over gRPC with the printed key,
/// read back over HTTP; then Ctrl-C stops everything.
async fn the_printed_calls_work(mut demo: Demo) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", demo.listen))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the demo's gateway");
    let made = ProjectServiceClient::new(channel.clone())
        .create_project(bearer(
            CreateProjectRequest {
                project_id: "demo-web".into(),
                request_id: "demo-1".into(),
                project: Some(Project {
                    display_name: "Web shop".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
            },
            &demo.key,
        ))
        .await
        .expect("CreateProject with the printed key")
        .into_inner();
    assert_eq!(made.region_status.len(), 2, "{made:?}");
    let got = ProjectServiceClient::new(channel)
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/demo-web".into(),
            },
            &demo.key,
        ))
        .await
        .expect("GetProject")
        .into_inner();
    assert_eq!(got.display_name, "Web shop");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("authorization: Bearer {}", demo.key),
            &format!("http://{}/v1/projects/demo-web", demo.http_listen),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && body.contains("Web shop"), "{body}");

    // Ctrl-C: the demo stops its processes and exits.
    Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .expect("kill -INT");
    let exited = (0..300).find_map(|_| match demo.child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    });
    assert!(exited.is_some(), "the demo did not exit on Ctrl-C");
    assert!(
        std::net::TcpStream::connect(&demo.listen).is_err(),
        "the gateway still listens after Ctrl-C"
    );
}

// One test: the two runs share the demo's fixed cluster ports.
#[tokio::test]
async fn the_demo_and_the_cluster_demo_serve_what_they_print() {
    the_printed_calls_work(start(&[])).await;
    the_printed_calls_work(start(&["--cluster"])).await;
}
