//! The go client (clients/go).

use std::process::Command;

use crate::support;

/// `clients/go/setup` builds the scenario into `clients/go/bin/scenario`, so
/// no Go is compiled at test time.
#[tokio::test]
async fn go_client_runs_the_scenario() {
    let scenario = support::client_dir("go").join("bin").join("scenario");
    let ready = scenario.is_file();
    let why = format!("{} is not built", scenario.display());
    if !support::available("go", ready, &why) {
        return;
    }
    let (stack, tenant) = support::stack().await;
    let env = support::scenario_env(&stack, &tenant);
    let output = support::run(Command::new(&scenario), &env).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Shown with --nocapture, or when an assertion below fails.
    eprintln!("{stdout}");
    for line in [
        "listed ",
        "bad CIDR refused: network.cidr: ",
        "scenario passed",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in:\n{stdout}"
        );
    }
}
