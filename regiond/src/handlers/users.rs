//! Users of an organization, placed in this region.

use crate::backend::{ResourceKind, UserChange};
use nordlys_api::validate::{check_email, check_id, check_text, MAX_DISPLAY_NAME};
use nordlys_api::{invalid, names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersResponse, UpdateUserRequest,
    User,
};
use tonic::{Request, Response, Status};

use super::{parse_into, request_id, settle_name, Caller, Handlers};

const USER: &[&str] = &["organizations", "users"];

/// The user with its etag (AIP-154).
fn with_etag(mut user: User) -> User {
    user.etag = nordlys_api::update::user_etag(&user);
    user
}

pub(super) async fn update(
    h: &Handlers,
    request: Request<UpdateUserRequest>,
) -> Result<Response<User>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let user = req.user.ok_or_else(|| invalid("user", "is required"))?;
    let mut v = Violations::new();
    parse_into(&mut v, &user.name, USER, "user.name");
    let paths = nordlys_api::update::user_paths(&mut v, &user, req.update_mask.as_ref());
    let change = UserChange {
        display_name: paths
            .contains(&"display_name")
            .then(|| user.display_name.clone()),
        email: paths.contains(&"email").then(|| user.email.clone()),
        regions: paths.contains(&"regions").then(|| user.regions.clone()),
        etag: user.etag.clone(),
    };
    if paths.contains(&"regions") {
        h.check_placement(&mut v, "user.regions", &user.regions);
    }
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    let tenant = &caller.tenant;
    let updated = h
        .update_once(
            &caller,
            ResourceKind::User,
            &user.name,
            &request_id,
            h.backend.get_user(tenant, &user.name),
            h.backend.update_user(tenant, &user.name, &change),
        )
        .await?;
    Ok(Response::new(with_etag(updated)))
}

pub(super) async fn create(
    h: &Handlers,
    request: Request<CreateUserRequest>,
) -> Result<Response<User>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let mut user = req.user.ok_or_else(|| invalid("user", "is required"))?;
    let mut v = Violations::new();
    let org = parse_into(&mut v, &req.parent, &["organizations"], "parent");
    check_id(&mut v, "user_id", &req.user_id);
    if let Some(org) = org {
        user.name = settle_name(
            &mut v,
            "user.name",
            &user.name,
            names::user(org[0], &req.user_id),
        );
    }
    check_text(
        &mut v,
        "user.display_name",
        &user.display_name,
        MAX_DISPLAY_NAME,
        false,
    );
    if !user.email.is_empty() {
        check_email(&mut v, "user.email", &user.email);
    }
    h.check_placement(&mut v, "user.regions", &user.regions);
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    caller.owns(&req.parent)?;
    user.region_status = h.ready();
    user.create_time.get_or_insert_with(nordlys_api::now);
    let name = user.name.clone();
    let create_time = user.create_time;
    let user = h
        .create(
            &caller,
            ResourceKind::User,
            req.parent.clone(),
            &name,
            &request_id,
            create_time.as_ref(),
            move |backend, tenant, request_id| async move {
                backend.create_user(&tenant, &request_id, user).await
            },
        )
        .await?;
    Ok(Response::new(with_etag(user)))
}

pub(super) async fn get(
    h: &Handlers,
    request: Request<GetUserRequest>,
) -> Result<Response<User>, Status> {
    let caller = Caller::of(&request)?;
    let name = &request.get_ref().name;
    names::parse_field(name, USER, "name")?;
    Ok(Response::new(with_etag(
        h.backend.get_user(&caller.tenant, name).await?,
    )))
}

pub(super) async fn list(
    h: &Handlers,
    request: Request<ListRequest>,
) -> Result<Response<ListUsersResponse>, Status> {
    let caller = Caller::of(&request)?;
    let filter = h.filter(&caller, request.get_ref(), &["organizations"])?;
    Ok(Response::new(ListUsersResponse {
        users: h
            .backend
            .list_users(&filter)
            .await?
            .into_iter()
            .map(with_etag)
            .collect(),
        ..Default::default()
    }))
}

pub(super) async fn delete(
    h: &Handlers,
    request: Request<DeleteUserRequest>,
) -> Result<Response<DeleteResponse>, Status> {
    let (name, etag) = (&request.get_ref().name, &request.get_ref().etag);
    names::parse_field(name, USER, "name")?;
    let caller = Caller::writer(&request)?;
    h.check_delete_etag(
        etag,
        ResourceKind::User,
        name,
        h.backend.get_user(&caller.tenant, name),
        nordlys_api::update::user_etag,
    )
    .await?;
    h.delete(&request, ResourceKind::User, name).await
}
