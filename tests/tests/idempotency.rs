//! A create repeated with the same request_id returns the first result and
//! creates (and counts) once.

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    membership_service_client::MembershipServiceClient,
    project_service_client::ProjectServiceClient, user_service_client::UserServiceClient,
    AccessRule, CreateAccessRuleRequest, CreateMembershipRequest, CreateProjectRequest,
    CreateUserRequest, DeleteAccessRuleRequest, DeleteMembershipRequest, Direction,
    ListProjectsRequest, Membership, Project, ProjectRole, Protocol, User,
};
use nordlys_tests::{bearer, Stack};
use tonic::Code;

fn request(project_id: &str, request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: "Once".into(),
            regions: vec!["sto1".into(), "osl1".into()],
            ..Default::default()
        }),
        project_id: project_id.into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn the_same_request_id_creates_once() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let key = &tenant.key;
    let mut projects = ProjectServiceClient::new(stack.channel().await);

    // With an explicit id, and with an id derived from the request id.
    for (project_id, request_id) in [
        ("once", "6f1c2a80-3b9e-4d55-9a57-0c1f8e2b7d11"),
        ("", "b7a1d1c4-5d6e-4f70-8a91-2b3c4d5e6f70"),
    ] {
        let first = projects
            .create_project(bearer(request(project_id, request_id), key))
            .await
            .expect("first create")
            .into_inner();
        let second = projects
            .create_project(bearer(request(project_id, request_id), key))
            .await
            .expect("repeated create answers like the first")
            .into_inner();
        assert_eq!(first.name, second.name);
        assert_eq!(first.create_time, second.create_time);
        assert_eq!(first.organization, second.organization);
        if !project_id.is_empty() {
            assert_eq!(first.name, format!("projects/{project_id}"));
        }
    }

    let listed = nordlys_tests::whole_list!(projects
        .list_projects(bearer(ListProjectsRequest::default(), key))
        .await
        .expect("ListProjects")
        .into_inner());
    assert_eq!(listed.projects.len(), 2, "{:?}", listed.projects);
    for region in ["sto1", "osl1"] {
        let quota = stack.quota(key, &tenant.organization, region).await;
        assert_eq!(quota.usage.unwrap_or_default().projects, 2, "{region}");
        assert_eq!(quota.reserved.unwrap_or_default().projects, 0, "{region}");
    }
}

/// Access rules and memberships keep their request ids like every other
/// resource, on every backend (on OpenStack a rule keeps a hash of it in
/// Neutron, and the region keeps a membership's, which Keystone cannot).
#[tokio::test]
async fn a_rules_and_a_memberships_request_id_name_one_create_even_after_a_delete() {
    let stack = Stack::start().await;
    // Tenant and names of their own: on OpenStack the suite shares a cloud.
    let tenant = stack.tenant("hooli").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    stack
        .create_project(key, "reqs", &["sto1"])
        .await
        .expect("CreateProject");

    let mut rules = AccessRuleServiceClient::new(stack.channel().await);
    let rule = |id: &str, port: u32| CreateAccessRuleRequest {
        parent: "projects/reqs".into(),
        access_rule: Some(AccessRule {
            region: "sto1".into(),
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: port,
            port_range_max: port,
            remote_cidr: "10.0.0.0/8".into(),
            ..Default::default()
        }),
        access_rule_id: id.into(),
        request_id: "rule-req-1".into(),
    };
    let first = rules
        .create_access_rule(bearer(rule("ssh", 22), key))
        .await
        .expect("CreateAccessRule")
        .into_inner();
    let again = rules
        .create_access_rule(bearer(rule("ssh", 22), key))
        .await
        .expect("the same create again")
        .into_inner();
    assert_eq!(again.name, first.name);
    let other = rules
        .create_access_rule(bearer(rule("https", 443), key))
        .await
        .expect_err("a request id names one create");
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    rules
        .delete_access_rule(bearer(
            DeleteAccessRuleRequest {
                name: first.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteAccessRule");
    let reused = rules
        .create_access_rule(bearer(rule("ssh", 22), key))
        .await
        .expect_err("the id's rule was made and deleted");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    let usage = stack
        .quota(key, org, "sto1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!(usage.access_rules, 0, "nothing re-created uncounted");

    let mut users = UserServiceClient::new(stack.channel().await);
    for id in ["dana", "erin"] {
        users
            .create_user(bearer(
                CreateUserRequest {
                    parent: org.clone(),
                    user: Some(User {
                        display_name: id.into(),
                        email: format!("{id}@hooli.example"),
                        regions: vec!["sto1".into()],
                        ..Default::default()
                    }),
                    user_id: id.into(),
                    request_id: String::new(),
                },
                key,
            ))
            .await
            .expect("CreateUser");
    }
    let mut memberships = MembershipServiceClient::new(stack.channel().await);
    let grant = |user: &str| CreateMembershipRequest {
        parent: "projects/reqs".into(),
        membership: Some(Membership {
            user: format!("{org}/users/{user}"),
            role: ProjectRole::Member as i32,
            ..Default::default()
        }),
        request_id: "grant-req-1".into(),
    };
    let granted = memberships
        .create_membership(bearer(grant("dana"), key))
        .await
        .expect("CreateMembership")
        .into_inner();
    memberships
        .create_membership(bearer(grant("dana"), key))
        .await
        .expect("the same grant again");
    let other = memberships
        .create_membership(bearer(grant("erin"), key))
        .await
        .expect_err("a request id names one grant");
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
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
    let reused = memberships
        .create_membership(bearer(grant("dana"), key))
        .await
        .expect_err("the id's grant was made and revoked");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
}
