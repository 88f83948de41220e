//! One suite every backend must pass, run against each of them (the kv
//! backend against a real nats-server with JetStream).

use nordlys_proto::pb::nordlys::v1::{
    AccessRule, Membership, Network, Project, ResourceCounts, User,
};

use super::*;

/// Runs each suite test against a backend made by `$make`, which returns
/// the backend and a guard kept alive for the test, or `None` when the
/// backend cannot run here (the test then passes, having said why).
macro_rules! run_suite {
    ($backend:ident, $make:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            use super::$make;
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((backend, _guard)) = $make().await else {
                        return;
                    };
                    super::suite::$test(backend.as_ref()).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($backend:ident => $make:ident),* $(,)?) => {
        $(
            run_suite!($backend, $make, [
                request_ids_replay_per_tenant_and_names_are_unique,
                other_tenants_see_nothing,
                lists_are_sorted_filtered_and_bounded,
                memberships_need_the_project_and_a_user_of_its_org_here,
                deleting_a_project_frees_its_children,
                deletes_of_absent_resources_are_not_found,
                updates_change_what_they_name_if_the_etag_holds,
                users_change_their_name_and_email,
                networks_change_their_dns_servers_in_place,
                access_rules_change_their_description_only,
            ]);
        )*
    };
}

all_backends!(memory => memory_backend, kv => kv_backend);
#[cfg(feature = "openstack")]
all_backends!(openstack => openstack_backend);
#[cfg(feature = "kube")]
all_backends!(kube => kube_backend);

async fn memory_backend() -> Option<(Box<dyn Backend>, ())> {
    Some((Box::new(MemoryBackend::new("sto1")), ()))
}

async fn kv_backend() -> Option<(Box<dyn Backend>, nordlys_tests::NatsServer)> {
    let nats = nordlys_tests::NatsServer::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let backend = KvBackend::open(client, "sto1").await.expect("bucket");
    Some((Box::new(backend), nats))
}

/// A real Keystone and Neutron, shared by the tests of this process; each
/// test gets its own namespace (its own domains and tags), so it starts
/// from an empty region.
#[cfg(feature = "openstack")]
async fn openstack_backend() -> Option<(Box<dyn Backend>, ())> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if !nordlys_tests::openstack::available("openstack conformance") {
        return None;
    }
    let region = tokio::task::spawn_blocking(nordlys_tests::openstack::OpenStackRegion::shared)
        .await
        .expect("region");
    let config = crate::config::OpenStackConfig {
        cloud: region.name().to_string(),
        clouds_file: Some(region.clouds_file()),
        namespace: format!(
            "c{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        ..Default::default()
    };
    let backend = OpenStackBackend::connect("sto1", &config)
        .await
        .expect("connects to the test region");
    Some((Box::new(backend), ()))
}

/// A real kube-apiserver (with etcd and the namespace controller), shared
/// by the tests of this process; each test gets its own installation
/// namespace, so it starts from an empty region.
#[cfg(feature = "kube")]
async fn kube_backend() -> Option<(Box<dyn Backend>, ())> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if !nordlys_tests::kube::available("kube conformance") {
        return None;
    }
    let cluster = tokio::task::spawn_blocking(nordlys_tests::kube::shared)
        .await
        .expect("cluster");
    let config = crate::config::KubeConfig {
        kubeconfig: Some(cluster.kubeconfig().to_path_buf()),
        namespace: format!(
            "c{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        ..Default::default()
    };
    let backend = KubeBackend::connect("sto1", &config)
        .await
        .expect("connects to the test cluster");
    Some((Box::new(backend), ()))
}

mod suite {
    use super::*;

    /// Whether the backend's kind of cloud has networks.
    fn has_networks(b: &dyn Backend) -> bool {
        !b.unsupported().contains(&ResourceKind::Network)
    }

    /// A network create where networks are unsupported: FAILED_PRECONDITION
    /// naming the region, whoever asks.
    async fn network_refused(b: &dyn Backend, tenant: &Tenant, network: Network) {
        let err = b
            .create_network(tenant, "", network)
            .await
            .expect_err("no networks here");
        assert!(
            matches!(
                err,
                BackendError::Unsupported {
                    kind: ResourceKind::Network,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(b.list_networks(&all(10)).await.expect("list").is_empty());
    }

    const ACME: &str = "organizations/acme";

    fn acme() -> Tenant {
        Tenant::Organization(ACME.into())
    }

    fn project(id: &str, org: &str) -> Project {
        Project {
            name: format!("projects/{id}"),
            organization: org.into(),
            display_name: id.into(),
            ..Default::default()
        }
    }

    fn user(org: &str, id: &str) -> User {
        User {
            name: format!("{org}/users/{id}"),
            ..Default::default()
        }
    }

    fn network(project: &str, id: &str) -> Network {
        Network {
            name: format!("projects/{project}/networks/{id}"),
            region: "sto1".into(),
            cidr: "10.0.0.0/24".into(),
            ..Default::default()
        }
    }

    fn rule(project: &str, id: &str) -> AccessRule {
        AccessRule {
            name: format!("projects/{project}/accessRules/{id}"),
            region: "sto1".into(),
            ..Default::default()
        }
    }

    fn membership(project: &str, org: &str, user: &str) -> Membership {
        Membership {
            name: format!("projects/{project}/members/{user}"),
            user: format!("{org}/users/{user}"),
            role: 2,
            ..Default::default()
        }
    }

    fn all(limit: usize) -> Filter {
        Filter {
            limit,
            ..Default::default()
        }
    }

    pub(super) async fn request_ids_replay_per_tenant_and_names_are_unique(b: &dyn Backend) {
        let first = b
            .create_project(&acme(), "req-1", project("web", ACME))
            .await
            .expect("created");
        // Same request id, other body: the first result.
        let again = b
            .create_project(&acme(), "req-1", project("other", ACME))
            .await
            .expect("replayed");
        assert_eq!(again, first);
        // Same name without the request id.
        let err = b
            .create_project(&acme(), "", project("web", ACME))
            .await
            .expect_err("exists");
        assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err:?}");
        // Another tenant's request id space is its own.
        let err = b
            .create_project(
                &Tenant::Organization("organizations/b".into()),
                "req-1",
                project("web", "organizations/b"),
            )
            .await
            .expect_err("name taken");
        assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(b.list_projects(&all(10)).await.expect("list").len(), 1);
    }

    pub(super) async fn updates_change_what_they_name_if_the_etag_holds(b: &dyn Backend) {
        let mut web = project("web", ACME);
        web.description = "Shop".into();
        let made = b.create_project(&acme(), "", web).await.expect("created");
        let etag = nordlys_api::update::project_etag(&made);
        let changed = b
            .update_project(
                &acme(),
                "projects/web",
                &ProjectChange {
                    display_name: Some("Web shop".into()),
                    etag: etag.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("updated");
        assert_eq!(changed.display_name, "Web shop");
        assert_eq!(
            changed.description, "Shop",
            "what the change leaves alone stays"
        );
        let got = b.get_project(&acme(), "projects/web").await.expect("get");
        assert_eq!(got.display_name, "Web shop");
        assert_eq!(got.create_time, made.create_time);
        assert_eq!(got.regions, made.regions);
        // The etag read before the change is stale now.
        let err = b
            .update_project(
                &acme(),
                "projects/web",
                &ProjectChange {
                    description: Some(String::new()),
                    etag,
                    ..Default::default()
                },
            )
            .await
            .expect_err("stale etag");
        assert!(matches!(err, BackendError::EtagMismatch { .. }), "{err:?}");
        // Without an etag, it applies; another tenant cannot see it.
        b.update_project(
            &acme(),
            "projects/web",
            &ProjectChange {
                description: Some(String::new()),
                ..Default::default()
            },
        )
        .await
        .expect("unconditional");
        assert_eq!(
            b.get_project(&acme(), "projects/web")
                .await
                .expect("get")
                .description,
            ""
        );
        // A new placement is recorded as given, and changes the etag.
        let before = b.get_project(&acme(), "projects/web").await.expect("get");
        let mut regions = before.regions.clone();
        regions.push("zz9".into());
        let placed = b
            .update_project(
                &acme(),
                "projects/web",
                &ProjectChange {
                    regions: Some(regions.clone()),
                    etag: nordlys_api::update::project_etag(&before),
                    ..Default::default()
                },
            )
            .await
            .expect("placed");
        assert_eq!(placed.regions, regions);
        let got = b.get_project(&acme(), "projects/web").await.expect("get");
        assert_eq!(got.regions, regions);
        assert_eq!(got.display_name, "Web shop");
        assert_ne!(
            nordlys_api::update::project_etag(&got),
            nordlys_api::update::project_etag(&before)
        );
        let err = b
            .update_project(
                &Tenant::Organization("organizations/b".into()),
                "projects/web",
                &ProjectChange {
                    display_name: Some("Mine".into()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("not theirs");
        assert!(matches!(err, BackendError::NotFound { .. }), "{err:?}");
    }

    pub(super) async fn users_change_their_name_and_email(b: &dyn Backend) {
        let mut alice = user(ACME, "alice");
        alice.display_name = "Alice".into();
        alice.email = "alice@acme.example".into();
        let made = b.create_user(&acme(), "", alice).await.expect("created");
        let etag = nordlys_api::update::user_etag(&made);
        let change = UserChange {
            email: Some("alice@new.example".into()),
            etag: etag.clone(),
            ..Default::default()
        };
        let changed = b
            .update_user(&acme(), &made.name, &change)
            .await
            .expect("updated");
        assert_eq!(changed.email, "alice@new.example");
        assert_eq!(changed.display_name, "Alice");
        let got = b.get_user(&acme(), &made.name).await.expect("get");
        assert_eq!(got.email, "alice@new.example");
        assert_eq!(got.display_name, "Alice");
        let err = b
            .update_user(&acme(), &made.name, &change)
            .await
            .expect_err("stale etag");
        assert!(matches!(err, BackendError::EtagMismatch { .. }), "{err:?}");
        let err = b
            .update_user(
                &Tenant::Organization("organizations/b".into()),
                &made.name,
                &UserChange {
                    display_name: Some("Mallory".into()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("not theirs");
        assert!(matches!(err, BackendError::NotFound { .. }), "{err:?}");
    }

    pub(super) async fn networks_change_their_dns_servers_in_place(b: &dyn Backend) {
        b.create_project(&acme(), "", project("web", ACME))
            .await
            .expect("project");
        if !has_networks(b) {
            return network_refused(b, &acme(), network("web", "backend")).await;
        }
        let mut net = network("web", "backend");
        net.gateway_ip = "10.0.0.1".into();
        net.dns_servers = vec!["10.0.0.2".into()];
        let made = b.create_network(&acme(), "", net).await.expect("network");
        let change = NetworkChange {
            dns_servers: Some(vec!["10.0.0.3".into(), "10.0.0.4".into()]),
            etag: nordlys_api::update::network_etag(&made),
        };
        let changed = b
            .update_network(&acme(), &made.name, &change)
            .await
            .expect("updated");
        assert_eq!(changed.dns_servers, ["10.0.0.3", "10.0.0.4"]);
        assert_eq!(changed.cidr, made.cidr);
        let got = b.get_network(&acme(), &made.name).await.expect("get");
        assert_eq!(got.dns_servers, ["10.0.0.3", "10.0.0.4"]);
        assert_eq!(got.create_time, made.create_time);
        let err = b
            .update_network(&acme(), &made.name, &change)
            .await
            .expect_err("stale etag");
        assert!(matches!(err, BackendError::EtagMismatch { .. }), "{err:?}");
        let err = b
            .update_network(
                &Tenant::Organization("organizations/b".into()),
                &made.name,
                &NetworkChange::default(),
            )
            .await
            .expect_err("not theirs");
        assert!(matches!(err, BackendError::NotFound { .. }), "{err:?}");
    }

    pub(super) async fn access_rules_change_their_description_only(b: &dyn Backend) {
        b.create_project(&acme(), "", project("web", ACME))
            .await
            .expect("project");
        let mut ssh = rule("web", "ssh");
        ssh.direction = 1;
        ssh.protocol = 2;
        ssh.port_range_min = 22;
        ssh.port_range_max = 22;
        ssh.remote_cidr = "10.0.0.0/8".into();
        ssh.description = "SSH".into();
        let made = b
            .create_access_rule(&acme(), "rule-req", ssh)
            .await
            .expect("rule");
        let change = AccessRuleChange {
            description: Some("SSH from the office".into()),
            etag: nordlys_api::update::access_rule_etag(&made),
        };
        let changed = b
            .update_access_rule(&acme(), &made.name, &change)
            .await
            .expect("updated");
        assert_eq!(changed.description, "SSH from the office");
        assert_eq!(
            (changed.port_range_min, changed.remote_cidr.as_str()),
            (22, "10.0.0.0/8")
        );
        let got = b.get_access_rule(&acme(), &made.name).await.expect("get");
        assert_eq!(got.description, "SSH from the office");
        assert_eq!(got.create_time, made.create_time);
        // The create's request id still replays to the same rule.
        let mut again = rule("web", "ssh");
        again.direction = 1;
        again.protocol = 2;
        again.port_range_min = 22;
        again.port_range_max = 22;
        again.remote_cidr = "10.0.0.0/8".into();
        let replayed = b
            .create_access_rule(&acme(), "rule-req", again)
            .await
            .expect("replay");
        assert_eq!(replayed.name, made.name);
        let err = b
            .update_access_rule(&acme(), &made.name, &change)
            .await
            .expect_err("stale etag");
        assert!(matches!(err, BackendError::EtagMismatch { .. }), "{err:?}");
        let err = b
            .update_access_rule(
                &Tenant::Organization("organizations/b".into()),
                &made.name,
                &AccessRuleChange::default(),
            )
            .await
            .expect_err("not theirs");
        assert!(matches!(err, BackendError::NotFound { .. }), "{err:?}");
        // Made again under the same id, a rule has its own description.
        b.delete_access_rule(&acme(), &made.name)
            .await
            .expect("deleted");
        let mut anew = rule("web", "ssh");
        anew.direction = 1;
        anew.protocol = 2;
        anew.port_range_min = 2222;
        anew.port_range_max = 2222;
        anew.remote_cidr = "10.0.0.0/8".into();
        anew.description = "fresh".into();
        b.create_access_rule(&acme(), "rule-req-2", anew)
            .await
            .expect("made again");
        let got = b.get_access_rule(&acme(), &made.name).await.expect("get");
        assert_eq!(got.description, "fresh");
    }

    pub(super) async fn other_tenants_see_nothing(b: &dyn Backend) {
        b.create_project(&acme(), "", project("web", ACME))
            .await
            .expect("created");
        let other = Tenant::Organization("organizations/other".into());
        let err = b
            .get_project(&other, "projects/web")
            .await
            .expect_err("hidden");
        assert!(matches!(err, BackendError::NotFound { .. }));
        let err = b
            .delete_project(&other, "projects/web")
            .await
            .expect_err("hidden");
        assert!(matches!(err, BackendError::NotFound { .. }));
        let err = b
            .create_network(&other, "", network("web", "net"))
            .await
            .expect_err("hidden project");
        assert_eq!(
            err,
            BackendError::NotFound {
                kind: ResourceKind::Project,
                name: "projects/web".into(),
                region: "sto1".into()
            }
        );
        assert!(b.get_project(&Tenant::Any, "projects/web").await.is_ok());
    }

    pub(super) async fn lists_are_sorted_filtered_and_bounded(b: &dyn Backend) {
        for id in ["ccc", "aaa", "bbb", "ddd"] {
            b.create_project(&acme(), "", project(id, ACME))
                .await
                .expect("created");
        }
        b.create_project(&Tenant::Any, "", project("zzz", "organizations/b"))
            .await
            .expect("created");
        let names = |ps: Vec<Project>| ps.into_iter().map(|p| p.name).collect::<Vec<_>>();
        let page = b
            .list_projects(&Filter {
                organization: Some(ACME.into()),
                after: "projects/aaa".into(),
                limit: 2,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(names(page), ["projects/bbb", "projects/ccc"]);
        let everything = b.list_projects(&all(100)).await.expect("list");
        assert_eq!(everything.len(), 5);
    }

    pub(super) async fn memberships_need_the_project_and_a_user_of_its_org_here(b: &dyn Backend) {
        b.create_project(&acme(), "", project("web", ACME))
            .await
            .expect("created");
        let err = b
            .create_membership(&acme(), "", membership("web", ACME, "ada"))
            .await
            .expect_err("no user");
        assert!(
            matches!(err, BackendError::UserNotInRegion { .. }),
            "{err:?}"
        );
        let err = b
            .create_membership(&acme(), "", membership("web", "organizations/b", "ada"))
            .await
            .expect_err("other org");
        assert!(
            matches!(err, BackendError::UserOfOtherOrganization { .. }),
            "{err:?}"
        );
        let err = b
            .create_membership(&acme(), "", membership("nope", ACME, "ada"))
            .await
            .expect_err("no project");
        assert!(matches!(
            err,
            BackendError::NotFound {
                kind: ResourceKind::Project,
                ..
            }
        ));
        b.create_user(&acme(), "", user(ACME, "ada"))
            .await
            .expect("user");
        b.create_membership(&acme(), "", membership("web", ACME, "ada"))
            .await
            .expect("granted");
        // Deleting the user takes its memberships along.
        let removed = b
            .delete_user(&acme(), "organizations/acme/users/ada")
            .await
            .expect("deleted");
        assert_eq!(removed.freed.users, 1);
        assert_eq!(removed.organization, ACME);
        assert!(b.list_memberships(&all(10)).await.expect("list").is_empty());
    }

    pub(super) async fn deleting_a_project_frees_its_children(b: &dyn Backend) {
        for id in ["web", "webshop"] {
            b.create_project(&acme(), "", project(id, ACME))
                .await
                .expect("created");
        }
        b.create_user(&acme(), "", user(ACME, "ada"))
            .await
            .expect("user");
        b.create_membership(&acme(), "", membership("web", ACME, "ada"))
            .await
            .expect("granted");
        let networks = has_networks(b);
        if networks {
            for id in ["net-a", "net-b"] {
                b.create_network(&acme(), "", network("web", id))
                    .await
                    .expect("network");
            }
            b.create_network(&acme(), "", network("webshop", "net-a"))
                .await
                .expect("network");
        }
        b.create_access_rule(&acme(), "req-r", rule("web", "ssh"))
            .await
            .expect("rule");
        let removed = b
            .delete_project(&acme(), "projects/web")
            .await
            .expect("deleted");
        assert_eq!(removed.organization, ACME);
        assert_eq!(
            removed.freed,
            ResourceCounts {
                projects: 1,
                users: 0,
                networks: if networks { 2 } else { 0 },
                access_rules: 1
            }
        );
        assert!(b.list_memberships(&all(10)).await.expect("list").is_empty());
        assert!(b
            .list_access_rules(&all(10))
            .await
            .expect("list")
            .is_empty());
        assert_eq!(
            b.list_networks(&all(10)).await.expect("list").len(),
            usize::from(networks)
        );
        // The users stay; the rule's request id is forgotten with it.
        assert_eq!(b.list_users(&all(10)).await.expect("list").len(), 1);
        b.create_project(&acme(), "", project("web", ACME))
            .await
            .expect("again");
        let rule_again = b
            .create_access_rule(&acme(), "req-r", rule("web", "other"))
            .await
            .expect("created anew");
        assert_eq!(rule_again.name, "projects/web/accessRules/other");
    }

    pub(super) async fn deletes_of_absent_resources_are_not_found(b: &dyn Backend) {
        let t = acme();
        assert!(b.delete_project(&t, "projects/x").await.is_err());
        assert!(b
            .delete_user(&t, "organizations/acme/users/x")
            .await
            .is_err());
        assert!(b
            .delete_membership(&t, "projects/x/members/y")
            .await
            .is_err());
        assert!(b.delete_network(&t, "projects/x/networks/y").await.is_err());
        assert!(b
            .delete_access_rule(&t, "projects/x/accessRules/y")
            .await
            .is_err());
    }
}
