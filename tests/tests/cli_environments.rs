//! `nordlysctl plan`, `apply` and `delete-env` against a real stack: a plan
//! lists creates (exit 2), an apply makes them (exit 2), the same apply again
//! changes nothing (exit 0), a bad file fails naming the problem (exit 1), and
//! delete-env removes it all (exit 0).

use std::{path::Path, process::Output};

use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use nordlys_tests::{bin_path, Stack};

const ENV: &str = r#"
name: organizations/acme/environments/shop
parameters: {office: 10.0.0.0/8}
spec:
  parameters: [{name: office, defaultValue: 192.0.2.0/24}]
  project: {projectId: shop, displayName: Shop, regions: [sto1, osl1]}
  networks: [{networkId: backend, region: sto1, cidr: 10.20.0.0/24}]
  accessRules: [{accessRuleId: ssh, region: sto1, direction: INGRESS, protocol: TCP, portRangeMin: 22, portRangeMax: 22, remoteCidr: "${office}"}]
  members: [{userId: ada, role: PROJECT_ROLE_MEMBER, createUser: true, displayName: Ada, email: ada@acme.example}]
"#;

fn nordlysctl(stack: &Stack, key: &str, args: &[&str]) -> Output {
    let endpoint = format!("http://{}", stack.gateway.addr());
    std::process::Command::new(bin_path("nordlysctl"))
        .args(["--endpoint", &endpoint, "--key", key])
        .args(args)
        .env_remove("NORDLYS_API_KEY")
        .env_remove("NO_COLOR")
        .output()
        .expect("run nordlysctl")
}

/// The exit code, stdout and stderr, for assertions and their messages.
/// Each run is echoed, shown when the test fails (or with --nocapture).
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    let (code, out, err) = (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    println!("--- exit {code:?}\n{out}{err}");
    (code, out, err)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the environment file");
    path.to_str().expect("utf-8 temp path").to_owned()
}

#[tokio::test]
async fn plan_apply_and_delete_an_environment() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = tenant.key.as_str();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "env.yaml", ENV);

    // plan: every resource is to be made; nothing is.
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-f", &file]));
    assert_eq!(code, Some(2), "plan\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("Plan for organizations/acme/environments/shop:"),
        "{out}"
    );
    for resource in [
        "project",
        "projects/shop",
        "network",
        "projects/shop/networks/backend",
        "accessRule",
        "user",
        "membership",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("+ create") && l.contains(resource)),
            "no create of {resource}:\n{out}"
        );
    }
    assert!(
        out.contains(" to create, 0 to update, 0 to delete"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when piped: {out:?}");

    // apply: the same steps, each done.
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["apply", "-f", &file]));
    assert_eq!(code, Some(2), "apply\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  done") && l.contains("projects/shop/networks/backend")),
        "{out}"
    );
    assert!(!out.contains("FAILED") && !out.contains("not run"), "{out}");
    assert!(
        out.contains("Applied organizations/acme/environments/shop:"),
        "{out}"
    );

    // apply again: nothing to do, and -v lists what stays.
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["apply", "-f", &file]));
    assert_eq!(code, Some(0), "re-apply\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("No changes"), "{out}");
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-v", "-f", &file]));
    assert_eq!(code, Some(0), "plan -v\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  unchanged") && l.contains("projects/shop/networks/backend")),
        "{out}"
    );

    // A changed network: planned as an update naming the field.
    let changed = write(
        dir.path(),
        "changed.yaml",
        &ENV.replace(
            "cidr: 10.20.0.0/24}",
            "cidr: 10.20.0.0/24, dnsServers: [192.0.2.53]}",
        ),
    );
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-f", &changed]));
    assert_eq!(
        code,
        Some(2),
        "plan an update\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("~ update")
            && l.contains("projects/shop/networks/backend")
            && l.to_lowercase().contains("dns")),
        "{out}"
    );
    assert!(
        out.contains("0 to create, 1 to update, 0 to delete"),
        "{out}"
    );

    // A bad file: exit 1, naming the file and the field.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &ENV.replace("direction: INGRESS", "direction: SIDEWAYS"),
    );
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-f", &bad]));
    assert_eq!(code, Some(1), "bad file\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("bad.yaml") && err.contains("spec.accessRules[0].direction"),
        "{err}"
    );
    assert!(err.contains("SIDEWAYS"), "{err}");

    // A refused call: exit 1 with the gRPC code.
    let other = write(
        dir.path(),
        "other.yaml",
        &ENV.replace("organizations/acme/", "organizations/other/"),
    );
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-f", &other]));
    assert_eq!(code, Some(1), "other org\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("ApplyEnvironment failed:"), "{err}");

    // Over quota: the plan fails before anything is made, with the
    // google.rpc.QuotaFailure on stderr.
    let tight = stack
        .tenant_with_limits(
            "tight",
            ResourceCounts {
                projects: 10,
                users: 10,
                networks: 0,
                access_rules: 10,
            },
        )
        .await;
    let over = write(
        dir.path(),
        "over.yaml",
        &ENV.replace("organizations/acme/", "organizations/tight/"),
    );
    let (code, out, err) = outcome(&nordlysctl(&stack, &tight.key, &["plan", "-f", &over]));
    assert_eq!(code, Some(1), "over quota\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("ResourceExhausted (8)"), "{err}");
    assert!(err.contains("\n  quota "), "the QuotaFailure: {err}");

    // delete-env: every resource removed.
    let (code, out, err) = outcome(&nordlysctl(
        &stack,
        key,
        &["delete-env", "organizations/acme/environments/shop"],
    ));
    assert_eq!(code, Some(0), "delete-env\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  done") && l.contains("- delete")),
        "{out}"
    );
    assert!(
        out.contains("Deleted organizations/acme/environments/shop:"),
        "{out}"
    );

    // Gone: a plan wants to make it all again.
    let (code, out, err) = outcome(&nordlysctl(&stack, key, &["plan", "-f", &file]));
    assert_eq!(
        code,
        Some(2),
        "plan after delete\nstdout:\n{out}\nstderr:\n{err}"
    );
}
