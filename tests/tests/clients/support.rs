//! What every client test shares: the stack, the tenant, and running a
//! client's scenario as a child process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nordlys_tests::{Stack, StackOpts, Tenant};

/// The repository's `clients/{lang}` directory.
pub(crate) fn client_dir(lang: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("clients")
        .join(lang)
}

fn required() -> bool {
    std::env::var("NORDLYS_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

/// Whether `ready` (the client's toolchain and generated code) holds; when
/// not, fails under `NORDLYS_REQUIRE_CLIENTS=1` and otherwise says why the
/// test skips.
pub(crate) fn available(lang: &str, ready: bool, why: &str) -> bool {
    if ready {
        return true;
    }
    assert!(
        !required(),
        "the {lang} client cannot run and NORDLYS_REQUIRE_CLIENTS=1: {why} (clients/{lang}/setup prepares it)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "skipping the {lang} client: {why} (clients/{lang}/setup prepares it)"
    );
    false
}

/// A stack and a tenant of organization `acme` to run a scenario against.
pub(crate) async fn stack() -> (Stack, Tenant) {
    let stack = Stack::start_with(StackOpts::default()).await;
    let tenant = stack.tenant("acme").await;
    (stack, tenant)
}

/// The environment a client scenario reads: where the gateway listens and
/// the API key to call with.
pub(crate) fn scenario_env(stack: &Stack, tenant: &Tenant) -> Vec<(&'static str, String)> {
    vec![
        ("NORDLYS_GRPC_ADDR", stack.gateway.addr().to_string()),
        ("NORDLYS_HTTP_URL", stack.gateway.http_url()),
        ("NORDLYS_API_KEY", tenant.key.clone()),
        ("NORDLYS_ORGANIZATION", tenant.organization.clone()),
    ]
}

/// Whether `program ARG` runs (`java -version`, `node --version`).
pub(crate) fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `command` (with `env`) to its end, at most two minutes, off the
/// async runtime so the stack's tasks go on meanwhile; panics with its
/// output when it fails or takes longer.
pub(crate) async fn run(command: Command, env: &[(&'static str, String)]) -> Output {
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || run_blocking(command, &env, Duration::from_secs(120)))
        .await
        // A failed run panics in the blocking task: show that panic as ours.
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn run_blocking(mut command: Command, env: &[(&str, String)], limit: Duration) -> Output {
    for (k, v) in env {
        command.env(k, v);
    }
    let shown = format!("{command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "{shown} took longer than {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{shown}: {e}"),
        }
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        output.status.success(),
        "{shown} failed ({})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a scenario program (the Go and Python clients' `scenario`) and checks
/// the lines it prints as it goes: the paging, the bad CIDR's field
/// violation, and its end.
pub(crate) async fn run_scenario(command: Command, env: &[(&'static str, String)]) {
    let output = run(command, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Shown with --nocapture, or when an assertion below fails.
    eprintln!("{stdout}");
    for start in [
        "listed ",
        "bad CIDR refused: network.cidr: ",
        "scenario passed",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(start)),
            "no line starting {start:?} in:\n{stdout}"
        );
    }
}
