//! `nordlys-kube-cluster`: starts a local Kubernetes control plane (etcd,
//! kube-apiserver and kube-controller-manager on loopback, as the tests do)
//! for `scripts/demo --kube`, prints a ready line with its kubeconfig, and
//! serves until killed; the cluster's daemons exit with it.
//!
//! ```text
//! nordlys-kube ready kubeconfig=/tmp/nordlys-kube-.../admin.kubeconfig server=https://127.0.0.1:41234
//! ```

use std::io::Write;
use std::process::ExitCode;

use nordlys_tests::kube::{self, KubeCluster};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: nordlys-kube-cluster  (no arguments)");
        return ExitCode::from(2);
    }
    if !kube::available("nordlys-kube-cluster") {
        return ExitCode::FAILURE;
    }
    let cluster = KubeCluster::start();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "nordlys-kube ready kubeconfig={} server={}",
        cluster.kubeconfig().display(),
        cluster.server()
    );
    let _ = out.flush();
    drop(out);
    // Serve until killed; the daemons' watchdogs follow this process out.
    loop {
        std::thread::park();
    }
}
