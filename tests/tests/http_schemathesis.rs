//! API fuzzing with schemathesis (PyPI) against the live `/openapi.json`:
//! no server error, and every answer matches the document. Runs when
//! `schemathesis` is on PATH (CI installs it); bounded by examples per
//! operation and a time limit.

use std::process::Command;
use std::time::{Duration, Instant};

use nordlys_tests::{Stack, OPERATOR_KEY};

/// Examples per operation and phase: enough to find type and mapping bugs,
/// few enough for CI.
const MAX_EXAMPLES: &str = "25";

fn schemathesis_installed() -> bool {
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn run(stack: &Stack, key: &str, label: &str) {
    let report = std::env::temp_dir().join(format!(
        "nordlys-schemathesis-{}-{label}",
        std::process::id()
    ));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let url = format!("{}/openapi.json", stack.gateway.http_url());
        let header = format!("Authorization: Bearer {key}");
        let report = report.clone();
        move || {
            std::fs::create_dir_all(&report)?;
            Command::new("schemathesis")
                .args(["run", &url, "--header", &header])
                .args([
                    "--checks",
                    "not_a_server_error,response_schema_conformance,content_type_conformance",
                    "--max-examples",
                    MAX_EXAMPLES,
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--seed",
                    "4",
                    "--request-timeout",
                    "20",
                    "--generation-database",
                    "none",
                    "--no-color",
                    // A watch lasts until its caller's deadline: every
                    // example would wait out the request timeout. The
                    // event tests (events.rs) cover it over HTTP.
                    "--exclude-path",
                    "/v1/events:watch",
                ])
                .arg("--report-dir")
                .arg(report.join("report"))
                // Its caches go in the temp dir, not the source tree.
                .current_dir(&report)
                .env("SCHEMATHESIS_HOOKS", "")
                .output()
        }
    })
    .await
    .unwrap_or_else(|e| panic!("schemathesis task: {e}"))
    .unwrap_or_else(|e| panic!("cannot run schemathesis: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis ({label}) took {:?}\n{}",
        started.elapsed(),
        stdout
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis ({label}) found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&report);
}

#[tokio::test]
async fn schemathesis_finds_no_server_error() {
    if !schemathesis_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is not installed; .ci/run installs it with pip"
        );
        eprintln!("schemathesis not on PATH: skipped");
        return;
    }
    let stack = Stack::start().await;
    let tenant = stack.tenant("fuzz").await;
    let deadline = Duration::from_secs(300);
    let started = Instant::now();
    // As an organization owner (most calls get past authorization), then
    // as the operator (organizations and quotas).
    run(&stack, &tenant.key, "owner").await;
    run(&stack, OPERATOR_KEY, "operator").await;
    assert!(
        started.elapsed() < deadline,
        "schemathesis took {:?}",
        started.elapsed()
    );
    assert!(stack.gateway.http_addr().port() > 0);
}
