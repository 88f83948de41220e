//! The OpenStack backend against real Keystone and Neutron: two regions
//! (`sto1`, `osl1`) on loopback, regiond `--backend openstack`, quota, the
//! gateway and nats-server. After each scenario the real `openstack` CLI
//! confirms what exists in each region. Skips (saying why) without the
//! Debian packages, unless NORDLYS_REQUIRE_OPENSTACK is set.

use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    membership_service_client::MembershipServiceClient,
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    quota_service_client::QuotaServiceClient, user_service_client::UserServiceClient, AccessRule,
    CreateAccessRuleRequest, CreateMembershipRequest, CreateNetworkRequest, CreateProjectRequest,
    CreateUserRequest, DeleteMembershipRequest, DeleteProjectRequest, DeleteUserRequest, Direction,
    GetAccessRuleRequest, GetNetworkRequest, GetProjectRequest, ListMembershipsRequest,
    ListNetworksRequest, Membership, Network, Project, ProjectRole, Protocol,
    ReconcileQuotasRequest, User,
};
use nordlys_tests::openstack::{self, column, OpenStackRegion, OpenStackStack};
use nordlys_tests::{bearer, Gateway, GatewayOpts, NatsServer, Quota, OPERATOR_KEY};
use nordlys_transport::{Identity, NatsChannel, Role};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

/// The tests of this file take turns: each runs two or three Keystones and
/// Neutrons, and a 2-core CI machine answers slowly with all at once.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        // Some CLI versions print lists as "a, b".
        Value::String(s) => s.split(", ").map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The Keystone project id of a Nordlys project, checked on the way: in
/// the organization's domain, tagged with the organization and project ids.
fn keystone_project(region: &OpenStackRegion, org: &str, project: &str) -> String {
    let domain = format!("nordlys-{org}");
    let shown = region.openstack_many(&[
        cmd(&["domain", "show", &domain]),
        cmd(&["project", "show", project, "--domain", &domain]),
    ]);
    assert_eq!(shown[0]["name"], domain.as_str(), "{}", region.name());
    let tags = strings(&shown[1]["tags"]);
    for tag in [
        "nordlys".to_string(),
        format!("nordlys-org:{org}"),
        format!("nordlys-project:{project}"),
    ] {
        assert!(
            tags.contains(&tag),
            "{}: {tag} missing from {tags:?}",
            region.name()
        );
    }
    shown[1]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no project id: {}", shown[1]))
        .to_string()
}

/// The scenario's access rule: SSH from the office network, request `rule-1`.
fn ssh_from_the_office() -> CreateAccessRuleRequest {
    CreateAccessRuleRequest {
        parent: "projects/web".into(),
        access_rule: Some(AccessRule {
            region: "sto1".into(),
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: 22,
            port_range_max: 22,
            remote_cidr: "10.0.0.0/8".into(),
            description: "SSH from the office".into(),
            ..Default::default()
        }),
        access_rule_id: "ssh".into(),
        request_id: "rule-1".into(),
    }
}

#[tokio::test]
async fn scenarios_through_the_gateway_show_up_in_keystone_and_neutron() {
    if !openstack::available("openstack scenarios") {
        return;
    }
    let _turn = TURN.lock().await;
    let started = Instant::now();
    let stack = OpenStackStack::start().await;
    eprintln!(
        "two OpenStack regions and the stack up in {:?}",
        started.elapsed()
    );
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let (sto1, osl1) = (stack.region("sto1"), stack.region("osl1"));
    let channel = stack.channel().await;
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut memberships = MembershipServiceClient::new(channel.clone());
    let mut networks = NetworkServiceClient::new(channel.clone());
    let mut rules = AccessRuleServiceClient::new(channel);

    // Projects: a domain per organization, a tagged project in it, the
    // managed security group and the organization's quota tier.
    let web = projects
        .create_project(bearer(
            CreateProjectRequest {
                project: Some(Project {
                    display_name: "Web shop / frontend".into(),
                    description: "The shop".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
                project_id: "web".into(),
                request_id: "create-web-1".into(),
            },
            key,
        ))
        .await
        .expect("CreateProject")
        .into_inner();
    assert_eq!(web.name, "projects/web");
    let got = projects
        .get_project(bearer(
            GetProjectRequest {
                name: web.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetProject")
        .into_inner();
    assert_eq!(got.display_name, "Web shop / frontend");
    assert_eq!(got.description, "The shop");
    let mut ids = Vec::new();
    for region in [sto1, osl1] {
        let id = keystone_project(region, "acme", "web");
        let shown = region.openstack_many(&[
            cmd(&["security", "group", "list", "--project", &id]),
            cmd(&["quota", "list", "--network", "--project", &id]),
        ]);
        // Neutron adds its own `default` group to every project.
        let groups = column(&shown[0], "Name");
        assert_eq!(
            groups.iter().filter(|g| *g == "nordlys").count(),
            1,
            "{}: {groups:?}",
            region.name()
        );
        assert_eq!(
            column(&shown[1], "Networks"),
            ["2"],
            "the small tier in {}: {}",
            region.name(),
            shown[1]
        );
        ids.push(id);
    }
    let (sto1_id, osl1_id) = (ids[0].clone(), ids[1].clone());

    // Users: a Keystone user in the organization's domain of each region
    // the user is placed in.
    let ada = users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(User {
                    display_name: "Ada".into(),
                    email: "ada@acme.example".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
                user_id: "ada".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateUser")
        .into_inner();
    for region in [sto1, osl1] {
        let user = region.openstack(&["user", "show", "ada", "--domain", "nordlys-acme"]);
        assert_eq!(user["email"], "ada@acme.example", "{}", region.name());
    }

    // Memberships: Keystone role assignments.
    let granted = memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/web".into(),
                membership: Some(Membership {
                    user: ada.name.clone(),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateMembership")
        .into_inner();
    assert_eq!(granted.name, "projects/web/members/ada");
    let listed = memberships
        .list_memberships(bearer(
            ListMembershipsRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListMemberships")
        .into_inner();
    assert_eq!(listed.memberships.len(), 1, "{listed:?}");
    assert_eq!(listed.memberships[0].role, ProjectRole::Member as i32);
    for (region, id) in [(sto1, &sto1_id), (osl1, &osl1_id)] {
        let assignments =
            region.openstack(&["role", "assignment", "list", "--project", id, "--names"]);
        assert_eq!(
            column(&assignments, "Role"),
            ["member"],
            "{}: {assignments}",
            region.name()
        );
        assert_eq!(
            column(&assignments, "User"),
            ["ada@nordlys-acme"],
            "{}",
            region.name()
        );
    }

    // Networks: a Neutron network and subnet, IPv4 in sto1, IPv6 in osl1.
    let v4 = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.20.0.0/24".into(),
                    dns_servers: vec!["10.20.0.2".into()],
                    ..Default::default()
                }),
                network_id: "backend".into(),
                request_id: "net-1".into(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork v4")
        .into_inner();
    assert_eq!(v4.gateway_ip, "10.20.0.1");
    assert!(v4.create_time.is_some());
    let v6 = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "osl1".into(),
                    cidr: "fd00:10::/64".into(),
                    ..Default::default()
                }),
                network_id: "backend6".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork v6")
        .into_inner();
    assert_eq!(v6.cidr, "fd00:10::/64");
    let got = networks
        .get_network(bearer(
            GetNetworkRequest {
                name: v4.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetNetwork")
        .into_inner();
    assert_eq!(got.dns_servers, ["10.20.0.2"]);
    for (region, id, name, cidr, gateway) in [
        (sto1, &sto1_id, "backend", "10.20.0.0/24", "10.20.0.1"),
        (osl1, &osl1_id, "backend6", "fd00:10::/64", "fd00:10::1"),
    ] {
        let shown = region.openstack_many(&[
            cmd(&["network", "list", "--project", id]),
            cmd(&["subnet", "list", "--project", id, "--long"]),
        ]);
        assert_eq!(column(&shown[0], "Name"), [name], "{}", region.name());
        assert_eq!(column(&shown[1], "Name"), [name], "{}", region.name());
        assert_eq!(column(&shown[1], "Subnet"), [cidr], "{}", region.name());
        assert_eq!(column(&shown[1], "Gateway"), [gateway], "{}", region.name());
    }

    // Neutron's own quota (the small tier: two networks per project) is
    // RESOURCE_EXHAUSTED, with Neutron's words in the details.
    networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.21.0.0/24".into(),
                    ..Default::default()
                }),
                network_id: "second".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("the second network fits the tier");
    let over = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/web".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.22.0.0/24".into(),
                    ..Default::default()
                }),
                network_id: "third".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect_err("Neutron's quota of the small tier is 2 networks");
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    let info = over.get_error_details();
    let info = info.error_info().expect("the region's words in ErrorInfo");
    assert_eq!(
        info.metadata.get("service").map(String::as_str),
        Some("neutron")
    );
    assert!(
        info.metadata
            .get("message")
            .is_some_and(|m| m.contains("Quota exceeded")),
        "{info:?}"
    );
    assert!(!format!("{over:?}").contains(openstack::ADMIN_PASSWORD));

    // Access rules: rules of the project's managed security group, and only
    // those (Neutron's default allow-all egress rules are gone).
    let ssh = rules
        .create_access_rule(bearer(ssh_from_the_office(), key))
        .await
        .expect("CreateAccessRule")
        .into_inner();
    // The same request id for another rule is refused: an id names one create.
    let other = rules
        .create_access_rule(bearer(
            CreateAccessRuleRequest {
                parent: "projects/web".into(),
                access_rule: Some(AccessRule {
                    region: "sto1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: Protocol::Udp as i32,
                    remote_cidr: "10.0.0.0/8".into(),
                    ..Default::default()
                }),
                access_rule_id: "other".into(),
                request_id: "rule-1".into(),
            },
            key,
        ))
        .await
        .expect_err("a request id names one create");
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    // The same create retried returns the first rule.
    let again = rules
        .create_access_rule(bearer(ssh_from_the_office(), key))
        .await
        .expect("a retried CreateAccessRule")
        .into_inner();
    assert_eq!(
        again.name, ssh.name,
        "the same request id returns the first rule"
    );
    let got = rules
        .get_access_rule(bearer(
            GetAccessRuleRequest {
                name: ssh.name.clone(),
            },
            key,
        ))
        .await
        .expect("GetAccessRule")
        .into_inner();
    assert_eq!(got.description, "SSH from the office");
    assert_eq!((got.port_range_min, got.port_range_max), (22, 22));
    let groups = sto1.openstack(&["security", "group", "list", "--project", &sto1_id]);
    let group = groups
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["Name"] == "nordlys"))
        .and_then(|g| g["ID"].as_str())
        .unwrap_or_else(|| panic!("no nordlys group: {groups}"))
        .to_string();
    let shown = sto1.openstack(&["security", "group", "rule", "list", &group, "--long"]);
    assert_eq!(
        shown.as_array().map(Vec::len),
        Some(1),
        "only the access rule: {shown}"
    );
    assert_eq!(column(&shown, "IP Protocol"), ["tcp"]);
    assert_eq!(column(&shown, "IP Range"), ["10.0.0.0/8"]);
    assert_eq!(column(&shown, "Port Range"), ["22:22"]);
    assert_eq!(column(&shown, "Direction"), ["ingress"]);

    // Delete: the membership goes, then the project with everything in it,
    // in both regions; the domain and the user stay until the user goes.
    memberships
        .delete_membership(bearer(
            DeleteMembershipRequest {
                name: granted.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteMembership");
    let assignments = sto1.openstack(&["role", "assignment", "list", "--project", &sto1_id]);
    assert_eq!(
        assignments.as_array().map(Vec::len),
        Some(0),
        "{assignments}"
    );
    projects
        .delete_project(bearer(
            DeleteProjectRequest {
                name: web.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteProject");
    for (region, id) in [(sto1, &sto1_id), (osl1, &osl1_id)] {
        // The project is gone from Keystone, so look for its id in
        // everything Neutron has.
        let shown = region.openstack_many(&[
            cmd(&["project", "list", "--tags", "nordlys"]),
            cmd(&["network", "list", "--long"]),
            cmd(&["subnet", "list", "--long"]),
            cmd(&["security", "group", "list"]),
            cmd(&["user", "list", "--domain", "nordlys-acme"]),
        ]);
        assert_eq!(
            shown[0].as_array().map(Vec::len),
            Some(0),
            "{}: projects left: {}",
            region.name(),
            shown[0]
        );
        for (what, list) in ["networks", "subnets", "security groups"]
            .iter()
            .zip(&shown[1..4])
        {
            assert!(
                !column(list, "Project").contains(id),
                "{}: {what} of the deleted project left: {list}",
                region.name()
            );
        }
        assert_eq!(column(&shown[4], "Name"), ["ada"], "{}", region.name());
    }
    let gone = networks
        .list_networks(bearer(
            ListNetworksRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await;
    assert!(gone
        .map(|r| r.into_inner().networks.is_empty())
        .unwrap_or(true));
    users
        .delete_user(bearer(
            DeleteUserRequest {
                name: ada.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteUser");
    for region in [sto1, osl1] {
        let left = region.openstack(&["user", "list", "--domain", "nordlys-acme"]);
        assert_eq!(
            left.as_array().map(Vec::len),
            Some(0),
            "{}: {left}",
            region.name()
        );
    }
    eprintln!("scenarios done in {:?}", started.elapsed());
}

const ACME: &str = "organizations/acme";
const PREFIX: &str = "nordlys.v1.sto1.RegiondService";

fn call<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    Identity {
        organization: ACME.into(),
        member: format!("{ACME}/members/alice"),
        role: Role::Member,
    }
    .write(request.metadata_mut())
    .expect("ascii identity");
    request
}

fn new_project(id: &str, request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            name: format!("projects/{id}"),
            organization: ACME.into(),
            display_name: format!("Project {id}"),
            regions: vec!["sto1".into()],
            ..Default::default()
        }),
        project_id: id.into(),
        request_id: request_id.into(),
    }
}

fn new_network(id: &str, request_id: &str) -> CreateNetworkRequest {
    CreateNetworkRequest {
        parent: "projects/crashy".into(),
        network: Some(Network {
            region: "sto1".into(),
            cidr: "10.30.0.0/24".into(),
            ..Default::default()
        }),
        network_id: id.into(),
        request_id: request_id.into(),
    }
}

/// kill -9 (an abort) of regiond between the Keystone and the Neutron step
/// of a create, and between a network and its subnet; a new regiond and the
/// same request id finish the job: exactly one project, one network. Then
/// Keystone forgets every token, and regiond re-authenticates unnoticed.
#[tokio::test]
async fn a_create_cut_short_by_a_crash_finishes_on_retry() {
    if !openstack::available("openstack crash") {
        return;
    }
    let _turn = TURN.lock().await;
    let (nats, mut region) = {
        let starting = std::thread::spawn(|| OpenStackRegion::start("sto1"));
        let nats = NatsServer::start();
        (nats, starting.join().expect("region starts"))
    };
    let config = openstack::regiond_config("");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let ch = NatsChannel::new(client, Duration::from_secs(5));

    let mut crashing = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[("NORDLYS_TEST_CRASH_AFTER", "keystone")],
    );
    let cut = ch
        .unary::<_, Project>(
            format!("{PREFIX}.CreateProject"),
            call(new_project("crashy", "req-crash")),
        )
        .await
        .expect_err("regiond dies mid-create");
    assert!(
        matches!(cut.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{cut:?}"
    );
    assert!(
        !crashing.is_running(),
        "regiond aborted at the hook ({cut:?})"
    );
    // Keystone has the project, Neutron nothing yet.
    let tagged = region.openstack(&["project", "list", "--tags", "nordlys-project:crashy"]);
    assert_eq!(column(&tagged, "Name"), ["crashy"]);
    let id = column(&tagged, "ID").remove(0);
    let groups = region.openstack(&["security", "group", "list", "--project", &id]);
    assert!(
        !column(&groups, "Name").contains(&"nordlys".to_string()),
        "{groups}"
    );

    let mut restarted = openstack::regiond(&nats, &region, config.path(), &[]);
    let project = ch
        .unary::<_, Project>(
            format!("{PREFIX}.CreateProject"),
            call(new_project("crashy", "req-crash")),
        )
        .await
        .expect("the retry finishes the create")
        .into_inner();
    assert_eq!(project.name, "projects/crashy");
    let shown = region.openstack_many(&[
        cmd(&["project", "list", "--tags", "nordlys-project:crashy"]),
        cmd(&["security", "group", "list", "--project", &id]),
        cmd(&["quota", "list", "--network", "--project", &id]),
    ]);
    assert_eq!(
        column(&shown[0], "ID"),
        [id.as_str()],
        "exactly one project"
    );
    assert_eq!(
        column(&shown[1], "Name")
            .iter()
            .filter(|n| *n == "nordlys")
            .count(),
        1,
        "one managed security group: {}",
        shown[1]
    );
    assert_eq!(column(&shown[2], "Networks"), ["2"], "the tier applied");
    restarted.kill();

    // The same between a network and its subnet.
    let mut crashing = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[("NORDLYS_TEST_CRASH_AFTER", "network")],
    );
    let cut = ch
        .unary::<_, Network>(
            format!("{PREFIX}.CreateNetwork"),
            call(new_network("net", "req-net")),
        )
        .await
        .expect_err("regiond dies mid-create");
    assert!(
        matches!(cut.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{cut:?}"
    );
    assert!(!crashing.is_running());
    let mut restarted = openstack::regiond(&nats, &region, config.path(), &[]);
    let network = ch
        .unary::<_, Network>(
            format!("{PREFIX}.CreateNetwork"),
            call(new_network("net", "req-net")),
        )
        .await
        .expect("the retry finishes the network")
        .into_inner();
    assert_eq!(network.cidr, "10.30.0.0/24");
    let shown = region.openstack_many(&[
        cmd(&["network", "list", "--project", &id]),
        cmd(&["subnet", "list", "--project", &id]),
    ]);
    assert_eq!(column(&shown[0], "Name"), ["net"], "exactly one network");
    assert_eq!(column(&shown[1], "Name"), ["net"], "exactly one subnet");
    // Once more with the same id: the first result, nothing new.
    let replay = ch
        .unary::<_, Network>(
            format!("{PREFIX}.CreateNetwork"),
            call(new_network("net", "req-net")),
        )
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(replay, network);
    let networks = region.openstack(&["network", "list", "--project", &id]);
    assert_eq!(networks.as_array().map(Vec::len), Some(1));

    // Cut short between a network and its subnet and never retried: the
    // region's sweeper removes the network nobody can see through the API
    // (and gives its reservation back), and leaves the whole one alone.
    let _quota = Quota::start(&nats);
    // The only daemon of the region is the one that dies: the queue group
    // would give the call to any other.
    restarted.kill();
    let mut crashing = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[("NORDLYS_TEST_CRASH_AFTER", "network")],
    );
    ch.unary::<_, Network>(
        format!("{PREFIX}.CreateNetwork"),
        call(new_network("half", "req-half")),
    )
    .await
    .expect_err("regiond dies mid-create");
    assert!(!crashing.is_running());
    let shown = region.openstack(&["network", "list", "--project", &id]);
    assert!(
        column(&shown, "Name").contains(&"half".to_string()),
        "{shown}"
    );
    let _sweeping = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[
            ("NORDLYS_SETTLE_GRACE_MS", "300"),
            ("NORDLYS_SETTLE_INTERVAL_MS", "200"),
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = region.openstack(&["network", "list", "--project", &id]);
        let names = column(&shown, "Name");
        if !names.contains(&"half".to_string()) {
            assert_eq!(names, ["net"], "the whole network stays");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the half-made network is still there after 60 s: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Keystone forgets every token (new Fernet keys): the next call gets a
    // 401, re-authenticates once and goes through, unnoticed by the caller.
    region.restart_keystone();
    let after = ch
        .unary::<_, Project>(
            format!("{PREFIX}.CreateProject"),
            call(new_project("after-rotation", "req-after")),
        )
        .await
        .expect("a stale token is renewed transparently")
        .into_inner();
    assert_eq!(after.name, "projects/after-rotation");
}

/// kill -9 of regiond after a project's delete began: Keystone keeps the
/// project tagged as being deleted, gets show it DELETING, nothing new is
/// made under it, and the retried delete finishes the work.
#[tokio::test]
async fn a_project_being_deleted_shows_deleting_and_takes_no_children() {
    if !openstack::available("openstack deleting") {
        return;
    }
    let _turn = TURN.lock().await;
    let (nats, region) = {
        let starting = std::thread::spawn(|| OpenStackRegion::start("sto1"));
        let nats = NatsServer::start();
        (nats, starting.join().expect("region starts"))
    };
    let _quota = Quota::start(&nats);
    let config = openstack::regiond_config("");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let ch = NatsChannel::new(client, Duration::from_secs(10));
    let mut first = openstack::regiond(&nats, &region, config.path(), &[]);
    ch.unary::<_, Project>(
        format!("{PREFIX}.CreateProject"),
        call(new_project("leaving", "req-leaving")),
    )
    .await
    .expect("CreateProject");
    // A deleted network's request id names that create still.
    let network = || CreateNetworkRequest {
        parent: "projects/leaving".into(),
        network: Some(Network {
            region: "sto1".into(),
            cidr: "10.32.0.0/24".into(),
            ..Default::default()
        }),
        network_id: "brief".into(),
        request_id: "req-brief".into(),
    };
    ch.unary::<_, Network>(format!("{PREFIX}.CreateNetwork"), call(network()))
        .await
        .expect("CreateNetwork");
    ch.unary::<_, nordlys_proto::pb::nordlys::regiond::v1::DeleteResponse>(
        format!("{PREFIX}.DeleteNetwork"),
        call(nordlys_proto::pb::nordlys::v1::DeleteNetworkRequest {
            name: "projects/leaving/networks/brief".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("DeleteNetwork");
    let reused = ch
        .unary::<_, Network>(format!("{PREFIX}.CreateNetwork"), call(network()))
        .await
        .expect_err("the request id's network was deleted");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    first.kill();

    let mut crashing = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[("NORDLYS_TEST_CRASH_AFTER", "remove-noted")],
    );
    let delete = || DeleteProjectRequest {
        name: "projects/leaving".into(),
        ..Default::default()
    };
    ch.unary::<_, nordlys_proto::pb::nordlys::regiond::v1::DeleteResponse>(
        format!("{PREFIX}.DeleteProject"),
        call(delete()),
    )
    .await
    .expect_err("regiond dies mid-delete");
    assert!(!crashing.is_running());
    // A daemon whose sweeper waits: the delete stays half-way.
    let _restarted = openstack::regiond(
        &nats,
        &region,
        config.path(),
        &[("NORDLYS_SETTLE_GRACE_MS", "600000")],
    );
    let project = ch
        .unary::<_, Project>(
            format!("{PREFIX}.GetProject"),
            call(GetProjectRequest {
                name: "projects/leaving".into(),
            }),
        )
        .await
        .expect("still there")
        .into_inner();
    assert_eq!(
        project.region_status.first().map(|s| s.state),
        Some(nordlys_proto::pb::nordlys::v1::region_status::State::Deleting as i32),
        "{project:?}"
    );
    let refused = ch
        .unary::<_, Network>(
            format!("{PREFIX}.CreateNetwork"),
            call(CreateNetworkRequest {
                parent: "projects/leaving".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.31.0.0/24".into(),
                    ..Default::default()
                }),
                network_id: "late".into(),
                request_id: "req-late".into(),
            }),
        )
        .await
        .expect_err("no child under a project being deleted");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    ch.unary::<_, nordlys_proto::pb::nordlys::regiond::v1::DeleteResponse>(
        format!("{PREFIX}.DeleteProject"),
        call(delete()),
    )
    .await
    .expect("the retried delete finishes the work");
    let tagged = region.openstack(&["project", "list", "--tags", "nordlys-project:leaving"]);
    assert!(column(&tagged, "Name").is_empty(), "{tagged}");
    // Its request id does not quietly make it again.
    let reused = ch
        .unary::<_, Project>(
            format!("{PREFIX}.CreateProject"),
            call(new_project("leaving", "req-leaving")),
        )
        .await
        .expect_err("the request id's project was deleted");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
}

/// A create in two regions while one region's Neutron is down: that region
/// answers UNAVAILABLE and shows the project INCOMPLETE (made in Keystone,
/// no security group, no tier), never READY; once Neutron is back the
/// region finishes it on its own and its quota counts it, once.
#[tokio::test]
async fn a_create_while_neutron_is_down_is_incomplete_until_the_region_finishes_it() {
    if !openstack::available("openstack neutron outage") {
        return;
    }
    let _turn = TURN.lock().await;
    let stack = OpenStackStack::start().await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let osl1 = stack.region("osl1");

    osl1.stop_neutron();
    let made = projects
        .create_project(bearer(
            CreateProjectRequest {
                project: Some(Project {
                    display_name: "Half".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
                project_id: "half".into(),
                request_id: "create-half-1".into(),
            },
            key,
        ))
        .await
        .expect("sto1 makes it")
        .into_inner();
    let state_in = |p: &Project, region: &str| {
        p.region_status
            .iter()
            .find(|s| s.region == region)
            .map(|s| s.state)
            .unwrap_or_default()
    };
    assert_eq!(state_in(&made, "sto1"), 1, "{made:?}");
    assert_eq!(state_in(&made, "osl1"), 3, "osl1 UNREACHABLE: {made:?}");
    // osl1's regiond counted Keystone's answers and Neutron's silence.
    let osl1_metrics = metrics_text(stack.osl1.metrics_addr()).await;
    let samples = |prefix: &str| -> f64 {
        osl1_metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert!(
        samples("nordlys_regiond_openstack_errors_total{service=\"network\"") >= 1.0,
        "{osl1_metrics}"
    );
    assert!(
        samples("nordlys_regiond_openstack_requests_total{service=\"identity\",status=\"2xx\"}")
            >= 1.0,
        "{osl1_metrics}"
    );
    let get = || {
        let mut projects = projects.clone();
        async move {
            projects
                .get_project(bearer(
                    GetProjectRequest {
                        name: "projects/half".into(),
                    },
                    key,
                ))
                .await
                .expect("GetProject")
                .into_inner()
        }
    };
    let half = get().await;
    assert_eq!(
        state_in(&half, "osl1"),
        5,
        "osl1 INCOMPLETE, not READY: {half:?}"
    );
    assert_eq!(
        stack
            .quota(key, org, "sto1")
            .await
            .usage
            .unwrap_or_default()
            .projects,
        1
    );

    osl1.start_neutron();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let project = get().await;
        let usage = stack
            .quota(key, org, "osl1")
            .await
            .usage
            .unwrap_or_default();
        if state_in(&project, "osl1") == 1 && usage.projects == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "osl1 not finished and counted: {project:?}, usage {usage:?}\nosl1's regiond:\n{}",
            nordlys_tests::log_tail(&stack.osl1.log_path())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Neutron has what a whole create makes.
    let tagged = osl1.openstack(&["project", "list", "--tags", "nordlys-project:half"]);
    let id = column(&tagged, "ID").remove(0);
    let groups = osl1.openstack(&["security", "group", "list", "--project", &id]);
    assert!(
        column(&groups, "Name").contains(&"nordlys".to_string()),
        "{groups}"
    );
    // Counted once, in each region.
    for region in ["sto1", "osl1"] {
        let usage = stack
            .quota(key, org, region)
            .await
            .usage
            .unwrap_or_default();
        assert_eq!(usage.projects, 1, "{region}");
    }
}

#[tokio::test]
async fn neutron_resources_of_a_project_deleted_in_keystone_are_found_and_removed() {
    if !openstack::available("openstack strays") {
        return;
    }
    let _turn = TURN.lock().await;
    let stack = OpenStackStack::start_with(&[("NORDLYS_REMOVE_ORPHANS", "true")]).await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let sto1 = stack.region("sto1");
    // Two projects with a network and an access rule each; one of them
    // then goes from Keystone behind Nordlys's back.
    for project in ["kept", "dropped"] {
        stack
            .create_project(key, project, &["sto1"])
            .await
            .expect("CreateProject");
        NetworkServiceClient::new(stack.channel().await)
            .create_network(bearer(
                CreateNetworkRequest {
                    parent: format!("projects/{project}"),
                    network_id: "backend".into(),
                    network: Some(Network {
                        region: "sto1".into(),
                        cidr: "10.9.0.0/24".into(),
                        ..Default::default()
                    }),
                    request_id: format!("net-{project}"),
                },
                key,
            ))
            .await
            .expect("CreateNetwork");
        let mut rule = ssh_from_the_office();
        rule.parent = format!("projects/{project}");
        rule.request_id = format!("rule-{project}");
        AccessRuleServiceClient::new(stack.channel().await)
            .create_access_rule(bearer(rule, key))
            .await
            .expect("CreateAccessRule");
    }
    let kept = keystone_project(sto1, "acme", "kept");
    let dropped = keystone_project(sto1, "acme", "dropped");
    // Listed whole and matched by owner: `--project` needs the project to
    // exist in Keystone.
    let neutron_of = |project: &str| {
        let nets = sto1.openstack(&["network", "list", "--long"]);
        let groups = sto1.openstack(&["security", "group", "list"]);
        let mut ids = Vec::new();
        for (id, owner) in column(&nets, "ID")
            .into_iter()
            .zip(column(&nets, "Project"))
        {
            if owner == project {
                ids.push(format!("regions/sto1/neutron/networks/{id}"));
            }
        }
        let rows = column(&groups, "ID")
            .into_iter()
            .zip(column(&groups, "Name"))
            .zip(column(&groups, "Project"));
        for ((id, name), owner) in rows {
            if owner == project && name == "nordlys" {
                ids.push(format!("regions/sto1/neutron/security-groups/{id}"));
            }
        }
        ids.sort();
        ids
    };
    let left_behind = neutron_of(&dropped);
    assert_eq!(
        left_behind.len(),
        2,
        "a network and a group: {left_behind:?}"
    );
    let kept_before = neutron_of(&kept);
    sto1.openstack_quiet(&["project", "delete", &dropped]);

    // A run over every organization names what was left and removes it.
    let mut request = bearer(ReconcileQuotasRequest::default(), OPERATOR_KEY);
    request.set_timeout(Duration::from_secs(60));
    let mut quotas = QuotaServiceClient::new(stack.channel().await);
    let answer = quotas
        .reconcile_quotas(request)
        .await
        .expect("ReconcileQuotas")
        .into_inner();
    let mut orphans = answer.orphans.clone();
    orphans.sort();
    assert_eq!(orphans, left_behind, "{answer:?}");
    assert!(neutron_of(&dropped).is_empty(), "removed from Neutron");
    assert_eq!(
        neutron_of(&kept),
        kept_before,
        "the live project keeps its own"
    );
    // The project left the counts with Keystone: usage follows it.
    let usage = stack
        .quota(key, org, "sto1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!(
        (usage.projects, usage.networks, usage.access_rules),
        (1, 1, 1),
        "{answer:?}"
    );
    let again = quotas
        .reconcile_quotas(bearer(ReconcileQuotasRequest::default(), OPERATOR_KEY))
        .await
        .expect("ReconcileQuotas")
        .into_inner();
    assert!(again.orphans.is_empty(), "{again:?}");
    assert!(again.drifts.is_empty(), "{again:?}");
}

/// `GET /metrics` of a regiond, as text.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A tier sizes Nova (instances, cores, RAM) and Cinder (volumes,
/// gigabytes, snapshots) as well as Neutron: a project created through the
/// gateway gets all of them, as the real `openstack` CLI reads them back.
#[tokio::test]
async fn a_tier_sizes_nova_and_cinder_as_well_as_neutron() {
    if !openstack::available_with_compute("openstack compute tiers") {
        return;
    }
    let _turn = TURN.lock().await;
    let started = Instant::now();
    let (nats, region) = {
        let starting = std::thread::spawn(|| OpenStackRegion::start_with_compute("sto1"));
        let nats = NatsServer::start();
        (nats, starting.join().expect("region starts"))
    };
    eprintln!(
        "an OpenStack region with Nova and Cinder up in {:?}",
        started.elapsed()
    );
    let _quota = Quota::start(&nats);
    let config = openstack::regiond_config_with_tiers("", openstack::COMPUTE_TIERS_TOML);
    let regiond = openstack::regiond(&nats, &region, config.path(), &[]);
    let gateway = Gateway::start(&nats, &GatewayOpts::default());
    gateway
        .wait_for_regions(|r| nordlys_tests::instances(r, "sto1") == 1)
        .await;
    let tenant = gateway.tenant("computeco").await;
    // With a caller's trace context, which the quota-set calls carry on
    // (nothing is exported here, so it arrives unchanged).
    let trace_id = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
    let traceparent = format!("00-{trace_id}-1a2b3c4d5e6f7a8b-01");
    let mut create = bearer(
        CreateProjectRequest {
            project: Some(Project {
                display_name: "Sized web".into(),
                regions: vec!["sto1".into()],
                ..Default::default()
            }),
            project_id: "sized-web".into(),
            request_id: "create-sized-web".into(),
        },
        &tenant.key,
    );
    create.metadata_mut().insert(
        "traceparent",
        traceparent.parse().expect("ascii traceparent"),
    );
    ProjectServiceClient::new(gateway.channel().await)
        .create_project(create)
        .await
        .expect("CreateProject");
    for server in ["nova", "cinder"] {
        let received = region.received_traceparents(server);
        assert!(
            received.iter().any(|(method, path, tp)| method == "PUT"
                && path.contains("/os-quota-sets/")
                && tp.contains(trace_id)),
            "{server} got no quota-set PUT in the caller's trace: {received:?}"
        );
    }

    let id = keystone_project(&region, "computeco", "sized-web");
    // Compute and volume quotas merged (and network: the catalog has it).
    let shown = region.openstack(&["quota", "show", &id]);
    for (name, want) in [
        ("instances", 5),
        ("cores", 8),
        ("ram", 16384),
        ("volumes", 7),
        ("gigabytes", 200),
        ("snapshots", 3),
        ("networks", 3),
        ("secgroups", 5),
    ] {
        assert_eq!(shown[name].as_i64(), Some(want), "{name} in {shown}");
    }
    // Nova's own view, with usage.
    let detail = region.openstack(&["quota", "list", "--compute", "--detail", "--project", &id]);
    let limit = |resource: &str| {
        detail
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["Resource"] == resource))
            .map(|r| (r["Limit"].as_i64(), r["In Use"].as_i64()))
    };
    assert_eq!(limit("cores"), Some((Some(8), Some(0))), "{detail}");
    assert_eq!(limit("instances"), Some((Some(5), Some(0))), "{detail}");

    // The operator moves the organization to a bigger tier: regiond's next
    // start sets every service's quotas, then the tier tag.
    drop(regiond);
    std::fs::write(
        config.path().join("regiond.toml"),
        format!(
            "{}\n[openstack.organization_tiers]\ncomputeco = \"bigger\"\n\
             [openstack.tiers.bigger]\nnetwork = 4\ninstances = 9\ncores = 16\nram = 32768\n\
             volumes = 11\ngigabytes = 400\nsnapshots = 6\n",
            openstack::COMPUTE_TIERS_TOML
        ),
    )
    .expect("regiond.toml");
    let _regiond = openstack::regiond(&nats, &region, config.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let tags = loop {
        let shown =
            region.openstack_many(&[cmd(&["project", "show", &id]), cmd(&["quota", "show", &id])]);
        let tags = strings(&shown[0]["tags"]);
        if tags.contains(&"nordlys-tier:bigger".to_string()) {
            for (name, want) in [
                ("instances", 9),
                ("cores", 16),
                ("ram", 32768),
                ("volumes", 11),
                ("gigabytes", 400),
                ("snapshots", 6),
                ("networks", 4),
            ] {
                assert_eq!(
                    shown[1][name].as_i64(),
                    Some(want),
                    "{name} in {}",
                    shown[1]
                );
            }
            break tags;
        }
        assert!(
            Instant::now() < deadline,
            "the bigger tier was not applied: {tags:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !tags.contains(&"nordlys-tier:standard".to_string()),
        "{tags:?}"
    );
}

/// A tier the quota service grants (a customer's request for the next one
/// up) resizes every project of the organization in Neutron, Nova and
/// Cinder; projects made afterwards get it too; and regiond's own
/// `organization_tiers` no longer overrides it at its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_granted_through_the_api_resizes_the_projects_in_the_cloud() {
    if !openstack::available_with_compute("openstack granted tiers") {
        return;
    }
    let _turn = TURN.lock().await;
    let (nats, region) = {
        let starting = std::thread::spawn(|| OpenStackRegion::start_with_compute("sto1"));
        let nats = NatsServer::start();
        (nats, starting.join().expect("region starts"))
    };
    let _quota = Quota::start_env(
        &nats,
        &[] as &[&str],
        &[
            ("NORDLYS_TIERS".into(), "[standard, bigger]".into()),
            ("NORDLYS_DEFAULT_TIER".into(), "standard".into()),
        ],
    );
    let bigger = "[openstack.tiers.bigger]\nnetwork = 4\ninstances = 9\ncores = 16\nram = 32768\n\
                  volumes = 11\ngigabytes = 400\nsnapshots = 6\n";
    let config = openstack::regiond_config_with_tiers(
        "",
        &format!("{}\n{bigger}", openstack::COMPUTE_TIERS_TOML),
    );
    let regiond = openstack::regiond(&nats, &region, config.path(), &[]);
    let gateway = Gateway::start(&nats, &GatewayOpts::default());
    gateway
        .wait_for_regions(|r| nordlys_tests::instances(r, "sto1") == 1)
        .await;
    let tenant = gateway.tenant("growco").await;
    let create = |id: &str| {
        bearer(
            CreateProjectRequest {
                project: Some(Project {
                    display_name: format!("Project {id}"),
                    regions: vec!["sto1".into()],
                    ..Default::default()
                }),
                project_id: id.into(),
                request_id: format!("create-{id}"),
            },
            &tenant.key,
        )
    };
    let mut projects = ProjectServiceClient::new(gateway.channel().await);
    projects
        .create_project(create("grow-one"))
        .await
        .expect("CreateProject");
    let one = keystone_project(&region, "growco", "grow-one");
    let sized = |id: &str| region.openstack(&["quota", "show", id]);
    assert_eq!(sized(&one)["cores"].as_i64(), Some(8), "the default tier");

    // The owner asks for the next tier up: granted, and applied in sto1.
    let mut request = bearer(
        nordlys_proto::pb::nordlys::v1::RequestTierChangeRequest {
            organization: tenant.organization.clone(),
            tier: "bigger".into(),
        },
        &tenant.key,
    );
    request.set_timeout(Duration::from_secs(60));
    let change = QuotaServiceClient::new(gateway.channel().await)
        .request_tier_change(request)
        .await
        .expect("RequestTierChange")
        .into_inner();
    assert_eq!(
        change.state,
        nordlys_proto::pb::nordlys::v1::tier_change::State::Approved as i32,
        "{change:?}"
    );
    // sto1 applied it; the gateway also knows osl1, which runs nothing here
    // and is named UNREACHABLE.
    let status = |region: &str| {
        change
            .region_status
            .iter()
            .find(|s| s.region == region)
            .map(|s| s.code)
    };
    assert_eq!(status("sto1"), Some(0), "{change:?}");
    assert_eq!(status("osl1"), Some(Code::Unavailable as i32), "{change:?}");
    let want = [
        ("instances", 9),
        ("cores", 16),
        ("ram", 32768),
        ("volumes", 11),
        ("gigabytes", 400),
        ("snapshots", 6),
        ("networks", 4),
    ];
    let check = |id: &str, what: &str| {
        let shown = sized(id);
        for (name, value) in want {
            assert_eq!(
                shown[name].as_i64(),
                Some(value),
                "{what}: {name} in {shown}"
            );
        }
    };
    check(&one, "the project made before");
    let tags = strings(&region.openstack(&["project", "show", &one])["tags"]);
    assert!(
        tags.contains(&"nordlys-tier:bigger".to_string()),
        "{tags:?}"
    );

    // The customer reads how full the project is: the limits as Nova,
    // Cinder and Neutron hold them, and the use they count.
    let quota = QuotaServiceClient::new(gateway.channel().await)
        .get_project_quota(bearer(
            nordlys_proto::pb::nordlys::v1::GetProjectQuotaRequest {
                name: "projects/grow-one/quota".into(),
            },
            &tenant.key,
        ))
        .await
        .expect("GetProjectQuota")
        .into_inner();
    assert_eq!(quota.regions.len(), 1, "{quota:?}");
    let sto1 = &quota.regions[0];
    assert_eq!(
        (sto1.region.as_str(), sto1.tier.as_str()),
        ("sto1", "bigger")
    );
    let (limits, usage) = (
        sto1.limits.clone().expect("limits"),
        sto1.usage.clone().expect("usage"),
    );
    assert_eq!(
        (limits.instances, limits.cores, limits.ram_mb),
        (9, 16, 32768),
        "{limits:?}"
    );
    assert_eq!(
        (limits.volumes, limits.volume_gigabytes, limits.snapshots),
        (11, 400, 6),
        "{limits:?}"
    );
    assert_eq!(
        limits.security_groups, 5,
        "the standard tier's, kept: {limits:?}"
    );
    assert_eq!((usage.instances, usage.cores), (0, 0), "{usage:?}");
    // Neutron's own `default` group and the project's `nordlys` one.
    assert_eq!(usage.security_groups, 2, "{usage:?}");

    // A project made now gets the granted tier from its reservation.
    projects
        .create_project(create("grow-two"))
        .await
        .expect("CreateProject");
    let two = keystone_project(&region, "growco", "grow-two");
    check(&two, "the project made after");

    // regiond's next start leaves the granted tier alone (its own
    // configuration would say "standard").
    drop(regiond);
    let regiond = openstack::regiond(&nats, &region, config.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nordlys_tests::log_tail(&regiond.log_path()).contains("quota tiers checked") {
        assert!(
            Instant::now() < deadline,
            "regiond never checked the tiers: {}",
            nordlys_tests::log_tail(&regiond.log_path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check(&one, "after regiond checked its tiers");
}
