//! The java client (clients/java): its quickstart and scenario, packaged by
//! clients/java/setup (mvn package: grpc-java through Maven's protobuf plugin)
//! into one shaded jar, run with java against a live stack over plaintext
//! gRPC.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::support;

/// The shaded jar `mvn package` makes; its main class is the scenario.
const JAR: &str = "target/nordlys-client-all.jar";

/// Whether `java -version` runs.
fn java_runs() -> bool {
    Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `java {args}` in the client's folder off the async runtime, so the
/// stack's tasks go on while it waits.
async fn java(dir: &Path, args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new("java");
    command.args(args).current_dir(dir);
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || support::run(command, &env, Duration::from_secs(120)))
        .await
        // A failed run panics in the blocking task: show that panic as ours.
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[tokio::test]
async fn quickstart_and_scenario() {
    let dir = support::client_dir("java");
    let built = dir.join(JAR).is_file();
    let java_runs = java_runs();
    let why = if !java_runs {
        "java is not on PATH"
    } else {
        "target/nordlys-client-all.jar is not built"
    };
    if !support::available("java", built && java_runs, why) {
        return;
    }

    let (stack, tenant) = support::stack().await;
    let env = support::scenario_env(&stack, &tenant);

    let quickstart = java(
        &dir,
        &["-cp", JAR, "io.nordlys.client.examples.Quickstart"],
        &env,
    )
    .await;
    let printed = String::from_utf8_lossy(&quickstart.stdout);
    assert!(
        printed.contains("deleted projects/quickstart-"),
        "quickstart:\n{printed}"
    );

    let scenario = java(&dir, &["-jar", JAR], &env).await;
    let printed = String::from_utf8_lossy(&scenario.stdout);
    for step in [
        "-alpha in osl1, sto1",
        // A fresh stack: the quickstart deleted its project.
        "listed 3 projects one a page",
        "-alpha/networks/web (10.20.0.0/24 in sto1, gateway 10.20.0.1)",
        "bad CIDR refused: INVALID_ARGUMENT, network.cidr:",
        "scenario: ok",
    ] {
        assert!(
            printed.contains(step),
            "no {step:?} in the scenario's output:\n{printed}"
        );
    }
}
