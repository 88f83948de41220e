//! `nordlys.v1.OrganizationService`: authenticated here, authorized and
//! kept by the quota service. Changes are recorded as events here, from
//! the quota service's answers.

use nordlys_proto::pb::nordlys::v1::event::Data;
use nordlys_proto::pb::nordlys::v1::organization_service_server::OrganizationService;
use nordlys_proto::pb::nordlys::v1::*;
use tonic::{Request, Response, Status};

use super::Api;
use crate::call::Call;
use crate::events::Change;

/// Forwards one call that changes nothing to the quota service with the
/// caller's identity; a refusal is recorded about what was asked for: the
/// request's field `$field`, or `$target`.
macro_rules! forward {
    ($self:ident, $name:literal, $request:ident, $field:ident) => {{
        let call = $self.state.begin(&$request).await?;
        let req = $request.into_inner();
        let target = req.$field.clone();
        let answer = $self.forward_call(&call, $name, &target, req).await?;
        Ok(Response::new(answer))
    }};
    ($self:ident, $name:literal, $request:ident, $target:literal) => {{
        let call = $self.state.begin(&$request).await?;
        let answer = $self
            .forward_call(&call, $name, $target, $request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }};
}

/// The organization (`organizations/{org}`) a name under one starts with.
pub(super) fn organization_of(name: &str) -> String {
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
        forward!(self, "GetOrganization", request, name)
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        forward!(self, "ListOrganizations", request, "organizations")
    }

    async fn create_member(
        &self,
        request: Request<CreateMemberRequest>,
    ) -> Result<Response<Member>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let parent = req.parent.clone();
        let name = format!("{parent}/members/{}", req.member_id);
        // CreateMember also sets an existing member's role, and its answer
        // does not say which it did; the members as they were tell. A
        // member that existed is the same one after the call when its
        // create_time is unchanged (one removed and added again meanwhile
        // is new). A member added by another call between this look and
        // the create is taken for new: a race between two adds, both
        // recorded as adds.
        let before = self.member_before(&call, &parent, &name).await;
        self.forward_change(&call, "CreateMember", &parent, req, |member: &Member| {
            let existed = before
                .as_ref()
                .is_some_and(|b| b.create_time == member.create_time);
            let verb = if existed { "updated" } else { "created" };
            Change::new("member", verb, &organization_of(&member.name), &member.name)
                .data(Data::Member(member.clone()))
        })
        .await
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        forward!(self, "ListMembers", request, parent)
    }

    async fn delete_member(
        &self,
        request: Request<DeleteMemberRequest>,
    ) -> Result<Response<DeleteMemberResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let name = req.name.clone();
        let organization = organization_of(&name);
        // The quota service removes the member's keys with it, and its
        // answer does not name them: the member's keys are listed before
        // the delete and again after it, and each one gone is recorded. A
        // key made for the member between the first listing and the delete
        // goes unrecorded; one deleted by its own DeleteApiKey meanwhile is
        // recorded twice. Both need a key change racing the member's
        // removal.
        let keys_before = self.member_keys(&call, &organization, &name).await;
        let answer = self
            .forward_change(
                &call,
                "DeleteMember",
                &name,
                req,
                |_: &DeleteMemberResponse| Change::new("member", "deleted", &organization, &name),
            )
            .await?;
        if let Some(before) = keys_before {
            // When the second listing fails, every key is taken as gone:
            // the quota service deletes them all unless its store fails.
            let after = self
                .member_keys(&call, &organization, &name)
                .await
                .unwrap_or_default();
            for key in before.iter().filter(|k| !after.contains(k)) {
                self.changed(&call, Change::new("api_key", "deleted", &organization, key));
            }
        }
        Ok(answer)
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
        forward!(self, "ListApiKeys", request, parent)
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

impl Api {
    /// `name`, a member of `parent`, as the quota service has it now;
    /// `None` when it has no such member or cannot say.
    async fn member_before(&self, call: &Call, parent: &str, name: &str) -> Option<Member> {
        let listed: ListMembersResponse = self
            .state
            .quota
            .call(
                "ListMembers",
                call,
                ListMembersRequest {
                    parent: parent.to_string(),
                },
            )
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "could not list members before a create"))
            .ok()?;
        listed.members.into_iter().find(|m| m.name == name)
    }

    /// The names of the API keys of `member` in `organization`; `None` when
    /// the quota service cannot say (a refusal here is not recorded: the
    /// delete that follows is refused and recorded alike).
    async fn member_keys(
        &self,
        call: &Call,
        organization: &str,
        member: &str,
    ) -> Option<Vec<String>> {
        if organization.is_empty() {
            return None;
        }
        let listed: ListApiKeysResponse = self
            .state
            .quota
            .call(
                "ListApiKeys",
                call,
                ListApiKeysRequest {
                    parent: organization.to_string(),
                },
            )
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "could not list a member's API keys"))
            .ok()?;
        Some(
            listed
                .api_keys
                .into_iter()
                .filter(|k| k.member == member)
                .map(|k| k.name)
                .collect(),
        )
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
