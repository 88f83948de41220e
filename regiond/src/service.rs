//! The NATS side: regiond as the micro service `nordlys-regiond`, one
//! endpoint per RPC on `nordlys.v1.{region}.RegiondService.{Method}`. Every
//! instance of a region joins the same queue group, so NATS spreads calls
//! over them. No logic lives here: each endpoint calls [`Handlers`].

use std::sync::Arc;

use nordlys_proto::pb::nordlys::regiond::v1::regiond_service_server::RegiondService;
use nordlys_transport::{unary, BoxError, MicroService, MicroServiceBuilder};

use crate::Handlers;

/// The micro service name every regiond registers.
pub const SERVICE_NAME: &str = "nordlys-regiond";

/// The subject prefix of a region's endpoints.
pub fn prefix(region: &str) -> String {
    format!("nordlys.v1.{region}.RegiondService")
}

/// Adds one endpoint per `Method => handler_method`, each calling the
/// [`RegiondService`] method on a shared `Arc<Handlers>`.
macro_rules! endpoints {
    ($builder:expr, $handlers:expr, { $($method:literal => $call:ident),* $(,)? }) => {{
        let builder = $builder;
        $(
            let handlers = Arc::clone(&$handlers);
            let builder = builder.endpoint(
                $method,
                unary(move |request| {
                    let handlers = Arc::clone(&handlers);
                    async move { RegiondService::$call(&*handlers, request).await }
                }),
            );
        )*
        builder
    }};
}

/// Registers the service on `client` and starts serving `handlers`' region.
/// `grpc_endpoint` is the direct gRPC address gateways may use instead (empty
/// when none).
pub async fn start(
    client: async_nats::Client,
    handlers: Arc<Handlers>,
    grpc_endpoint: &str,
) -> Result<MicroService, BoxError> {
    let builder = MicroServiceBuilder::new(
        client,
        SERVICE_NAME,
        env!("CARGO_PKG_VERSION"),
        prefix(handlers.region()),
    )
    .description("Nordlys regional daemon: a region's projects, users, memberships, networks and access rules")
    .metadata("region", handlers.region())
    .metadata("backend", handlers.backend_kind())
    .metadata("resources", handlers.resources())
    .metadata("grpc_endpoint", grpc_endpoint)
    .observer(crate::metrics::METRICS.nats_observer());
    let builder = endpoints!(builder, handlers, {
        "CreateProject" => create_project,
        "GetProject" => get_project,
        "ListProjects" => list_projects,
        "UpdateProject" => update_project,
        "DeleteProject" => delete_project,
        "CreateUser" => create_user,
        "GetUser" => get_user,
        "ListUsers" => list_users,
        "UpdateUser" => update_user,
        "DeleteUser" => delete_user,
        "CreateMembership" => create_membership,
        "GetMembership" => get_membership,
        "ListMemberships" => list_memberships,
        "DeleteMembership" => delete_membership,
        "CreateNetwork" => create_network,
        "GetNetwork" => get_network,
        "ListNetworks" => list_networks,
        "UpdateNetwork" => update_network,
        "DeleteNetwork" => delete_network,
        "CreateAccessRule" => create_access_rule,
        "GetAccessRule" => get_access_rule,
        "ListAccessRules" => list_access_rules,
        "UpdateAccessRule" => update_access_rule,
        "DeleteAccessRule" => delete_access_rule,
        "CountResources" => count_resources,
        "ApplyTier" => apply_tier,
        "GetCloudQuota" => get_cloud_quota,
    });
    builder.start().await
}
