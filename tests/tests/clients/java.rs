//! The java client (clients/java): its quickstart and scenario, packaged by
//! clients/java/setup (mvn package: grpc-java through Maven's protobuf plugin)
//! into one shaded jar, run with java against a live stack over plaintext
//! gRPC.

use std::path::Path;
use std::process::{Command, Output};

use super::support;

/// The shaded jar `mvn package` makes; its main class is the scenario.
const JAR: &str = "target/nordlys-client-all.jar";

/// Runs `java {args}` in the client's folder.
async fn java(dir: &Path, args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new("java");
    command.args(args).current_dir(dir);
    support::run(command, env).await
}

#[tokio::test]
async fn quickstart_and_scenario() {
    let dir = support::client_dir("java");
    let built = dir.join(JAR).is_file();
    let java_runs = support::runs("java", "-version");
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
