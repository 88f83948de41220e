//! `nordlys.v1.OrganizationService`: authenticated here, authorized and
//! kept by the quota service. Changes are recorded as events here, from
//! the quota service's answers.

use nordlys_proto::pb::nordlys::v1::event::Data;
use nordlys_proto::pb::nordlys::v1::organization_service_server::OrganizationService;
use nordlys_proto::pb::nordlys::v1::*;
use tonic::{Request, Response, Status};

use super::Api;
use crate::events::Change;

/// Forwards one call to the quota service with the caller's identity.
macro_rules! forward {
    ($self:ident, $name:literal, $request:ident) => {{
        let call = $self.state.begin(&$request).await?;
        let answer = $self
            .state
            .quota
            .call($name, &call, $request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }};
}

/// The organization (`organizations/{org}`) a name under one starts with.
fn organization_of(name: &str) -> String {
    let mut parts = name.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some("organizations"), Some(org)) => format!("organizations/{org}"),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl OrganizationService for Api {
    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        let call = self.state.begin(&request).await?;
        self.forward_change(
            &call,
            "CreateOrganization",
            "organizations",
            request.into_inner(),
            |org: &Organization| {
                Change::new("organization", "created", &org.name, &org.name)
                    .data(Data::OrganizationCreated(org.clone()))
            },
        )
        .await
    }

    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        forward!(self, "GetOrganization", request)
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        forward!(self, "ListOrganizations", request)
    }

    async fn create_member(
        &self,
        request: Request<CreateMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let parent = req.parent.clone();
        self.forward_change(&call, "CreateMember", &parent, req, |member: &Member| {
            Change::new(
                "member",
                "created",
                &organization_of(&member.name),
                &member.name,
            )
            .data(Data::Member(member.clone()))
        })
        .await
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        forward!(self, "ListMembers", request)
    }

    async fn delete_member(
        &self,
        request: Request<DeleteMemberRequest>,
    ) -> Result<Response<DeleteMemberResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let name = req.name.clone();
        self.forward_change(
            &call,
            "DeleteMember",
            &name,
            req,
            |_: &DeleteMemberResponse| {
                Change::new("member", "deleted", &organization_of(&name), &name)
            },
        )
        .await
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let parent = req.parent.clone();
        self.forward_change(
            &call,
            "CreateApiKey",
            &parent,
            req,
            |created: &CreateApiKeyResponse| {
                // The key without its secret: events are readable by every
                // member of the organization.
                let key = created.api_key.clone().unwrap_or_default();
                Change::new("api_key", "created", &organization_of(&key.name), &key.name)
                    .data(Data::ApiKey(key))
            },
        )
        .await
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        forward!(self, "ListApiKeys", request)
    }

    async fn delete_api_key(
        &self,
        request: Request<DeleteApiKeyRequest>,
    ) -> Result<Response<DeleteApiKeyResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let name = req.name.clone();
        self.forward_change(
            &call,
            "DeleteApiKey",
            &name,
            req,
            |_: &DeleteApiKeyResponse| {
                Change::new("api_key", "deleted", &organization_of(&name), &name)
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::organization_of;

    #[test]
    fn organization_of_names() {
        assert_eq!(
            organization_of("organizations/acme/members/ada"),
            "organizations/acme"
        );
        assert_eq!(organization_of("organizations/acme"), "organizations/acme");
        assert_eq!(organization_of("projects/web"), "");
    }
}
