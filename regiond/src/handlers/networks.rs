//! Networks: one subnet in a project, in this region.

use crate::backend::{NetworkChange, ResourceKind};
use nordlys_api::validate::{check_id, check_network, default_gateway};
use nordlys_api::{invalid, names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    CreateNetworkRequest, DeleteNetworkRequest, GetNetworkRequest, ListNetworksResponse, Network,
    UpdateNetworkRequest,
};
use tonic::{Request, Response, Status};

use super::{parse_into, request_id, settle_name, Caller, Handlers};

const NETWORK: &[&str] = &["projects", "networks"];

pub(super) async fn create(
    h: &Handlers,
    request: Request<CreateNetworkRequest>,
) -> Result<Response<Network>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let mut network = req
        .network
        .ok_or_else(|| invalid("network", "is required"))?;
    let mut v = Violations::new();
    let project = parse_into(&mut v, &req.parent, &["projects"], "parent");
    check_id(&mut v, "network_id", &req.network_id);
    if let Some(project) = project {
        network.name = settle_name(
            &mut v,
            "network.name",
            &network.name,
            names::network(project[0], &req.network_id),
        );
    }
    check_network(&mut v, "network", &network);
    h.check_here(&mut v, "network.region", &network.region);
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    if network.gateway_ip.is_empty() {
        network.gateway_ip = default_gateway(&network.cidr).unwrap_or_default();
    }
    network.create_time.get_or_insert_with(nordlys_api::now);
    let name = network.name.clone();
    let create_time = network.create_time;
    let network = h
        .create(
            &caller,
            ResourceKind::Network,
            String::new(),
            &name,
            &request_id,
            create_time.as_ref(),
            move |backend, tenant, request_id| async move {
                backend.create_network(&tenant, &request_id, network).await
            },
        )
        .await?;
    Ok(Response::new(with_etag(network)))
}

/// The network with its etag (AIP-154).
fn with_etag(mut network: Network) -> Network {
    network.etag = nordlys_api::update::network_etag(&network);
    network
}

pub(super) async fn update(
    h: &Handlers,
    request: Request<UpdateNetworkRequest>,
) -> Result<Response<Network>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let network = req
        .network
        .ok_or_else(|| invalid("network", "is required"))?;
    let mut v = Violations::new();
    parse_into(&mut v, &network.name, NETWORK, "network.name");
    nordlys_api::update::network_paths(&mut v, &network, req.update_mask.as_ref());
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    let tenant = &caller.tenant;
    // The servers must fit the network's CIDR, which only the region knows.
    let mut checked = h.backend.get_network(tenant, &network.name).await?;
    checked.dns_servers.clone_from(&network.dns_servers);
    let mut v = Violations::new();
    check_network(&mut v, "network", &checked);
    v.into_result()?;
    let change = NetworkChange {
        dns_servers: Some(network.dns_servers.clone()),
        etag: network.etag.clone(),
    };
    let updated = h
        .update_once(
            &caller,
            ResourceKind::Network,
            &network.name,
            &request_id,
            h.backend.get_network(tenant, &network.name),
            h.backend.update_network(tenant, &network.name, &change),
        )
        .await?;
    Ok(Response::new(with_etag(updated)))
}

pub(super) async fn get(
    h: &Handlers,
    request: Request<GetNetworkRequest>,
) -> Result<Response<Network>, Status> {
    let caller = Caller::of(&request)?;
    let name = &request.get_ref().name;
    names::parse_field(name, NETWORK, "name")?;
    Ok(Response::new(with_etag(
        h.backend.get_network(&caller.tenant, name).await?,
    )))
}

pub(super) async fn list(
    h: &Handlers,
    request: Request<ListRequest>,
) -> Result<Response<ListNetworksResponse>, Status> {
    let caller = Caller::of(&request)?;
    let filter = h.filter(&caller, request.get_ref(), &["projects"])?;
    Ok(Response::new(ListNetworksResponse {
        networks: h
            .backend
            .list_networks(&filter)
            .await?
            .into_iter()
            .map(with_etag)
            .collect(),
        ..Default::default()
    }))
}

pub(super) async fn delete(
    h: &Handlers,
    request: Request<DeleteNetworkRequest>,
) -> Result<Response<DeleteResponse>, Status> {
    let (name, etag) = (&request.get_ref().name, &request.get_ref().etag);
    names::parse_field(name, NETWORK, "name")?;
    let caller = Caller::writer(&request)?;
    h.check_delete_etag(
        etag,
        ResourceKind::Network,
        name,
        h.backend.get_network(&caller.tenant, name),
        nordlys_api::update::network_etag,
    )
    .await?;
    h.delete(&request, ResourceKind::Network, name).await
}
