//! Every binary answers `--help`, and stops gracefully (exit 0) on SIGTERM.

use std::process::Command;

use nordlys_tests::{bin_path, Gateway, GatewayOpts, NatsServer, Quota, Regiond};

#[test]
fn every_binary_has_help() {
    for name in ["gateway", "regiond", "quota", "nordlysctl"] {
        let output = Command::new(bin_path(name))
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(output.status.success(), "{name} --help: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Usage"), "{name} --help says: {text}");
    }
}

#[test]
fn every_service_stops_gracefully_on_sigterm() {
    let nats = NatsServer::start();
    let mut quota = Quota::start(&nats);
    let mut regiond = Regiond::start(&nats, "sto1");
    let mut gateway = Gateway::start(&nats, &GatewayOpts::default());
    assert!(!quota.id().is_empty());
    assert!(!regiond.id().is_empty());

    for (name, status) in [
        ("gateway", gateway.terminate()),
        ("regiond", regiond.terminate()),
        ("quota", quota.terminate()),
    ] {
        let status = status.unwrap_or_else(|| panic!("{name} did not stop within 10 s"));
        assert!(status.success(), "{name} exited with {status}");
    }
}
