//! The python client (clients/python).

use std::process::Command;

use crate::support;

/// `clients/python/setup` makes `clients/python/.venv` with the package and
/// its generated code installed; the scenario runs on that venv's python.
#[tokio::test]
async fn python_client_runs_the_scenario() {
    let dir = support::client_dir("python");
    let python = dir.join(".venv").join("bin").join("python");
    let generated = dir.join("src/nordlys/v1/projects_pb2_grpc.py");
    let ready = python.is_file() && generated.is_file();
    let why = format!("{} or {} is missing", python.display(), generated.display());
    if !support::available("python", ready, &why) {
        return;
    }
    let (stack, tenant) = support::stack().await;
    let env = support::scenario_env(&stack, &tenant);
    let mut command = Command::new(&python);
    command.arg(dir.join("examples").join("scenario.py"));
    support::run_scenario(command, &env).await;
}
