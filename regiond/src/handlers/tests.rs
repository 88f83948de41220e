//! The handlers called directly, as a transport would call them.

use std::sync::Arc;

use nordlys_proto::pb::nordlys::v1::{
    CreateAccessRuleRequest, Direction, GetNetworkRequest, ProjectRole, Protocol, ResourceCounts,
};
use nordlys_transport::metadata::REQUEST_ID;
use tonic::Code;
use tonic_types::StatusExt;

use super::*;
use crate::backend::MemoryBackend;
use crate::USER_NOT_IN_REGION;

const ACME: &str = "organizations/acme";

fn handlers() -> Handlers {
    Handlers::new("sto1", Arc::new(MemoryBackend::new("sto1")))
}

fn who(org: &str, role: Role) -> Identity {
    Identity {
        organization: org.to_string(),
        member: format!("{org}/members/alice"),
        role,
    }
}

fn acme() -> Identity {
    who(ACME, Role::Member)
}

fn call<T>(identity: &Identity, message: T) -> Request<T> {
    let mut request = Request::new(message);
    identity
        .write(request.metadata_mut())
        .expect("ascii identity");
    request
}

fn new_project(id: &str, org: &str, request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            name: format!("projects/{id}"),
            organization: org.to_string(),
            display_name: format!("Project {id}"),
            regions: vec!["sto1".into(), "osl1".into()],
            ..Default::default()
        }),
        project_id: id.to_string(),
        request_id: request_id.to_string(),
    }
}

fn new_user(org: &str, id: &str) -> CreateUserRequest {
    CreateUserRequest {
        parent: org.to_string(),
        user: Some(User {
            name: format!("{org}/users/{id}"),
            display_name: "Ada".into(),
            email: "ada@example.com".into(),
            regions: vec!["sto1".into()],
            ..Default::default()
        }),
        user_id: id.to_string(),
        request_id: String::new(),
    }
}

fn new_membership(project: &str, org: &str, user: &str) -> CreateMembershipRequest {
    CreateMembershipRequest {
        parent: format!("projects/{project}"),
        membership: Some(Membership {
            name: format!("projects/{project}/members/{user}"),
            user: format!("{org}/users/{user}"),
            role: ProjectRole::Member as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn new_network(project: &str, id: &str, cidr: &str) -> CreateNetworkRequest {
    CreateNetworkRequest {
        parent: format!("projects/{project}"),
        network: Some(Network {
            name: format!("projects/{project}/networks/{id}"),
            region: "sto1".into(),
            cidr: cidr.into(),
            ..Default::default()
        }),
        network_id: id.into(),
        request_id: String::new(),
    }
}

fn new_rule(project: &str, id: &str) -> CreateAccessRuleRequest {
    CreateAccessRuleRequest {
        parent: format!("projects/{project}"),
        access_rule: Some(AccessRule {
            name: format!("projects/{project}/accessRules/{id}"),
            region: "sto1".into(),
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: 22,
            port_range_max: 22,
            remote_cidr: "0.0.0.0/0".into(),
            ..Default::default()
        }),
        access_rule_id: id.into(),
        request_id: String::new(),
    }
}

fn list(org: &str, parent: &str) -> ListRequest {
    ListRequest {
        parent: parent.into(),
        organization: org.into(),
        ..Default::default()
    }
}

/// The fields an INVALID_ARGUMENT names, in order.
fn fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn creates_answer_with_region_status_and_create_time() {
    let h = handlers();
    let p = h
        .create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(p.name, "projects/web");
    assert_eq!(p.region_status.len(), 1);
    assert_eq!(p.region_status[0].region, "sto1");
    assert_eq!(p.region_status[0].state, State::Ready as i32);
    assert!(p.create_time.is_some());
    let got = h
        .get_project(call(
            &acme(),
            GetProjectRequest {
                name: "projects/web".into(),
            },
        ))
        .await
        .expect("found")
        .into_inner();
    assert_eq!(got, p);

    // A network gets the first host address as its gateway.
    let n = h
        .create_network(call(&acme(), new_network("web", "net-a", "10.1.0.0/16")))
        .await
        .expect("network")
        .into_inner();
    assert_eq!(n.gateway_ip, "10.1.0.1");
    assert!(n.create_time.is_some());
    let v6 = h
        .create_network(call(&acme(), new_network("web", "net-6", "fd00:1::/64")))
        .await
        .expect("IPv6 network")
        .into_inner();
    assert_eq!(v6.gateway_ip, "fd00:1::1");
    // What the gateway sends: the default gateway already filled in.
    let mut filled = new_network("web", "net-7", "fd00:2::/64");
    if let Some(n) = filled.network.as_mut() {
        n.gateway_ip = nordlys_api::validate::default_gateway(&n.cidr).unwrap_or_default();
    }
    h.create_network(call(&acme(), filled))
        .await
        .expect("default gateway passes validation");
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_result() {
    let h = handlers();
    let first = h
        .create_project(call(&acme(), new_project("web", ACME, "req-1")))
        .await
        .expect("created")
        .into_inner();
    // The same create again: the first project, nothing new.
    let again = h
        .create_project(call(&acme(), new_project("web", ACME, "req-1")))
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(again, first);
    // Another create with the same id is refused: an id names one create.
    let err = h
        .create_project(call(&acme(), new_project("other", ACME, "req-1")))
        .await
        .expect_err("a request id names one create");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("projects/web"), "{}", err.message());
    // The id may also come as metadata.
    let mut request = call(&acme(), new_project("web", ACME, ""));
    request
        .metadata_mut()
        .insert(REQUEST_ID, "req-1".parse().expect("ascii"));
    let via_metadata = h.create_project(request).await.expect("replayed");
    assert_eq!(via_metadata.into_inner(), first);
    // The same name without it exists already.
    let err = h
        .create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Code::AlreadyExists);
    let listed = h
        .list_projects(call(&acme(), list(ACME, "")))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.projects.len(), 1);
}

#[tokio::test]
async fn another_organization_sees_nothing() {
    let h = handlers();
    h.create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created");
    let evil = who("organizations/evil", Role::Owner);
    let get = GetProjectRequest {
        name: "projects/web".into(),
    };
    let err = h
        .get_project(call(&evil, get.clone()))
        .await
        .expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .delete_project(call(
            &evil,
            DeleteProjectRequest {
                name: "projects/web".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
    let err = h
        .create_network(call(&evil, new_network("web", "net-a", "10.0.0.0/24")))
        .await
        .expect_err("project hidden");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("sto1"), "{}", err.message());

    // Listing another organization, or all, is not for customers.
    let err = h
        .list_projects(call(&evil, list(ACME, "")))
        .await
        .expect_err("not its org");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h
        .list_projects(call(&evil, list("", "")))
        .await
        .expect_err("all orgs");
    assert_eq!(err.code(), Code::PermissionDenied);
    let own = h
        .list_projects(call(&evil, list("organizations/evil", "")))
        .await
        .expect("own")
        .into_inner();
    assert!(own.projects.is_empty());

    // Creating in another organization is refused outright.
    let err = h
        .create_project(call(&evil, new_project("evil", ACME, "")))
        .await
        .expect_err("other org");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = h
        .create_user(call(&evil, new_user(ACME, "mallory")))
        .await
        .expect_err("other org");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Operators see everything.
    let op = Identity::operator();
    h.get_project(call(&op, get)).await.expect("operator sees");
    let all = h
        .list_projects(call(&op, list("", "")))
        .await
        .expect("operator lists all")
        .into_inner();
    assert_eq!(all.projects.len(), 1);
}

#[tokio::test]
async fn identity_and_role_are_required() {
    let h = handlers();
    let err = h
        .get_project(Request::new(GetProjectRequest {
            name: "projects/web".into(),
        }))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    let viewer = who(ACME, Role::Viewer);
    let err = h
        .create_project(call(&viewer, new_project("web", ACME, "")))
        .await
        .expect_err("viewer");
    assert_eq!(err.code(), Code::PermissionDenied);
    // Viewers read.
    h.list_projects(call(&viewer, list(ACME, "")))
        .await
        .expect("viewer lists");
}

#[tokio::test]
async fn bad_input_names_every_field() {
    let h = handlers();
    let mut req = new_project("Web!", "acme", "bad id with spaces");
    if let Some(p) = req.project.as_mut() {
        p.name = "projects/other".into();
        p.regions = vec!["osl1".into(), "BAD".into()];
    }
    let err = h
        .create_project(call(&acme(), req))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&err),
        [
            "project_id",
            "project.name",
            "project.organization",
            "project.regions[1]",
            "project.regions",
            "request_id",
        ]
    );

    h.create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created");
    let mut req = new_network("web", "net-a", "10.0.0.1/24");
    if let Some(n) = req.network.as_mut() {
        n.region = "osl1".into();
        n.name = "projects/other/networks/net-a".into();
    }
    let err = h
        .create_network(call(&acme(), req))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&err),
        ["network.name", "network.cidr", "network.region"]
    );

    let mut rule = new_rule("web", "ssh");
    if let Some(r) = rule.access_rule.as_mut() {
        r.port_range_min = 443;
        r.port_range_max = 80;
    }
    let err = h
        .create_access_rule(call(&acme(), rule))
        .await
        .expect_err("invalid");
    assert_eq!(fields(&err), ["access_rule.port_range_max"]);

    let err = h
        .get_network(call(
            &acme(),
            GetNetworkRequest {
                name: "projects/web".into(),
            },
        ))
        .await
        .expect_err("bad name");
    assert_eq!(fields(&err), ["name"]);

    let err = h
        .list_networks(call(&acme(), list(ACME, "organizations/acme")))
        .await
        .expect_err("bad parent");
    assert_eq!(fields(&err), ["parent"]);

    let err = h
        .create_project(call(
            &acme(),
            CreateProjectRequest {
                project: None,
                ..new_project("web", ACME, "")
            },
        ))
        .await
        .expect_err("no project");
    assert_eq!(fields(&err), ["project"]);
}

#[tokio::test]
async fn memberships_need_the_user_in_this_region() {
    let h = handlers();
    h.create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created");
    let err = h
        .create_membership(call(&acme(), new_membership("web", ACME, "ada")))
        .await
        .expect_err("no user here");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = err.get_error_details();
    let violation = &details
        .precondition_failure()
        .expect("precondition failure")
        .violations[0];
    assert_eq!(violation.r#type, USER_NOT_IN_REGION);
    assert_eq!(violation.subject, "organizations/acme/users/ada");

    let err = h
        .create_membership(call(&acme(), new_membership("nope", ACME, "ada")))
        .await
        .expect_err("no project");
    assert_eq!(err.code(), Code::NotFound);

    let err = h
        .create_membership(call(
            &acme(),
            new_membership("web", "organizations/evil", "ada"),
        ))
        .await
        .expect_err("user of another org");
    assert_eq!(fields(&err), ["membership.user"]);

    let mut mismatched = new_membership("web", ACME, "ada");
    if let Some(m) = mismatched.membership.as_mut() {
        m.name = "projects/web/members/bob".into();
        m.role = 0;
    }
    let err = h
        .create_membership(call(&acme(), mismatched))
        .await
        .expect_err("invalid");
    assert_eq!(fields(&err), ["membership.name", "membership.role"]);

    h.create_user(call(&acme(), new_user(ACME, "ada")))
        .await
        .expect("user");
    let m = h
        .create_membership(call(&acme(), new_membership("web", ACME, "ada")))
        .await
        .expect("granted")
        .into_inner();
    assert_eq!(m.name, "projects/web/members/ada");
    assert_eq!(m.region_status[0].state, State::Ready as i32);
    // Granting again, even another role, is ALREADY_EXISTS.
    let mut admin = new_membership("web", ACME, "ada");
    if let Some(m) = admin.membership.as_mut() {
        m.role = ProjectRole::Admin as i32;
    }
    let err = h
        .create_membership(call(&acme(), admin))
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn deletes_cascade_and_report_what_they_freed() {
    let h = handlers();
    h.create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created");
    h.create_user(call(&acme(), new_user(ACME, "ada")))
        .await
        .expect("user");
    h.create_membership(call(&acme(), new_membership("web", ACME, "ada")))
        .await
        .expect("granted");
    for (id, cidr) in [("net-a", "10.0.0.0/24"), ("net-b", "fd00:1::/64")] {
        h.create_network(call(&acme(), new_network("web", id, cidr)))
            .await
            .expect("network");
    }
    for id in ["ssh", "web-in", "dns"] {
        h.create_access_rule(call(&acme(), new_rule("web", id)))
            .await
            .expect("rule");
    }
    let page = h
        .list_access_rules(call(
            &acme(),
            ListRequest {
                parent: "projects/web".into(),
                organization: ACME.into(),
                after: "projects/web/accessRules/dns".into(),
                limit: 1,
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.access_rules.len(), 1);
    assert_eq!(page.access_rules[0].name, "projects/web/accessRules/ssh");

    let deleted = h
        .delete_network(call(
            &acme(),
            DeleteNetworkRequest {
                name: "projects/web/networks/net-b".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.freed.map(|f| f.networks), Some(1));
    assert_eq!(deleted.organization, ACME);

    let deleted = h
        .delete_project(call(
            &acme(),
            DeleteProjectRequest {
                name: "projects/web".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(
        deleted.freed,
        Some(ResourceCounts {
            projects: 1,
            users: 0,
            networks: 1,
            access_rules: 3,
        })
    );
    assert_eq!(deleted.organization, ACME);
    let members = h
        .list_memberships(call(&acme(), list(ACME, "projects/web")))
        .await
        .expect("list")
        .into_inner();
    assert!(members.memberships.is_empty());

    let deleted = h
        .delete_user(call(
            &acme(),
            DeleteUserRequest {
                name: "organizations/acme/users/ada".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.freed.map(|f| f.users), Some(1));

    let err = h
        .delete_access_rule(call(
            &acme(),
            DeleteAccessRuleRequest {
                name: "projects/web/accessRules/ssh".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("gone with the project");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn membership_deletes_free_nothing_and_users_list_by_org() {
    let h = handlers();
    h.create_project(call(&acme(), new_project("web", ACME, "")))
        .await
        .expect("created");
    for id in ["bob", "ada"] {
        h.create_user(call(&acme(), new_user(ACME, id)))
            .await
            .expect("user");
    }
    let users = h
        .list_users(call(&acme(), list(ACME, ACME)))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = users.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "organizations/acme/users/ada",
            "organizations/acme/users/bob"
        ]
    );
    h.create_membership(call(&acme(), new_membership("web", ACME, "ada")))
        .await
        .expect("granted");
    let got = h
        .get_membership(call(
            &acme(),
            GetMembershipRequest {
                name: "projects/web/members/ada".into(),
            },
        ))
        .await
        .expect("found")
        .into_inner();
    assert_eq!(got.user, "organizations/acme/users/ada");
    let deleted = h
        .delete_membership(call(
            &acme(),
            DeleteMembershipRequest {
                name: "projects/web/members/ada".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.freed, Some(ResourceCounts::default()));
    let err = h
        .get_user(call(
            &who("organizations/evil", Role::Admin),
            GetUserRequest {
                name: "organizations/acme/users/ada".into(),
            },
        ))
        .await
        .expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
}
