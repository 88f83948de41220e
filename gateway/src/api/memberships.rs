//! `nordlys.v1.MembershipService`.

use nordlys_api::{names, validate, Violations};
use nordlys_proto::pb::nordlys::v1::membership_service_server::MembershipService;
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, CreateMembershipRequest, CreateUserRequest, DeleteMembershipRequest,
    DeleteMembershipResponse, DeleteUserRequest, GetMembershipRequest, GetProjectRequest,
    GetUserRequest, ListMembershipsRequest, ListMembershipsResponse, Membership, Project,
    ProjectRole, User,
};
use tonic::{Request, Response, Status};

use super::projects::not_found_as;
use super::{first_success, Api, Fanout, Kind};
use crate::call::Call;
use crate::events::Change;
use nordlys_proto::pb::nordlys::v1::event::Data;

impl Api {
    /// User `name` as its regions have it, and the regions it is in.
    pub(super) async fn user_placement(
        &self,
        call: &Call,
        name: &str,
    ) -> Result<(User, Vec<String>), Status> {
        let (user, _): (User, _) = self
            .gather_one(
                call,
                "GetUser",
                GetUserRequest {
                    name: name.to_string(),
                },
            )
            .await
            .map_err(|s| not_found_as(s, name))?;
        let present = user
            .region_status
            .iter()
            .filter(|s| s.state == State::Ready as i32)
            .map(|s| s.region.clone())
            .collect();
        Ok((user, present))
    }

    /// A user is created in a region when it is first granted a role on a
    /// project there: the user's record, gathered from the regions it is
    /// in, is created (under the `users` quota) in the project regions it
    /// is missing from.
    pub(super) async fn place_user(
        &self,
        call: &Call,
        organization: &str,
        user_name: &str,
        regions: &[String],
        request_id: &str,
    ) -> Result<(), Status> {
        let (user, present) = self.user_placement(call, user_name).await?;
        self.place_missing(call, organization, &user, &present, regions, request_id)
            .await
    }

    /// Creates `user` (as [`Api::user_placement`] gave it, in `present`) in
    /// the regions of `regions` it is missing from.
    pub(super) async fn place_missing(
        &self,
        call: &Call,
        organization: &str,
        user: &User,
        present: &[String],
        regions: &[String],
        request_id: &str,
    ) -> Result<(), Status> {
        let user_name = user.name.as_str();
        let missing: Vec<String> = regions
            .iter()
            .filter(|r| !present.contains(r))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let user_id = names::parse(user_name, &["organizations", "users"])
            .and_then(|ids| ids.get(1).map(|id| id.to_string()))
            .unwrap_or_default();
        let mut placed = user.clone();
        placed.region_status.clear();
        // The user keeps the create time it has in its other regions.
        placed.create_time.get_or_insert_with(nordlys_api::now);
        for region in &missing {
            if !placed.regions.contains(region) {
                placed.regions.push(region.clone());
            }
        }
        // Stable for a retried grant, so the user is created once.
        let placement_id = nordlys_api::ids::reservation(organization, user_name, request_id);
        let req = CreateUserRequest {
            parent: organization.to_string(),
            user: Some(placed),
            user_id,
            request_id: placement_id.clone(),
        };
        let answers = self
            .create_in_regions::<_, User, _>(
                call,
                Fanout {
                    method: "CreateUser",
                    undo: "DeleteUser",
                    organization,
                    resource: user_name,
                    request_id: &placement_id,
                    placement: &missing,
                    kind: Some(Kind::Users),
                },
                req,
                |name| DeleteUserRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        first_success(answers).map(|_| ())
    }
}

#[tonic::async_trait]
impl MembershipService for Api {
    async fn create_membership(
        &self,
        request: Request<CreateMembershipRequest>,
    ) -> Result<Response<Membership>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        self.require_write(&call, &req.parent)?;
        let project_id = names::parse_field(&req.parent, &["projects"], "parent")?[0].to_string();
        let Some(membership) = req.membership.as_mut() else {
            return Err(nordlys_api::invalid("membership", "is required"));
        };
        // Output only: what the environments say, never the caller.
        membership.managed_by.clear();
        let mut v = Violations::new();
        let user = names::parse(&membership.user, &["organizations", "users"]);
        if user.is_none() {
            v.add(
                "membership.user",
                "must be a user name, organizations/{org}/users/{user}",
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
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        // Every create carries a request id, so any retry or fallback of the
        // internal call is deduplicated by the region.
        if req.request_id.is_empty() {
            req.request_id = format!("gw-{}", nordlys_api::ids::random_hex(32));
        }
        let user_ids = user.unwrap_or_default();

        // The project's placement decides where the role is granted.
        let (project, _): (Project, _) = self
            .gather_one(
                &call,
                "GetProject",
                GetProjectRequest {
                    name: req.parent.clone(),
                },
            )
            .await
            .map_err(|s| not_found_as(s, &req.parent))?;
        if names::organization(user_ids[0]) != project.organization {
            return Err(nordlys_api::invalid(
                "membership.user",
                "must be a user of the project's organization",
            ));
        }
        let regions: Vec<String> = project
            .region_status
            .iter()
            .filter(|s| s.state == State::Ready as i32)
            .map(|s| s.region.clone())
            .collect();
        self.place_user(
            &call,
            &project.organization,
            &membership.user,
            &regions,
            &req.request_id,
        )
        .await?;
        membership.name = names::membership(&project_id, user_ids[1]);
        membership.region_status.clear();
        // One create time for every region of the membership.
        membership.create_time = Some(nordlys_api::now());
        let name = membership.name.clone();
        let answers = self
            .create_in_regions::<_, Membership, _>(
                &call,
                Fanout {
                    method: "CreateMembership",
                    undo: "DeleteMembership",
                    organization: &project.organization,
                    resource: &name,
                    request_id: &req.request_id,
                    placement: &regions,
                    kind: None,
                },
                req.clone(),
                |name| DeleteMembershipRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        let (mut membership, statuses) = first_success(answers)?;
        membership.region_status = statuses;
        self.changed(
            &call,
            Change::new(
                "membership",
                "created",
                &project.organization,
                &membership.name,
            )
            .request_id(&req.request_id)
            .data(Data::Membership(membership.clone())),
        );
        Ok(Response::new(self.marked(&call, membership)))
    }

    async fn get_membership(
        &self,
        request: Request<GetMembershipRequest>,
    ) -> Result<Response<Membership>, Status> {
        let (membership, _) = self
            .get_by_name(request, "GetMembership", &["projects", "members"])
            .await?;
        Ok(Response::new(membership))
    }

    async fn list_memberships(
        &self,
        request: Request<ListMembershipsRequest>,
    ) -> Result<Response<ListMembershipsResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let (page, next_page_token) = self
            .list_children(
                (&metadata, &extensions),
                "ListMemberships",
                &req.parent,
                req.page_size,
                &req.page_token,
                |r: ListMembershipsResponse| r.memberships,
            )
            .await?;
        Ok(Response::new(ListMembershipsResponse {
            memberships: page.items,
            next_page_token,
            unreachable: page.unreachable,
        }))
    }

    async fn delete_membership(
        &self,
        request: Request<DeleteMembershipRequest>,
    ) -> Result<Response<DeleteMembershipResponse>, Status> {
        let region_status = self
            .delete_by_name(
                request,
                "DeleteMembership",
                &["projects", "members"],
                "membership",
            )
            .await?;
        Ok(Response::new(DeleteMembershipResponse { region_status }))
    }
}
