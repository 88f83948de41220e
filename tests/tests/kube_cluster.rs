//! The Kubernetes harness itself: a real etcd, kube-apiserver and
//! kube-controller-manager on loopback (see `nordlys_tests::kube`).

use std::{
    thread,
    time::{Duration, Instant},
};

use nordlys_tests::kube::{self, KubeCluster};

/// Polls `done` every 200 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    done()
}

#[test]
fn cluster_serves_namespaces_rbac_and_survives_an_apiserver_restart() {
    if !kube::available("kube_cluster") {
        return;
    }
    let started = Instant::now();
    let cluster = KubeCluster::start();
    eprintln!("cluster started in {:.1?}", started.elapsed());

    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig())
        .unwrap_or_else(|e| panic!("{}: {e}", cluster.kubeconfig().display()));
    assert!(kubeconfig.contains(&format!("server: {}", cluster.server())));
    assert!(kubeconfig.contains("certificate-authority-data: "));
    assert!(!kubeconfig.contains("insecure-skip-tls-verify"));

    // RBAC bootstrap: the apiserver created the default cluster roles.
    let roles = cluster.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for role in ["admin", "edit", "view", "cluster-admin"] {
        assert!(
            roles
                .lines()
                .any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{role}")),
            "no ClusterRole {role} in:\n{roles}"
        );
    }
    let whoami = cluster.kubectl_ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami.trim(), kube::ADMIN_USER);

    cluster.kubectl_ok(&["create", "namespace", "x"]);
    let namespaces = cluster.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        namespaces.lines().any(|l| l == "namespace/x"),
        "namespace x not listed:\n{namespaces}"
    );
    // Content for the namespace controller to delete first.
    cluster.kubectl_ok(&["-n", "x", "create", "configmap", "c", "--from-literal=k=v"]);

    // The namespace controller empties the namespace and removes its
    // `kubernetes` finalizer; without it, x stays Terminating. It waits 5 s
    // after the event first, so this takes a little over 5 s.
    let deleting = Instant::now();
    cluster.kubectl_ok(&["delete", "namespace", "x", "--wait=false"]);
    let gone = wait_until(Duration::from_secs(30), || {
        let out = cluster.kubectl(&["get", "namespace", "x", "-o", "name"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    assert!(
        gone,
        "namespace x still there 30 s after delete: {}\n{}",
        String::from_utf8_lossy(
            &cluster
                .kubectl(&["get", "namespace", "x", "-o", "yaml"])
                .stdout
        ),
        cluster.logs()
    );
    eprintln!("namespace x deleted in {:.1?}", deleting.elapsed());

    // Fault: the apiserver goes away and comes back on the same port,
    // with its data still in etcd.
    cluster.kubectl_ok(&["create", "namespace", "y"]);
    cluster.stop_apiserver();
    let out = cluster.kubectl(&["get", "namespaces", "--request-timeout=2s"]);
    assert!(
        !out.status.success(),
        "kubectl worked with the apiserver stopped"
    );
    let restarting = Instant::now();
    cluster.start_apiserver();
    eprintln!("apiserver restarted in {:.1?}", restarting.elapsed());
    let namespaces = cluster.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        namespaces.lines().any(|l| l == "namespace/y"),
        "namespace y lost over the restart:\n{namespaces}"
    );
    // The controller manager reconnects by itself.
    cluster.kubectl_ok(&["delete", "namespace", "y", "--wait=false"]);
    let gone = wait_until(Duration::from_secs(30), || {
        !cluster
            .kubectl(&["get", "namespace", "y", "-o", "name"])
            .status
            .success()
    });
    assert!(
        gone,
        "namespace y not deleted after the restart\n{}",
        cluster.logs()
    );
}
