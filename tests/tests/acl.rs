//! Authentication and roles: no key or a wrong key is UNAUTHENTICATED, a
//! viewer reads but cannot create, only the operator creates organizations
//! and sets limits.

use nordlys_proto::pb::nordlys::v1::{
    organization_service_client::OrganizationServiceClient,
    project_service_client::ProjectServiceClient, quota_service_client::QuotaServiceClient, ApiKey,
    CreateApiKeyRequest, CreateMemberRequest, CreateOrganizationRequest, ListProjectsRequest,
    Member, Organization, OrganizationRole, Quota, ResourceCounts, UpdateQuotaRequest,
};
use nordlys_tests::{bearer, Stack, OPERATOR_KEY};
use tonic::Code;

#[tokio::test]
async fn keys_and_roles_decide_what_a_caller_may_do() {
    let stack = Stack::start().await;
    let owner = stack.tenant("acme").await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let mut orgs = OrganizationServiceClient::new(stack.channel().await);

    let anonymous = projects
        .list_projects(tonic::Request::new(ListProjectsRequest::default()))
        .await
        .expect_err("no key");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let wrong = projects
        .list_projects(bearer(ListProjectsRequest::default(), "not-a-key"))
        .await
        .expect_err("wrong key");
    assert_eq!(wrong.code(), Code::Unauthenticated);

    // The owner adds a viewer and makes a key for it: the secret is shown once.
    let viewer = orgs
        .create_member(bearer(
            CreateMemberRequest {
                parent: owner.organization.clone(),
                member: Some(Member {
                    role: OrganizationRole::Viewer as i32,
                    ..Default::default()
                }),
                member_id: "reader@acme.example".into(),
            },
            &owner.key,
        ))
        .await
        .expect("owner adds a viewer")
        .into_inner();
    assert_eq!(
        viewer.name,
        format!("{}/members/reader@acme.example", owner.organization)
    );
    let viewer_key = orgs
        .create_api_key(bearer(
            CreateApiKeyRequest {
                parent: owner.organization.clone(),
                api_key: Some(ApiKey {
                    member: viewer.name.clone(),
                    display_name: "viewer key".into(),
                    ..Default::default()
                }),
            },
            &owner.key,
        ))
        .await
        .expect("owner makes the viewer's key")
        .into_inner();
    assert!(!viewer_key.secret.is_empty());

    stack
        .create_project(&owner.key, "shop", &["sto1"])
        .await
        .expect("owner creates");
    let refused = stack
        .create_project(&viewer_key.secret, "viewers-own", &["sto1"])
        .await
        .expect_err("a viewer cannot create");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let seen = nordlys_tests::whole_list!(projects
        .list_projects(bearer(ListProjectsRequest::default(), &viewer_key.secret))
        .await
        .expect("a viewer reads")
        .into_inner());
    let seen: Vec<&str> = seen.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(seen, ["projects/shop"]);

    // Organizations and limits are the operator's.
    let create_org = orgs
        .create_organization(bearer(
            CreateOrganizationRequest {
                organization: Some(Organization {
                    display_name: "Rogue".into(),
                    ..Default::default()
                }),
                organization_id: "rogue".into(),
            },
            &owner.key,
        ))
        .await
        .expect_err("an owner cannot create organizations");
    assert_eq!(create_org.code(), Code::PermissionDenied);
    let raise = QuotaServiceClient::new(stack.channel().await)
        .update_quota(bearer(
            UpdateQuotaRequest {
                quota: Some(Quota {
                    name: format!("{}/quotas/sto1", owner.organization),
                    limits: Some(ResourceCounts {
                        projects: 1_000_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            },
            &owner.key,
        ))
        .await
        .expect_err("an owner cannot raise its own limits");
    assert_eq!(raise.code(), Code::PermissionDenied);

    // The operator can; a repeated organization id is ALREADY_EXISTS.
    let again = orgs
        .create_organization(bearer(
            CreateOrganizationRequest {
                organization: Some(Organization::default()),
                organization_id: "acme".into(),
            },
            OPERATOR_KEY,
        ))
        .await
        .expect_err("acme exists");
    assert_eq!(again.code(), Code::AlreadyExists);
}
