//! `nordlys.v1.UserService`.

use nordlys_api::validate::{self, MAX_DISPLAY_NAME};
use nordlys_api::{ids, names, update, Violations};
use nordlys_proto::pb::nordlys::v1::user_service_server::UserService;
use nordlys_proto::pb::nordlys::v1::{
    CreateUserRequest, DeleteUserRequest, DeleteUserResponse, GetUserRequest, ListUsersRequest,
    ListUsersResponse, UpdateUserRequest, User,
};
use tonic::{Request, Response, Status};

use super::projects::not_found_as;
use super::{first_success, spelled_out, Api, Fanout, Kind};
use crate::call::Call;
use crate::events::Change;
use crate::scatter::mark_unreachable;
use nordlys_proto::pb::nordlys::v1::event::Data;

#[tonic::async_trait]
impl UserService for Api {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        self.require_write(&call, &req.parent)?;
        let org = self.resolve_org(&call, &req.parent, "parent")?;
        let org_id = org.trim_start_matches("organizations/").to_string();
        let Some(user) = req.user.as_mut() else {
            return Err(nordlys_api::invalid("user", "is required"));
        };
        // Output only: what the environments say, never the caller.
        user.managed_by.clear();
        let mut v = Violations::new();
        validate::check_text(
            &mut v,
            "user.display_name",
            &user.display_name,
            MAX_DISPLAY_NAME,
            true,
        );
        validate::check_email(&mut v, "user.email", &user.email);
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        self.check_placement(&mut v, "user.regions", &user.regions);
        if req.user_id.is_empty() {
            req.user_id = ids::derive("usr", &org, &req.request_id);
        } else {
            validate::check_id(&mut v, "user_id", &req.user_id);
        }
        v.into_result()?;
        // Every create carries a request id, so any retry or fallback of the
        // internal call is deduplicated by the region.
        if req.request_id.is_empty() {
            req.request_id = format!("gw-{}", nordlys_api::ids::random_hex(32));
        }

        req.parent = org.clone();
        user.name = names::user(&org_id, &req.user_id);
        user.region_status.clear();
        // One create time for every region of the placement.
        user.create_time = Some(nordlys_api::now());
        let name = user.name.clone();
        let placement = user.regions.clone();
        let answers = self
            .create_in_regions::<_, User, _>(
                &call,
                Fanout {
                    method: "CreateUser",
                    undo: "DeleteUser",
                    organization: &org,
                    resource: &name,
                    request_id: &req.request_id,
                    placement: &placement,
                    kind: Some(Kind::Users),
                },
                req.clone(),
                |name| DeleteUserRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        let (mut user, statuses) = first_success(answers)?;
        user.region_status = statuses;
        self.changed(
            &call,
            Change::new("user", "created", &org, &user.name)
                .request_id(&req.request_id)
                .data(Data::User(user.clone())),
        );
        Ok(Response::new(self.marked(&call, user)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let ids = names::parse_field(&req.name, &["organizations", "users"], "name")?;
        self.resolve_org(&call, &names::organization(ids[0]), "name")?;
        let (mut user, unreachable): (User, _) = self
            .gather_one(&call, "GetUser", req.clone())
            .await
            .map_err(|s| not_found_as(s, &req.name))?;
        let placement = user.regions.clone();
        mark_unreachable(&mut user.region_status, &placement, &unreachable);
        Ok(Response::new(self.marked(&call, user)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let org = self.resolve_org(&call, &req.parent, "parent")?;
        let (page, next_page_token) = self
            .list(
                &call,
                "ListUsers",
                &org,
                &org,
                None,
                req.page_size,
                &req.page_token,
                |r: ListUsersResponse| r.users,
            )
            .await?;
        let mut users = page.items;
        for user in &mut users {
            let placement = user.regions.clone();
            mark_unreachable(&mut user.region_status, &placement, &page.unreachable);
        }
        Ok(Response::new(ListUsersResponse {
            users,
            next_page_token,
            unreachable: page.unreachable,
        }))
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        let Some(user) = req.user.as_ref() else {
            return Err(nordlys_api::invalid("user", "is required"));
        };
        let name = user.name.clone();
        let ids = names::parse_field(&name, &["organizations", "users"], "user.name")?;
        let org = names::organization(ids[0]);
        self.resolve_org(&call, &org, "user.name")?;
        self.require_write(&call, &name)?;
        let mut v = Violations::new();
        let paths = update::user_paths(&mut v, user, req.update_mask.as_ref());
        let placing = paths.contains(&"regions");
        if placing {
            self.check_known(&mut v, "user.regions", &user.regions);
        }
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        let wanted = user.regions.clone();
        let (update_mask, request_id) = spelled_out(&paths, &req.request_id);
        req.update_mask = Some(update_mask);
        req.request_id = request_id;
        if placing {
            // New regions first: the user is created there (under the users
            // quota) as a grant there would, then every region's record
            // lists them all.
            self.place_in_regions(&call, &org, &name, &wanted, &req.request_id)
                .await?;
        }
        let (mut user, statuses): (User, _) = self
            .change_everywhere(&call, "UpdateUser", req.clone(), &req.request_id)
            .await
            .map_err(|s| not_found_as(s, &name))?;
        user.region_status = statuses;
        self.changed(
            &call,
            Change::new("user", "updated", &org, &user.name)
                .request_id(&req.request_id)
                .data(Data::User(user.clone())),
        );
        Ok(Response::new(self.marked(&call, user)))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        self.require_write(&call, &req.name)?;
        let ids = names::parse_field(&req.name, &["organizations", "users"], "name")?;
        let org = self.resolve_org(&call, &names::organization(ids[0]), "name")?;
        let region_status = self
            .delete_everywhere(&call, "DeleteUser", req.clone())
            .await
            .map_err(|s| not_found_as(s, &req.name))?;
        self.changed(&call, Change::new("user", "deleted", &org, &req.name));
        Ok(Response::new(DeleteUserResponse { region_status }))
    }
}

impl Api {
    /// Places user `name` in the regions of `wanted` it is not in yet. A
    /// user leaves no region by an update: a region it is in and `wanted`
    /// leaves out is FAILED_PRECONDITION, and nothing changes.
    async fn place_in_regions(
        &self,
        call: &Call,
        org: &str,
        name: &str,
        wanted: &[String],
        request_id: &str,
    ) -> Result<(), Status> {
        let (user, present) = self.user_placement(call, name).await?;
        let left: Vec<&str> = present
            .iter()
            .map(String::as_str)
            .filter(|r| !wanted.iter().any(|w| w == r))
            .collect();
        if !left.is_empty() {
            return Err(Status::failed_precondition(format!(
                "user.regions leaves out {}, where {name} is: an update only adds regions (delete the user to remove it)",
                left.join(", ")
            )));
        }
        self.place_missing(call, org, &user, &present, wanted, request_id)
            .await
    }
}
