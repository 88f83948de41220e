//! Memberships: a user's role on a project in this region.

use crate::backend::ResourceKind;
use nordlys_api::{invalid, names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    CreateMembershipRequest, DeleteMembershipRequest, GetMembershipRequest,
    ListMembershipsResponse, Membership, ProjectRole,
};
use tonic::{Request, Response, Status};

use super::{parse_into, request_id, settle_name, Caller, Handlers};

const MEMBERSHIP: &[&str] = &["projects", "members"];

/// Re-granting an existing membership, even with another role, is
/// ALREADY_EXISTS (unless it repeats the first create's request id): roles
/// change by delete and create, so a retried grant never changes a role.
pub(super) async fn create(
    h: &Handlers,
    request: Request<CreateMembershipRequest>,
) -> Result<Response<Membership>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let mut membership = req
        .membership
        .ok_or_else(|| invalid("membership", "is required"))?;
    let mut v = Violations::new();
    let project = parse_into(&mut v, &req.parent, &["projects"], "parent");
    let user = parse_into(
        &mut v,
        &membership.user,
        &["organizations", "users"],
        "membership.user",
    );
    if let (Some(project), Some(user)) = (project, user) {
        membership.name = settle_name(
            &mut v,
            "membership.name",
            &membership.name,
            names::membership(project[0], user[1]),
        );
    }
    v.check(
        matches!(
            ProjectRole::try_from(membership.role),
            Ok(ProjectRole::Admin | ProjectRole::Member | ProjectRole::Reader)
        ),
        "membership.role",
        "must be PROJECT_ROLE_ADMIN, PROJECT_ROLE_MEMBER or PROJECT_ROLE_READER",
    );
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    membership.region_status = h.ready();
    membership.create_time.get_or_insert_with(nordlys_api::now);
    let name = membership.name.clone();
    let create_time = membership.create_time;
    let membership = h
        .create(
            &caller,
            ResourceKind::Membership,
            String::new(),
            &name,
            &request_id,
            create_time.as_ref(),
            move |backend, tenant, request_id| async move {
                backend
                    .create_membership(&tenant, &request_id, membership)
                    .await
            },
        )
        .await?;
    Ok(Response::new(with_etag(membership)))
}

/// The membership with its etag (AIP-154).
fn with_etag(mut membership: Membership) -> Membership {
    membership.etag = nordlys_api::update::membership_etag(&membership);
    membership
}

pub(super) async fn get(
    h: &Handlers,
    request: Request<GetMembershipRequest>,
) -> Result<Response<Membership>, Status> {
    let caller = Caller::of(&request)?;
    let name = &request.get_ref().name;
    names::parse_field(name, MEMBERSHIP, "name")?;
    Ok(Response::new(with_etag(
        h.backend.get_membership(&caller.tenant, name).await?,
    )))
}

pub(super) async fn list(
    h: &Handlers,
    request: Request<ListRequest>,
) -> Result<Response<ListMembershipsResponse>, Status> {
    let caller = Caller::of(&request)?;
    let filter = h.filter(&caller, request.get_ref(), &["projects"])?;
    Ok(Response::new(ListMembershipsResponse {
        memberships: h
            .backend
            .list_memberships(&filter)
            .await?
            .into_iter()
            .map(with_etag)
            .collect(),
        ..Default::default()
    }))
}

pub(super) async fn delete(
    h: &Handlers,
    request: Request<DeleteMembershipRequest>,
) -> Result<Response<DeleteResponse>, Status> {
    let (name, etag) = (&request.get_ref().name, &request.get_ref().etag);
    names::parse_field(name, MEMBERSHIP, "name")?;
    let caller = Caller::writer(&request)?;
    h.check_delete_etag(
        etag,
        ResourceKind::Membership,
        name,
        h.backend.get_membership(&caller.tenant, name),
        nordlys_api::update::membership_etag,
    )
    .await?;
    h.delete(&request, ResourceKind::Membership, name).await
}
