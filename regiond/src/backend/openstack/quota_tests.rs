//! Quota tiers and usage against a real Keystone, Neutron, Nova API and
//! Cinder API on loopback (skips without the Debian packages, unless
//! NORDLYS_REQUIRE_OPENSTACK is set).

use std::collections::BTreeMap;

use nordlys_proto::pb::nordlys::v1::Project;
use nordlys_tests::openstack::{self, OpenStackRegion};

use super::{OpenStackBackend, QuotaUse};
use crate::backend::{Backend, BackendError, Tenant};
use crate::config::OpenStackConfig;

fn config(region: &OpenStackRegion, tier: &[(&str, i64)]) -> OpenStackConfig {
    OpenStackConfig {
        cloud: region.name().to_string(),
        clouds_file: Some(region.clouds_file()),
        namespace: "qt".into(),
        default_tier: "std".into(),
        tiers: BTreeMap::from([(
            "std".to_string(),
            tier.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        )]),
        ..Default::default()
    }
}

fn used(limit: i64, in_use: i64) -> QuotaUse {
    QuotaUse { limit, in_use }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_set_nova_and_cinder_quotas_and_usage_reads_them() {
    if !openstack::available_with_compute("openstack quota sets") {
        return;
    }
    let region = tokio::task::spawn_blocking(|| OpenStackRegion::start_with_compute("quotasets"))
        .await
        .expect("region");
    let tier = [
        ("network", 3),
        ("instances", 4),
        ("cores", 6),
        ("ram", 8192),
        ("volumes", 5),
        ("gigabytes", 100),
        ("snapshots", 2),
    ];
    let backend = OpenStackBackend::connect("sto1", &config(&region, &tier))
        .await
        .expect("connects");
    let acme = Tenant::Organization("organizations/acme".into());
    backend
        .create_project(
            &acme,
            "req-quota",
            Project {
                name: "projects/sized".into(),
                organization: "organizations/acme".into(),
                ..Default::default()
            },
        )
        .await
        .expect("creates");

    let usage = backend
        .project_quota_usage(&acme, "projects/sized")
        .await
        .expect("reads usage");
    let compute = usage.compute.expect("the region has Nova");
    let volume = usage.volume.expect("the region has Cinder");
    assert_eq!(compute["instances"], used(4, 0));
    assert_eq!(compute["cores"], used(6, 0));
    assert_eq!(compute["ram"], used(8192, 0));
    assert_eq!(volume["volumes"], used(5, 0));
    assert_eq!(volume["gigabytes"], used(100, 0));
    assert_eq!(volume["snapshots"], used(2, 0));

    // Nova counts a live instance of the project (a row in its cell).
    let shown = tokio::task::block_in_place(|| {
        region.openstack(&["project", "show", "sized", "--domain", "qt-acme"])
    });
    let id = shown["id"].as_str().expect("project id").to_string();
    tokio::task::block_in_place(|| region.add_instance(&id, 2, 2048));
    let compute = backend
        .project_quota_usage(&acme, "projects/sized")
        .await
        .expect("reads usage")
        .compute
        .expect("the region has Nova");
    assert_eq!(compute["instances"], used(4, 1));
    assert_eq!(compute["cores"], used(6, 2));
    assert_eq!(compute["ram"], used(8192, 2048));

    // Another organization's project is not found, whatever it holds.
    let other = Tenant::Organization("organizations/other".into());
    assert!(matches!(
        backend.project_quota_usage(&other, "projects/sized").await,
        Err(BackendError::NotFound { .. })
    ));

    // A delete puts the project's Nova and Cinder quotas back too (a
    // second project keeps its own).
    backend
        .create_project(
            &acme,
            "req-quota-2",
            Project {
                name: "projects/gone".into(),
                organization: "organizations/acme".into(),
                ..Default::default()
            },
        )
        .await
        .expect("creates");
    backend
        .delete_project(&acme, "projects/gone")
        .await
        .expect("deletes with its quotas");

    // Without Nova in the catalog a tier sizing it stops regiond at start.
    tokio::task::block_in_place(|| region.openstack_quiet(&["service", "delete", "nova"]));
    let refused = OpenStackBackend::connect("sto1", &config(&region, &tier))
        .await
        .expect_err("no compute endpoint");
    assert!(
        refused.to_string().contains("no compute endpoint"),
        "{refused}"
    );
    // A Neutron-only tier still starts there, and usage leaves Nova out.
    let neutron_only = OpenStackBackend::connect("sto1", &config(&region, &[("network", 3)]))
        .await
        .expect("connects");
    let usage = neutron_only
        .project_quota_usage(&acme, "projects/sized")
        .await
        .expect("reads usage");
    assert_eq!(usage.compute, None);
    assert_eq!(usage.volume.map(|v| v["volumes"]), Some(used(5, 0)));
}
