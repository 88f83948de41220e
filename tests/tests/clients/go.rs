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
    support::run_scenario(Command::new(&scenario), &env).await;
}
