//! The typescript client (clients/typescript): its quickstart and scenario,
//! compiled to `dist/` by clients/typescript/setup (npm ci, buf generate,
//! tsc), run with node against a live stack over gRPC (plaintext HTTP/2).

use std::path::Path;
use std::process::{Command, Output};

use super::support;

/// Runs `node {script}` in the client's folder.
async fn node(dir: &Path, script: &str, env: &[(&'static str, String)]) -> Output {
    let mut command = Command::new("node");
    command.arg(script).current_dir(dir);
    support::run(command, env).await
}

#[tokio::test]
async fn quickstart_and_scenario() {
    let dir = support::client_dir("typescript");
    let built = ["dist/examples/quickstart.js", "dist/examples/scenario.js"]
        .iter()
        .all(|script| dir.join(script).is_file());
    let node_runs = support::runs("node", "--version");
    let why = if !node_runs {
        "node is not on PATH"
    } else {
        "dist/examples/{quickstart,scenario}.js are not built"
    };
    if !support::available("typescript", built && node_runs, why) {
        return;
    }

    let (stack, tenant) = support::stack().await;
    let env = support::scenario_env(&stack, &tenant);

    let quickstart = node(&dir, "dist/examples/quickstart.js", &env).await;
    let printed = String::from_utf8_lossy(&quickstart.stdout);
    assert!(
        printed.contains("deleted projects/quickstart-"),
        "quickstart:\n{printed}"
    );

    let scenario = node(&dir, "dist/examples/scenario.js", &env).await;
    let printed = String::from_utf8_lossy(&scenario.stdout);
    for step in [
        "-alpha in osl1, sto1",
        // A fresh stack: the quickstart deleted its project.
        "listed 3 projects one a page",
        "-alpha/networks/web (10.20.0.0/24 in sto1, gateway 10.20.0.1)",
        "bad CIDR refused: InvalidArgument, network.cidr:",
        "scenario: ok",
    ] {
        assert!(
            printed.contains(step),
            "no {step:?} in the scenario's output:\n{printed}"
        );
    }
}
