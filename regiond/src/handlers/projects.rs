//! Projects: the unit of tenancy, one per placement region.

use crate::backend::{ProjectChange, ResourceKind};
use nordlys_api::validate::{check_id, check_text, MAX_DESCRIPTION, MAX_DISPLAY_NAME};
use nordlys_api::{invalid, names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    CreateProjectRequest, DeleteProjectRequest, GetProjectRequest, ListProjectsResponse, Project,
    UpdateProjectRequest,
};
use tonic::{Request, Response, Status};

use super::{parse_into, request_id, settle_name, Caller, Handlers};

pub(super) async fn create(
    h: &Handlers,
    request: Request<CreateProjectRequest>,
) -> Result<Response<Project>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let mut project = req
        .project
        .ok_or_else(|| invalid("project", "is required"))?;
    let mut v = Violations::new();
    check_id(&mut v, "project_id", &req.project_id);
    project.name = settle_name(
        &mut v,
        "project.name",
        &project.name,
        names::project(&req.project_id),
    );
    parse_into(
        &mut v,
        &project.organization,
        &["organizations"],
        "project.organization",
    );
    check_text(
        &mut v,
        "project.display_name",
        &project.display_name,
        MAX_DISPLAY_NAME,
        false,
    );
    check_text(
        &mut v,
        "project.description",
        &project.description,
        MAX_DESCRIPTION,
        false,
    );
    h.check_placement(&mut v, "project.regions", &project.regions);
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    caller.owns(&project.organization)?;
    // The tier the quota service gives the organization, as the gateway
    // had it from the reservation: what this project's cloud quotas get.
    if let Some(tier) = metadata
        .get(nordlys_transport::metadata::TIER)
        .and_then(|v| v.to_str().ok())
    {
        h.backend.tier_hint(&project.organization, tier);
    }
    project.region_status = h.ready();
    project.create_time.get_or_insert_with(nordlys_api::now);
    let name = project.name.clone();
    let create_time = project.create_time;
    let project = h
        .create(
            &caller,
            ResourceKind::Project,
            project.organization.clone(),
            &name,
            &request_id,
            create_time.as_ref(),
            move |backend, tenant, request_id| async move {
                backend.create_project(&tenant, &request_id, project).await
            },
        )
        .await?;
    Ok(Response::new(with_etag(project)))
}

/// The project with its etag (AIP-154), computed from what every region
/// holds alike.
fn with_etag(mut project: Project) -> Project {
    project.etag = nordlys_api::update::project_etag(&project);
    project
}

pub(super) async fn update(
    h: &Handlers,
    request: Request<UpdateProjectRequest>,
) -> Result<Response<Project>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let project = req
        .project
        .ok_or_else(|| invalid("project", "is required"))?;
    let mut v = Violations::new();
    parse_into(&mut v, &project.name, &["projects"], "project.name");
    let paths = nordlys_api::update::project_paths(&mut v, &project, req.update_mask.as_ref());
    let change = ProjectChange {
        display_name: paths
            .contains(&"display_name")
            .then(|| project.display_name.clone()),
        description: paths
            .contains(&"description")
            .then(|| project.description.clone()),
        regions: paths.contains(&"regions").then(|| project.regions.clone()),
        etag: project.etag.clone(),
    };
    if paths.contains(&"regions") {
        h.check_placement(&mut v, "project.regions", &project.regions);
    }
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    let tenant = &caller.tenant;
    let updated = h
        .update_once(
            &caller,
            ResourceKind::Project,
            &project.name,
            &request_id,
            h.backend.get_project(tenant, &project.name),
            h.backend.update_project(tenant, &project.name, &change),
        )
        .await?;
    Ok(Response::new(with_etag(updated)))
}

pub(super) async fn get(
    h: &Handlers,
    request: Request<GetProjectRequest>,
) -> Result<Response<Project>, Status> {
    let caller = Caller::of(&request)?;
    let name = &request.get_ref().name;
    names::parse_field(name, &["projects"], "name")?;
    Ok(Response::new(with_etag(
        h.backend.get_project(&caller.tenant, name).await?,
    )))
}

pub(super) async fn list(
    h: &Handlers,
    request: Request<ListRequest>,
) -> Result<Response<ListProjectsResponse>, Status> {
    let caller = Caller::of(&request)?;
    let filter = h.filter(&caller, request.get_ref(), &[])?;
    Ok(Response::new(ListProjectsResponse {
        projects: h
            .backend
            .list_projects(&filter)
            .await?
            .into_iter()
            .map(with_etag)
            .collect(),
        ..Default::default()
    }))
}

pub(super) async fn delete(
    h: &Handlers,
    request: Request<DeleteProjectRequest>,
) -> Result<Response<DeleteResponse>, Status> {
    let name = &request.get_ref().name;
    names::parse_field(name, &["projects"], "name")?;
    let caller = Caller::writer(&request)?;
    h.check_delete_etag(
        &request.get_ref().etag,
        ResourceKind::Project,
        name,
        h.backend.get_project(&caller.tenant, name),
        nordlys_api::update::project_etag,
    )
    .await?;
    h.delete(&request, ResourceKind::Project, name).await
}
