//! `nordlys.v1.ProjectService`.

use nordlys_api::validate::{self, MAX_DESCRIPTION, MAX_DISPLAY_NAME};
use nordlys_api::{ids, names, update, Violations};
use nordlys_proto::pb::nordlys::v1::project_service_server::ProjectService;
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, CreateProjectRequest, DeleteProjectRequest, DeleteProjectResponse,
    GetProjectRequest, ListProjectsRequest, ListProjectsResponse, Project, RegionStatus,
    UpdateProjectRequest,
};
use tonic::{Code, Request, Response, Status};

use super::{first_success, spelled_out, Api, Fanout, Kind};
use crate::events::Change;
use crate::scatter::{mark_unreachable, sort_by_region};
use nordlys_proto::pb::nordlys::v1::event::Data;

#[tonic::async_trait]
impl ProjectService for Api {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let call = self.state.begin(&request).await?;
        self.require_write(&call, "projects")?;
        let mut req = request.into_inner();
        let Some(project) = req.project.as_mut() else {
            return Err(nordlys_api::invalid("project", "is required"));
        };
        // Output only: what the environments say, never the caller.
        project.managed_by.clear();
        let org = self.resolve_org(&call, &project.organization, "project.organization")?;
        let mut v = Violations::new();
        validate::check_text(
            &mut v,
            "project.display_name",
            &project.display_name,
            MAX_DISPLAY_NAME,
            true,
        );
        validate::check_text(
            &mut v,
            "project.description",
            &project.description,
            MAX_DESCRIPTION,
            false,
        );
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        self.check_placement(&mut v, "project.regions", &project.regions);
        if req.project_id.is_empty() {
            req.project_id = ids::derive("prj", &org, &req.request_id);
        } else {
            validate::check_id(&mut v, "project_id", &req.project_id);
        }
        v.into_result()?;
        // Every create carries a request id, so any retry or fallback of the
        // internal call is deduplicated by the region.
        if req.request_id.is_empty() {
            req.request_id = format!("gw-{}", nordlys_api::ids::random_hex(32));
        }

        project.name = names::project(&req.project_id);
        project.organization = org.clone();
        project.region_status.clear();
        // One create time for every region of the placement.
        project.create_time = Some(nordlys_api::now());
        let name = project.name.clone();
        let placement = project.regions.clone();
        let answers = self
            .create_in_regions::<_, Project, _>(
                &call,
                Fanout {
                    method: "CreateProject",
                    undo: "DeleteProject",
                    organization: &org,
                    resource: &name,
                    request_id: &req.request_id,
                    placement: &placement,
                    kind: Some(Kind::Projects),
                },
                req.clone(),
                |name| DeleteProjectRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        let (mut project, statuses) = first_success(answers)?;
        project.region_status = statuses;
        self.changed(
            &call,
            Change::new("project", "created", &org, &project.name)
                .request_id(&req.request_id)
                .data(Data::Project(project.clone())),
        );
        Ok(Response::new(self.marked(&call, project)))
    }

    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        names::parse_field(&req.name, &["projects"], "name")?;
        let (mut project, unreachable): (Project, _) = self
            .gather_one(&call, "GetProject", req.clone())
            .await
            .map_err(|s| not_found_as(s, &req.name))?;
        complete_statuses(&mut project, &unreachable);
        Ok(Response::new(self.marked(&call, project)))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let org = if req.organization.is_empty()
            && call.caller.role == nordlys_transport::Role::Operator
        {
            String::new()
        } else {
            self.resolve_org(&call, &req.organization, "organization")?
        };
        let mut v = Violations::new();
        if !req.region.is_empty() {
            self.state.check_region(&mut v, "region", &req.region);
        }
        v.into_result()?;
        let only_region = (!req.region.is_empty()).then_some(req.region.as_str());
        let (page, next_page_token) = self
            .list(
                &call,
                "ListProjects",
                "",
                &org,
                only_region,
                req.page_size,
                &req.page_token,
                |r: ListProjectsResponse| r.projects,
            )
            .await?;
        let mut projects = page.items;
        for project in &mut projects {
            mark_unreachable(
                &mut project.region_status,
                &project.regions.clone(),
                &page.unreachable,
            );
        }
        Ok(Response::new(ListProjectsResponse {
            projects,
            next_page_token,
            unreachable: page.unreachable,
        }))
    }

    async fn update_project(
        &self,
        request: Request<UpdateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        let Some(project) = req.project.as_ref() else {
            return Err(nordlys_api::invalid("project", "is required"));
        };
        let name = project.name.clone();
        names::parse_field(&name, &["projects"], "project.name")?;
        self.require_write(&call, &name)?;
        let mut v = Violations::new();
        let paths = update::project_paths(&mut v, project, req.update_mask.as_ref());
        let placing = paths.contains(&"regions");
        if placing {
            self.check_known(&mut v, "project.regions", &project.regions);
        }
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        let (update_mask, request_id) = spelled_out(&paths, &req.request_id);
        req.update_mask = Some(update_mask);
        req.request_id = request_id;
        let project = if placing {
            self.update_placement(&call, req.clone()).await?
        } else {
            let (mut project, statuses): (Project, _) = self
                .change_everywhere(&call, "UpdateProject", req.clone(), &req.request_id)
                .await
                .map_err(|s| not_found_as(s, &name))?;
            project.region_status = statuses;
            project
        };
        let org = project.organization.clone();
        self.changed(
            &call,
            Change::new("project", "updated", &org, &project.name)
                .request_id(&req.request_id)
                .data(Data::Project(project.clone())),
        );
        Ok(Response::new(self.marked(&call, project)))
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        self.require_write(&call, &req.name)?;
        names::parse_field(&req.name, &["projects"], "name")?;
        let mut v = Violations::new();
        update::check_etag(&mut v, "etag", &req.etag);
        v.into_result()?;
        let owner = self.owner_of(&call, &req.name).await;
        let region_status = self
            .delete_everywhere(&call, "DeleteProject", req.clone())
            .await
            .map_err(|s| not_found_as(s, &req.name))?;
        if let Some(owner) = owner {
            self.changed(&call, Change::new("project", "deleted", &owner, &req.name));
        }
        Ok(Response::new(DeleteProjectResponse { region_status }))
    }
}

/// Names the missing resource in a bare NOT_FOUND.
pub(super) fn not_found_as(status: Status, name: &str) -> Status {
    if status.code() == Code::NotFound && status.message() == "not found" {
        Status::not_found(format!("{name} not found"))
    } else {
        status
    }
}

/// A gathered project's statuses: READY where found, UNREACHABLE where the
/// region did not answer, FAILED where a region of its placement lacks it.
pub(super) fn complete_statuses(project: &mut Project, unreachable: &[String]) {
    let placement = project.regions.clone();
    mark_unreachable(&mut project.region_status, &placement, unreachable);
    for region in &placement {
        if !project.region_status.iter().any(|s| &s.region == region) {
            project.region_status.push(RegionStatus {
                region: region.clone(),
                state: State::Failed as i32,
                code: Code::NotFound as i32,
                message: "missing in this region".to_string(),
            });
        }
    }
    sort_by_region(&mut project.region_status);
}
