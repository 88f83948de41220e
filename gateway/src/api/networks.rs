//! `nordlys.v1.NetworkService`.

use nordlys_api::{ids, names, update, validate, Violations};
use nordlys_proto::pb::nordlys::v1::network_service_server::NetworkService;
use nordlys_proto::pb::nordlys::v1::{
    CreateNetworkRequest, DeleteNetworkRequest, DeleteNetworkResponse, GetNetworkRequest,
    ListNetworksRequest, ListNetworksResponse, Network, UpdateNetworkRequest,
};
use tonic::{Request, Response, Status};

use super::{first_success, spelled_out, Api, ChildUpdate, Fanout, Kind};
use crate::events::Change;
use nordlys_proto::pb::nordlys::v1::event::Data;

#[tonic::async_trait]
impl NetworkService for Api {
    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        self.require_write(&call, &req.parent)?;
        let project_id = names::parse_field(&req.parent, &["projects"], "parent")?[0].to_string();
        let Some(network) = req.network.as_mut() else {
            return Err(nordlys_api::invalid("network", "is required"));
        };
        // Output only: what the environments say, never the caller.
        network.managed_by.clear();
        let mut v = Violations::new();
        validate::check_network(&mut v, "network", network);
        if validate::is_region(&network.region) {
            self.state
                .check_region(&mut v, "network.region", &network.region);
        }
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        let org = self.project_org(&call, &req.parent).await?;
        // Refused before any quota is reserved: the region says it has no
        // networks (a Kubernetes region).
        if let Some(kind) = self.state.discovery.lacks(&network.region, "networks") {
            // A project the caller cannot see is NOT_FOUND first, as it
            // would be in any region (a rare path: the extra read is fine).
            let _: (nordlys_proto::pb::nordlys::v1::Project, _) = self
                .gather_one(
                    &call,
                    "GetProject",
                    nordlys_proto::pb::nordlys::v1::GetProjectRequest {
                        name: req.parent.clone(),
                    },
                )
                .await
                .map_err(|s| super::projects::not_found_as(s, &req.parent))?;
            // Only a Kubernetes region lacks networks today.
            let message = format!(
                "region {} (backend {kind}) has no networks: Kubernetes has no tenant networks",
                network.region
            );
            return Err(<Status as tonic_types::StatusExt>::with_error_details(
                tonic::Code::FailedPrecondition,
                message.clone(),
                tonic_types::ErrorDetails::with_precondition_failure_violation(
                    "UNSUPPORTED_IN_REGION",
                    format!("regions/{}", network.region),
                    message,
                ),
            ));
        }
        if req.network_id.is_empty() {
            req.network_id = ids::derive("net", &org, &req.request_id);
        } else {
            validate::check_id(&mut v, "network_id", &req.network_id);
        }
        v.into_result()?;
        // Every create carries a request id, so any retry or fallback of the
        // internal call is deduplicated by the region.
        if req.request_id.is_empty() {
            req.request_id = format!("gw-{}", nordlys_api::ids::random_hex(32));
        }
        if network.gateway_ip.is_empty() {
            network.gateway_ip = validate::default_gateway(&network.cidr).unwrap_or_default();
        }
        network.name = names::network(&project_id, &req.network_id);
        // The gateway dates every create, so all regions agree.
        network.create_time = Some(nordlys_api::now());
        let name = network.name.clone();
        let region = vec![network.region.clone()];
        let answers = self
            .create_in_regions::<_, Network, _>(
                &call,
                Fanout {
                    method: "CreateNetwork",
                    undo: "DeleteNetwork",
                    organization: &org,
                    resource: &name,
                    request_id: &req.request_id,
                    placement: &region,
                    kind: Some(Kind::Networks),
                },
                req.clone(),
                |name| DeleteNetworkRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        let network = first_success(answers)?.0;
        self.changed(
            &call,
            Change::new("network", "created", &org, &network.name)
                .request_id(&req.request_id)
                .data(Data::Network(network.clone())),
        );
        Ok(Response::new(self.marked(&call, network)))
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let (network, _) = self
            .get_by_name(request, "GetNetwork", &["projects", "networks"])
            .await?;
        Ok(Response::new(network))
    }

    async fn list_networks(
        &self,
        request: Request<ListNetworksRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let (page, next_page_token) = self
            .list_children(
                (&metadata, &extensions),
                "ListNetworks",
                &req.parent,
                req.page_size,
                &req.page_token,
                |r: ListNetworksResponse| r.networks,
            )
            .await?;
        Ok(Response::new(ListNetworksResponse {
            networks: page.items,
            next_page_token,
            unreachable: page.unreachable,
        }))
    }

    async fn update_network(
        &self,
        request: Request<UpdateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        let Some(network) = req.network.as_ref() else {
            return Err(nordlys_api::invalid("network", "is required"));
        };
        let name = network.name.clone();
        let ids = names::parse_field(&name, &["projects", "networks"], "network.name")?;
        let project = names::project(ids[0]);
        self.require_write(&call, &name)?;
        let mut v = Violations::new();
        let paths = update::network_paths(&mut v, network, req.update_mask.as_ref());
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        let (update_mask, request_id) = spelled_out(&paths, &req.request_id);
        req.update_mask = Some(update_mask);
        req.request_id = request_id.clone();
        let update = ChildUpdate {
            method: "UpdateNetwork",
            kind: "network",
            project: &project,
            name: &name,
            request_id: &request_id,
            data: Data::Network,
        };
        Ok(Response::new(self.update_child(&call, update, req).await?))
    }

    async fn delete_network(
        &self,
        request: Request<DeleteNetworkRequest>,
    ) -> Result<Response<DeleteNetworkResponse>, Status> {
        self.delete_by_name(
            request,
            "DeleteNetwork",
            &["projects", "networks"],
            "network",
        )
        .await?;
        Ok(Response::new(DeleteNetworkResponse {}))
    }
}
