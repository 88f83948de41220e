//! The Kubernetes backend against a real kube-apiserver (etcd and
//! kube-controller-manager beside it) on loopback: regiond `--backend kube`
//! serving `osl1`, beside a simulated `sto1`, quota, the gateway and
//! nats-server. After each scenario kubectl confirms what exists in the
//! cluster. Skips (saying why) without etcd, kubectl and the kube binaries,
//! unless NORDLYS_REQUIRE_KUBE is set.

use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    membership_service_client::MembershipServiceClient,
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    quota_service_client::QuotaServiceClient, region_service_client::RegionServiceClient,
    user_service_client::UserServiceClient, AccessRule, CreateAccessRuleRequest,
    CreateMembershipRequest, CreateNetworkRequest, CreateProjectRequest, CreateUserRequest,
    DeleteMembershipRequest, DeleteProjectRequest, Direction, GetProjectQuotaRequest,
    GetProjectRequest, ListRegionsRequest, Membership, Network, Project, ProjectRole, Protocol,
    UpdateAccessRuleRequest, User,
};
use nordlys_tests::kube::{self, KubeCluster};
use nordlys_tests::openstack;
use nordlys_tests::{bearer, Gateway, GatewayOpts, NatsServer, Quota, Regiond, OPERATOR_KEY};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

/// osl1's `[kube]` tier: a ResourceQuota and a LimitRange.
const TIERS: &str = r#"
default_tier = "small"
[kube.tiers.small.quota]
pods = "10"
services = "5"
"requests.cpu" = "2"
[kube.tiers.small.default_limits]
cpu = "500m"
memory = "256Mi"
"#;

/// nats-server, quota, a simulated `sto1`, `osl1` on the cluster, and the
/// gateway. Fields drop in order: the gateway first.
struct KubeStack {
    gateway: Gateway,
    osl1: Regiond,
    _sto1: Regiond,
    _quota: Quota,
    nats: NatsServer,
    installation: String,
}

impl KubeStack {
    async fn start(cluster: &KubeCluster, osl1_env: &[(&str, &str)]) -> KubeStack {
        let nats = NatsServer::start();
        let quota = Quota::start(&nats);
        let installation = format!("k{}", nats.port());
        // The settle sweeper finishes what a crash leaves within seconds.
        let mut env = vec![
            ("NORDLYS_SETTLE_GRACE_MS", "3000"),
            ("NORDLYS_SETTLE_INTERVAL_MS", "500"),
        ];
        env.extend_from_slice(osl1_env);
        let osl1 = kube::regiond(&nats.url(), cluster, "osl1", &installation, TIERS, &env);
        let sto1 = Regiond::start_with(&nats, "sto1", &["--backend", "kv"]);
        let gateway = Gateway::start(&nats, &GatewayOpts::default());
        let stack = KubeStack {
            gateway,
            osl1,
            _sto1: sto1,
            _quota: quota,
            nats,
            installation,
        };
        stack
            .gateway
            .wait_for_regions(|r| {
                nordlys_tests::instances(r, "sto1") == 1 && nordlys_tests::instances(r, "osl1") == 1
            })
            .await;
        stack
    }

    /// The namespace of project `id`.
    fn namespace(&self, id: &str) -> String {
        format!("{}-{id}", self.installation)
    }
}

fn json(cluster: &KubeCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cluster.kubectl_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
}

/// Whether `kubectl get` finds the object.
fn exists(cluster: &KubeCluster, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    cluster.kubectl(&all).status.success()
}

fn project(id: &str, regions: &[&str], request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: format!("Project {id}"),
            description: "made by the kube tests".into(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        project_id: id.into(),
        request_id: request_id.into(),
    }
}

fn state_in(p: &Project, region: &str) -> Option<(i32, i32)> {
    p.region_status
        .iter()
        .find(|s| s.region == region)
        .map(|s| (s.state, s.code))
}

#[tokio::test]
async fn a_project_in_a_kube_region_is_a_namespace_with_its_members_rules_and_tier() {
    if !kube::available("kube scenarios") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(kube::shared)
        .await
        .expect("cluster");
    let stack = KubeStack::start(cluster, &[]).await;
    let tenant = stack.gateway.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.gateway.channel().await;
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut memberships = MembershipServiceClient::new(channel.clone());
    let mut networks = NetworkServiceClient::new(channel.clone());
    let mut rules = AccessRuleServiceClient::new(channel.clone());

    // ListRegions tells the kinds apart, and what each serves.
    let regions = RegionServiceClient::new(channel.clone())
        .list_regions(bearer(ListRegionsRequest {}, OPERATOR_KEY))
        .await
        .expect("ListRegions")
        .into_inner()
        .regions;
    let region = |name: &str| {
        regions
            .iter()
            .find(|r| r.name == format!("regions/{name}"))
            .unwrap_or_else(|| panic!("{name} in {regions:?}"))
            .clone()
    };
    assert_eq!(region("osl1").kind, "kube");
    assert_eq!(
        region("osl1").resources,
        ["projects", "users", "memberships", "accessRules"]
    );
    assert_eq!(region("sto1").kind, "kv");
    assert!(region("sto1").resources.contains(&"networks".to_string()));

    // A project in both regions answers per region; in osl1 it is a
    // labelled, annotated namespace with the default-deny policy and tier.
    let web = projects
        .create_project(bearer(project("web", &["sto1", "osl1"], "req-web"), key))
        .await
        .expect("CreateProject")
        .into_inner();
    assert_eq!(state_in(&web, "osl1"), Some((1, 0)), "{web:?}");
    assert_eq!(state_in(&web, "sto1"), Some((1, 0)), "{web:?}");
    let ns_name = stack.namespace("web");
    let ns = json(cluster, &["get", "namespace", &ns_name]);
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["nordlys.io/organization"], "acme", "{ns}");
    assert_eq!(labels["nordlys.io/project"], "web", "{ns}");
    assert_eq!(labels["nordlys.io/tier"], "small", "{ns}");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "nordlys", "{ns}");
    let annotations = &ns["metadata"]["annotations"];
    assert_eq!(annotations["nordlys.io/display-name"], "Project web");
    assert_eq!(annotations["nordlys.io/regions"], "sto1,osl1");
    assert!(annotations.get("nordlys.io/incomplete").is_none(), "{ns}");
    let deny = json(
        cluster,
        &[
            "get",
            "networkpolicy",
            "nordlys-default-deny",
            "-n",
            &ns_name,
        ],
    );
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let quota = json(
        cluster,
        &["get", "resourcequota", "nordlys-tier", "-n", &ns_name],
    );
    assert_eq!(quota["spec"]["hard"]["pods"], "10", "{quota}");
    let limits = json(
        cluster,
        &["get", "limitrange", "nordlys-tier", "-n", &ns_name],
    );
    assert_eq!(
        limits["spec"]["limits"][0]["default"]["memory"], "256Mi",
        "{limits}"
    );
    // GetProjectQuota shows the ResourceQuota.
    let shown = QuotaServiceClient::new(channel.clone())
        .get_project_quota(bearer(
            GetProjectQuotaRequest {
                name: "projects/web/quota".into(),
            },
            key,
        ))
        .await
        .expect("GetProjectQuota")
        .into_inner();
    let osl1 = shown
        .regions
        .iter()
        .find(|r| r.region == "osl1")
        .unwrap_or_else(|| panic!("osl1 in {shown:?}"));
    assert_eq!(osl1.tier, "small");
    let hard = &osl1.limits.as_ref().expect("limits").resource_quota;
    assert_eq!(hard.get("pods").map(String::as_str), Some("10"), "{osl1:?}");

    // A user and a membership: a ConfigMap, and a RoleBinding of `edit`
    // to the subject the organization and user ids name.
    users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(User {
                    display_name: "Ada".into(),
                    email: "ada@acme.example".into(),
                    regions: vec!["osl1".into()],
                    ..Default::default()
                }),
                user_id: "ada".into(),
                request_id: "req-ada".into(),
            },
            key,
        ))
        .await
        .expect("CreateUser");
    let user_cm = json(
        cluster,
        &["get", "configmap", "acme.ada", "-n", &stack.installation],
    );
    assert_eq!(user_cm["data"]["email"], "ada@acme.example", "{user_cm}");
    let granted = memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/web".into(),
                membership: Some(Membership {
                    user: format!("{org}/users/ada"),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: "req-member".into(),
            },
            key,
        ))
        .await;
    // The user is in osl1 only: sto1 answers per region.
    let granted = granted.expect("CreateMembership").into_inner();
    let granted_in = granted
        .region_status
        .iter()
        .find(|s| s.region == "osl1")
        .map(|s| s.state);
    assert_eq!(granted_in, Some(1), "{granted:?}");
    let rb = json(
        cluster,
        &["get", "rolebinding", "member-ada", "-n", &ns_name],
    );
    assert_eq!(rb["roleRef"]["kind"], "ClusterRole", "{rb}");
    assert_eq!(rb["roleRef"]["name"], "edit", "{rb}");
    assert_eq!(rb["subjects"][0]["kind"], "User", "{rb}");
    assert_eq!(rb["subjects"][0]["name"], "acme:ada", "{rb}");
    // The cluster's own RBAC now lets that user edit the namespace, and
    // only that one.
    let can = |ns: &str| {
        cluster
            .kubectl(&[
                "auth",
                "can-i",
                "create",
                "deployments",
                "-n",
                ns,
                "--as",
                "acme:ada",
            ])
            .status
            .success()
    };
    assert!(
        can(&ns_name),
        "acme:ada may create deployments in its project"
    );
    assert!(!can("default"), "and nowhere else");

    // An access rule is a NetworkPolicy; ICMP has no NetworkPolicy.
    let ssh = rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/web".into(),
                access_rule: Some(AccessRule {
                    region: "osl1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Tcp as i32,
                    port_range_min: 8000,
                    port_range_max: 8080,
                    remote_cidr: "10.0.0.0/8".into(),
                    description: "Web from the office".into(),
                    ..Default::default()
                }),
                access_rule_id: "web-ports".into(),
                request_id: "req-rule".into(),
            },
            key,
        ))
        .await
        .expect("CreateAccessRule")
        .into_inner();
    assert_eq!((ssh.port_range_min, ssh.port_range_max), (8000, 8080));
    let np = json(
        cluster,
        &["get", "networkpolicy", "rule-web-ports", "-n", &ns_name],
    );
    let ingress = &np["spec"]["ingress"][0];
    assert_eq!(ingress["from"][0]["ipBlock"]["cidr"], "10.0.0.0/8", "{np}");
    assert_eq!(ingress["ports"][0]["protocol"], "TCP", "{np}");
    assert_eq!(ingress["ports"][0]["port"], 8000, "{np}");
    assert_eq!(ingress["ports"][0]["endPort"], 8080, "{np}");
    let changed = rules
        .update_access_rule(bearer(
            UpdateAccessRuleRequest {
                access_rule: Some(AccessRule {
                    name: ssh.name.clone(),
                    description: "Web from the new office".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("UpdateAccessRule")
        .into_inner();
    assert_eq!(changed.description, "Web from the new office");
    let np = json(
        cluster,
        &["get", "networkpolicy", "rule-web-ports", "-n", &ns_name],
    );
    assert_eq!(
        np["metadata"]["annotations"]["nordlys.io/description"],
        "Web from the new office"
    );
    let icmp = rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/web".into(),
                access_rule: Some(AccessRule {
                    region: "osl1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Icmp as i32,
                    remote_cidr: "10.0.0.0/8".into(),
                    ..Default::default()
                }),
                access_rule_id: "ping".into(),
                request_id: "req-ping".into(),
            },
            key,
        ))
        .await
        .expect_err("no ICMP in a NetworkPolicy");
    assert_eq!(icmp.code(), Code::FailedPrecondition, "{icmp:?}");
    assert!(icmp.message().contains("ICMP"), "{icmp:?}");

    // No networks in a Kubernetes region: refused before any quota is
    // taken, naming the region; sto1 makes them as ever.
    let network = |region: &str, id: &str| CreateNetworkRequest {
        parent: "projects/web".into(),
        network: Some(Network {
            region: region.into(),
            cidr: "10.20.0.0/24".into(),
            ..Default::default()
        }),
        network_id: id.into(),
        request_id: format!("req-{id}"),
    };
    let refused = networks
        .create_network(bearer(network("osl1", "backend"), key))
        .await
        .expect_err("no networks in osl1");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let violations = refused
        .get_details_precondition_failure()
        .map(|p| p.violations)
        .unwrap_or_default();
    assert_eq!(violations.len(), 1, "{refused:?}");
    assert_eq!(violations[0].r#type, "UNSUPPORTED_IN_REGION");
    assert_eq!(violations[0].subject, "regions/osl1");
    networks
        .create_network(bearer(network("sto1", "backend"), key))
        .await
        .expect("sto1 has networks");
    let usage = stack
        .gateway
        .quota(key, org, "osl1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!(usage.networks, 0, "{usage:?}");

    // Revoking removes the RoleBinding; deleting the project removes the
    // namespace with everything in it, before the call answers.
    memberships
        .delete_membership(bearer(
            DeleteMembershipRequest {
                name: "projects/web/members/ada".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteMembership");
    assert!(!exists(
        cluster,
        &["rolebinding", "member-ada", "-n", &ns_name]
    ));
    projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteProject");
    assert!(!exists(cluster, &["namespace", &ns_name]), "namespace gone");
    // And the name is free again at once.
    projects
        .create_project(bearer(project("web", &["osl1"], "req-web-2"), key))
        .await
        .expect("made again");
    assert!(exists(cluster, &["namespace", &ns_name]));
    let usage = stack
        .gateway
        .quota(key, org, "osl1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!((usage.projects, usage.access_rules), (1, 0), "{usage:?}");
}

#[tokio::test]
async fn a_create_cut_short_after_its_namespace_finishes_on_retry() {
    if !kube::available("kube crash") {
        return;
    }
    let cluster = tokio::task::spawn_blocking(kube::shared)
        .await
        .expect("cluster");
    let mut stack = KubeStack::start(cluster, &[("NORDLYS_TEST_CRASH_AFTER", "namespace")]).await;
    let tenant = stack.gateway.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.gateway.channel().await);
    let cut = projects
        .create_project(bearer(project("crashy", &["osl1"], "req-crash"), key))
        .await;
    // osl1's only daemon died at the hook: the gateway cannot say it exists.
    match &cut {
        Ok(p) => assert_ne!(state_in(p.get_ref(), "osl1").map(|s| s.0), Some(1), "{p:?}"),
        Err(status) => assert!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            "{status:?}"
        ),
    }
    assert!(!stack.osl1.is_running(), "regiond aborted at the hook");
    let ns_name = stack.namespace("crashy");
    let ns = json(cluster, &["get", "namespace", &ns_name]);
    assert_eq!(
        ns["metadata"]["annotations"]["nordlys.io/incomplete"], "true",
        "made, not finished: {ns}"
    );
    assert!(!exists(
        cluster,
        &["networkpolicy", "nordlys-default-deny", "-n", &ns_name]
    ));

    // Restarted without the hook: the retry (or the region's sweeper,
    // whichever comes first) finishes the namespace, once.
    stack.osl1 = kube::regiond(
        &stack.nats.url(),
        cluster,
        "osl1",
        &stack.installation,
        TIERS,
        &[],
    );
    stack
        .gateway
        .wait_for_regions(|r| nordlys_tests::instances(r, "osl1") == 1)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let made = loop {
        match projects
            .create_project(bearer(project("crashy", &["osl1"], "req-crash"), key))
            .await
        {
            Ok(p) if state_in(p.get_ref(), "osl1").map(|s| s.0) == Some(1) => break p.into_inner(),
            other => assert!(Instant::now() < deadline, "not finished: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(made.name, "projects/crashy");
    let ns = json(cluster, &["get", "namespace", &ns_name]);
    assert!(
        ns["metadata"]["annotations"]
            .get("nordlys.io/incomplete")
            .is_none(),
        "{ns}"
    );
    assert!(exists(
        cluster,
        &["networkpolicy", "nordlys-default-deny", "-n", &ns_name]
    ));
    assert!(exists(
        cluster,
        &["resourcequota", "nordlys-tier", "-n", &ns_name]
    ));
    let got = projects
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/crashy".into(),
            },
            key,
        ))
        .await
        .expect("GetProject")
        .into_inner();
    assert_eq!(state_in(&got, "osl1"), Some((1, 0)), "{got:?}");
}

#[tokio::test]
async fn a_stopped_apiserver_answers_unavailable_and_the_region_recovers() {
    if !kube::available("kube outage") {
        return;
    }
    // Its own cluster: stopping the shared one would fail other tests.
    let cluster = tokio::task::spawn_blocking(KubeCluster::start)
        .await
        .expect("cluster");
    let stack = KubeStack::start(&cluster, &[]).await;
    let tenant = stack.gateway.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.gateway.channel().await);
    projects
        .create_project(bearer(project("web", &["sto1", "osl1"], "req-web"), key))
        .await
        .expect("CreateProject");

    cluster.stop_apiserver();
    let get = || {
        let mut projects = projects.clone();
        async move {
            projects
                .get_project(bearer(
                    GetProjectRequest {
                        name: "projects/web".into(),
                    },
                    key,
                ))
                .await
        }
    };
    // sto1 answers; osl1 is UNREACHABLE with UNAVAILABLE, never INTERNAL.
    let web = get().await.expect("GetProject").into_inner();
    assert_eq!(
        state_in(&web, "osl1"),
        Some((3, Code::Unavailable as i32)),
        "{web:?}"
    );
    let made = projects
        .clone()
        .create_project(bearer(project("api", &["osl1"], "req-api"), key))
        .await;
    match made {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(p) => assert_eq!(
            state_in(p.get_ref(), "osl1"),
            Some((3, Code::Unavailable as i32)),
            "{p:?}"
        ),
    }

    cluster.start_apiserver();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let web = get().await.expect("GetProject").into_inner();
        if state_in(&web, "osl1") == Some((1, 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "osl1 back: {web:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One project over an OpenStack region (`sto1`, real Keystone and
/// Neutron) and a Kubernetes one (`osl1`): each region answers for itself,
/// and each cloud holds its own form of the same project, member and rule.
#[tokio::test]
async fn a_project_spanning_an_openstack_and_a_kube_region_answers_per_region() {
    if !kube::available("kube and openstack") || !openstack::available("kube and openstack") {
        return;
    }
    let (nats, sto1_cloud) = {
        let starting = std::thread::spawn(|| openstack::OpenStackRegion::start("sto1"));
        let nats = NatsServer::start();
        (nats, starting.join().expect("sto1 starts"))
    };
    let cluster = tokio::task::spawn_blocking(kube::shared)
        .await
        .expect("cluster");
    let _quota = Quota::start(&nats);
    let config = openstack::regiond_config("");
    let _sto1 = openstack::regiond(&nats, &sto1_cloud, config.path(), &[]);
    let installation = format!("m{}", nats.port());
    let _osl1 = kube::regiond(&nats.url(), cluster, "osl1", &installation, TIERS, &[]);
    let gateway = Gateway::start(&nats, &GatewayOpts::default());
    gateway
        .wait_for_regions(|r| {
            nordlys_tests::instances(r, "sto1") == 1 && nordlys_tests::instances(r, "osl1") == 1
        })
        .await;
    let tenant = gateway.tenant("mixed").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = gateway.channel().await;
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut rules = AccessRuleServiceClient::new(channel.clone());

    let both = projects
        .create_project(bearer(project("both", &["sto1", "osl1"], "req-both"), key))
        .await
        .expect("CreateProject")
        .into_inner();
    assert_eq!(state_in(&both, "sto1"), Some((1, 0)), "{both:?}");
    assert_eq!(state_in(&both, "osl1"), Some((1, 0)), "{both:?}");
    // Keystone has a tagged project in the organization's domain; the
    // cluster a labelled namespace.
    let tagged = sto1_cloud.openstack(&["project", "list", "--tags", "nordlys-project:both"]);
    assert_eq!(openstack::column(&tagged, "Name"), ["both"], "{tagged}");
    let ns_name = format!("{installation}-both");
    let ns = json(cluster, &["get", "namespace", &ns_name]);
    assert_eq!(ns["metadata"]["labels"]["nordlys.io/organization"], "mixed");

    // A rule in each region: a Neutron security group rule and a
    // NetworkPolicy; both read back the same through the API.
    for region in ["sto1", "osl1"] {
        let made = rules
            .create_access_rule(bearer(
                CreateAccessRuleRequest {
                    parent: "projects/both".into(),
                    access_rule: Some(AccessRule {
                        region: region.into(),
                        direction: Direction::Ingress as i32,
                        protocol: Protocol::Tcp as i32,
                        port_range_min: 443,
                        port_range_max: 443,
                        remote_cidr: "192.0.2.0/24".into(),
                        description: format!("HTTPS in {region}"),
                        ..Default::default()
                    }),
                    access_rule_id: format!("https-{region}"),
                    request_id: format!("req-https-{region}"),
                },
                key,
            ))
            .await
            .unwrap_or_else(|e| panic!("CreateAccessRule in {region}: {e:?}"))
            .into_inner();
        assert_eq!(made.region, region);
        assert_eq!((made.port_range_min, made.port_range_max), (443, 443));
        assert_eq!(made.remote_cidr, "192.0.2.0/24");
    }
    let np = json(
        cluster,
        &["get", "networkpolicy", "rule-https-osl1", "-n", &ns_name],
    );
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 443, "{np}");
    let project_id = openstack::column(&tagged, "ID").remove(0);
    let groups = sto1_cloud.openstack(&["security", "group", "list", "--project", &project_id]);
    let names = openstack::column(&groups, "Name");
    let ids = openstack::column(&groups, "ID");
    let group = names
        .iter()
        .position(|n| n == "nordlys")
        .map(|i| ids[i].clone())
        .unwrap_or_else(|| panic!("no nordlys group: {groups}"));
    let neutron = sto1_cloud.openstack(&["security", "group", "rule", "list", &group, "--long"]);
    assert!(
        neutron.to_string().contains("192.0.2.0/24"),
        "the sto1 rule is in Neutron: {neutron}"
    );

    // A network: made in sto1, refused in osl1; the project answers for
    // both regions still.
    let mut networks = NetworkServiceClient::new(channel.clone());
    let network = |region: &str| CreateNetworkRequest {
        parent: "projects/both".into(),
        network: Some(Network {
            region: region.into(),
            cidr: "10.44.0.0/24".into(),
            ..Default::default()
        }),
        network_id: format!("net-{region}"),
        request_id: format!("req-net-{region}"),
    };
    networks
        .create_network(bearer(network("sto1"), key))
        .await
        .expect("a network in OpenStack");
    let refused = networks
        .create_network(bearer(network("osl1"), key))
        .await
        .expect_err("none in Kubernetes");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Deleting the project removes both clouds' forms and frees both
    // regions' quota.
    projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/both".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteProject");
    assert!(!exists(cluster, &["namespace", &ns_name]));
    let tagged = sto1_cloud.openstack(&["project", "list", "--tags", "nordlys-project:both"]);
    assert!(openstack::column(&tagged, "Name").is_empty(), "{tagged}");
    for region in ["sto1", "osl1"] {
        let usage = gateway
            .quota(key, org, region)
            .await
            .usage
            .unwrap_or_default();
        assert_eq!(
            (usage.projects, usage.networks, usage.access_rules),
            (0, 0, 0),
            "{region}: {usage:?}"
        );
    }
}
