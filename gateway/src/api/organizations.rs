//! `nordlys.v1.OrganizationService`: authenticated here, authorized and
//! kept by the quota service.

use nordlys_proto::pb::nordlys::v1::organization_service_server::OrganizationService;
use nordlys_proto::pb::nordlys::v1::*;
use tonic::{Request, Response, Status};

use super::Api;

/// Forwards one call to the quota service with the caller's identity.
macro_rules! forward {
    ($($method:ident($req:ty) -> $resp:ty => $name:literal;)*) => {
        #[tonic::async_trait]
        impl OrganizationService for Api {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let call = self.state.begin(request.metadata()).await?;
                    let answer: $resp = self.state.quota.call($name, &call, request.into_inner()).await?;
                    Ok(Response::new(answer))
                }
            )*
        }
    };
}

forward! {
    create_organization(CreateOrganizationRequest) -> Organization => "CreateOrganization";
    get_organization(GetOrganizationRequest) -> Organization => "GetOrganization";
    list_organizations(ListOrganizationsRequest) -> ListOrganizationsResponse => "ListOrganizations";
    create_member(CreateMemberRequest) -> Member => "CreateMember";
    list_members(ListMembersRequest) -> ListMembersResponse => "ListMembers";
    delete_member(DeleteMemberRequest) -> DeleteMemberResponse => "DeleteMember";
    create_api_key(CreateApiKeyRequest) -> CreateApiKeyResponse => "CreateApiKey";
    list_api_keys(ListApiKeysRequest) -> ListApiKeysResponse => "ListApiKeys";
    delete_api_key(DeleteApiKeyRequest) -> DeleteApiKeyResponse => "DeleteApiKey";
}
