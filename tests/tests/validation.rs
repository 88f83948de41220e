//! Bad input is INVALID_ARGUMENT with google.rpc.BadRequest field violations
//! naming the field, and creates nothing.

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    AccessRule, CreateAccessRuleRequest, CreateNetworkRequest, CreateProjectRequest, Direction,
    GetProjectRequest, ListAccessRulesRequest, ListNetworksRequest, ListProjectsRequest, Network,
    Project, Protocol,
};
use nordlys_tests::{bearer, Stack};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Asserts INVALID_ARGUMENT with a field violation on `field` (or an element of it).
fn assert_bad_field<T: std::fmt::Debug>(case: &str, result: Result<T, Status>, field: &str) {
    let status = match result {
        Ok(answer) => panic!("{case}: accepted: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("{case}: no BadRequest detail in {status:?}"));
    let fields: Vec<&str> = bad
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert!(
        fields.iter().any(|f| *f == field
            || f.starts_with(&format!("{field}["))
            || f.starts_with(&format!("{field}."))),
        "{case}: violations {fields:?} do not name {field}"
    );
    assert!(
        bad.field_violations
            .iter()
            .all(|v| !v.description.is_empty()),
        "{case}: a violation without a description"
    );
}

fn project_request(id: &str, display_name: &str, regions: &[&str]) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: display_name.to_owned(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        project_id: id.to_owned(),
        request_id: String::new(),
    }
}

fn network_request(id: &str, region: &str, cidr: &str) -> CreateNetworkRequest {
    CreateNetworkRequest {
        parent: "projects/web".into(),
        network: Some(Network {
            region: region.to_owned(),
            cidr: cidr.to_owned(),
            ..Default::default()
        }),
        network_id: id.to_owned(),
        request_id: String::new(),
    }
}

fn rule_request(id: &str, min: u32, max: u32, remote: &str) -> CreateAccessRuleRequest {
    CreateAccessRuleRequest {
        parent: "projects/web".into(),
        access_rule: Some(AccessRule {
            region: "sto1".into(),
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: min,
            port_range_max: max,
            remote_cidr: remote.to_owned(),
            ..Default::default()
        }),
        access_rule_id: id.to_owned(),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn bad_input_is_rejected_field_by_field_and_creates_nothing() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let mut networks = NetworkServiceClient::new(stack.channel().await);
    let mut rules = AccessRuleServiceClient::new(stack.channel().await);

    stack
        .create_project(key, "web", &["sto1", "osl1"])
        .await
        .expect("a valid project");

    // Projects.
    let too_long = "x".repeat(65);
    for (case, request, field) in [
        (
            "empty display name",
            project_request("p-empty", "", &["sto1"]),
            "project.display_name",
        ),
        (
            "blank display name",
            project_request("p-blank", "   ", &["sto1"]),
            "project.display_name",
        ),
        (
            "over-long display name",
            project_request("p-long", &too_long, &["sto1"]),
            "project.display_name",
        ),
        (
            "upper case id",
            project_request("Bad_Id", "Bad", &["sto1"]),
            "project_id",
        ),
        (
            "short id",
            project_request("ab", "Short", &["sto1"]),
            "project_id",
        ),
        (
            "id starting with a digit",
            project_request("1abc", "Digit", &["sto1"]),
            "project_id",
        ),
        (
            "unknown region",
            project_request("p-mars", "Mars", &["mars1"]),
            "project.regions",
        ),
        (
            "no region",
            project_request("p-nowhere", "Nowhere", &[]),
            "project.regions",
        ),
        (
            "region twice",
            project_request("p-twice", "Twice", &["sto1", "sto1"]),
            "project.regions",
        ),
    ] {
        let result = projects.create_project(bearer(request, key)).await;
        assert_bad_field(case, result, field);
    }

    for (case, name) in [
        ("empty name", ""),
        ("wrong collection", "networks/web"),
        ("bad id in name", "projects/NOT_AN_ID"),
    ] {
        let result = projects
            .get_project(bearer(GetProjectRequest { name: name.into() }, key))
            .await;
        assert_bad_field(case, result, "name");
    }

    for token in ["not a token!", "eyJub3QiOiJvdXJzIn0", "%%%"] {
        let result = projects
            .list_projects(bearer(
                ListProjectsRequest {
                    page_token: token.into(),
                    ..Default::default()
                },
                key,
            ))
            .await;
        assert_bad_field(&format!("page token {token:?}"), result, "page_token");
    }

    // Networks.
    for (case, request, field) in [
        (
            "not a CIDR",
            network_request("n1", "sto1", "banana"),
            "network.cidr",
        ),
        (
            "prefix out of range",
            network_request("n2", "sto1", "10.0.0.0/33"),
            "network.cidr",
        ),
        (
            "IPv4 host bits set",
            network_request("n3", "sto1", "10.0.0.1/24"),
            "network.cidr",
        ),
        (
            "IPv6 host bits set",
            network_request("n4", "osl1", "fd00::1/64"),
            "network.cidr",
        ),
        (
            "prefix too wide",
            network_request("n5", "sto1", "10.0.0.0/4"),
            "network.cidr",
        ),
        (
            "unknown region",
            network_request("n6", "mars1", "10.0.0.0/24"),
            "network.region",
        ),
        (
            "bad network id",
            network_request("N_7", "sto1", "10.0.0.0/24"),
            "network_id",
        ),
    ] {
        let result = networks.create_network(bearer(request, key)).await;
        assert_bad_field(case, result, field);
    }

    // Access rules.
    for (case, request, field) in [
        (
            "reversed port range",
            rule_request("r1", 443, 80, "0.0.0.0/0"),
            "access_rule.port_range_max",
        ),
        (
            "port above 65535",
            rule_request("r2", 1, 70000, "0.0.0.0/0"),
            "access_rule.port_range_max",
        ),
        (
            "remote host bits set",
            rule_request("r3", 22, 22, "192.168.1.1/16"),
            "access_rule.remote_cidr",
        ),
        (
            "remote not a CIDR",
            rule_request("r4", 22, 22, "anywhere"),
            "access_rule.remote_cidr",
        ),
    ] {
        let result = rules.create_access_rule(bearer(request, key)).await;
        assert_bad_field(case, result, field);
    }

    // Nothing of it exists, and no quota is held for it.
    let listed = projects
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("ListProjects")
        .into_inner();
    let names: Vec<&str> = listed.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["projects/web"]);
    let listed = networks
        .list_networks(bearer(
            ListNetworksRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListNetworks")
        .into_inner();
    assert!(listed.networks.is_empty(), "{:?}", listed.networks);
    let listed = rules
        .list_access_rules(bearer(
            ListAccessRulesRequest {
                parent: "projects/web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListAccessRules")
        .into_inner();
    assert!(listed.access_rules.is_empty(), "{:?}", listed.access_rules);
    for region in ["sto1", "osl1"] {
        let quota = stack.quota(key, &tenant.organization, region).await;
        let usage = quota.usage.unwrap_or_default();
        let reserved = quota.reserved.unwrap_or_default();
        assert_eq!(
            (usage.projects, usage.networks, usage.access_rules),
            (1, 0, 0),
            "{region} usage"
        );
        assert_eq!(
            (reserved.projects, reserved.networks, reserved.access_rules),
            (0, 0, 0),
            "{region} reserved"
        );
    }
}
