//! Wiring: NATS connection, discovery, the gRPC server with reflection and
//! health, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_server::AccessRuleServiceServer,
    membership_service_server::MembershipServiceServer,
    network_service_server::NetworkServiceServer,
    organization_service_server::OrganizationServiceServer,
    project_service_server::ProjectServiceServer, quota_service_server::QuotaServiceServer,
    region_service_server::RegionServiceServer, user_service_server::UserServiceServer,
};
use nordlys_transport::{BoxError, NatsChannel};

use crate::api::Api;
use crate::auth::Authenticator;
use crate::discovery::Discovery;
use crate::mesh::Mesh;
use crate::routes::QuotaRoute;
use crate::state::State;
use crate::Config;

/// The public services, as reflection lists them.
const SERVICES: &[&str] = &[
    "nordlys.v1.ProjectService",
    "nordlys.v1.UserService",
    "nordlys.v1.MembershipService",
    "nordlys.v1.NetworkService",
    "nordlys.v1.AccessRuleService",
    "nordlys.v1.RegionService",
    "nordlys.v1.OrganizationService",
    "nordlys.v1.QuotaService",
];

/// The gateway process.
#[derive(Debug)]
pub struct Gateway;

/// Where a started gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// gRPC (with reflection and health).
    pub grpc: std::net::SocketAddr,
    /// JSON over HTTP.
    pub http: std::net::SocketAddr,
}

impl Gateway {
    /// Runs until `shutdown` resolves, then drains in-flight calls. Prints
    /// the ready lines scripts and the test harness wait for on stdout.
    pub async fn run(
        config: Config,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), BoxError> {
        Gateway::run_until(
            config,
            |at| {
                println!("nordlys-gateway listening on {}", at.grpc);
                println!("nordlys-gateway http listening on {}", at.http);
            },
            shutdown,
        )
        .await
    }

    /// As [`Gateway::run`], but tells `ready` where it listens instead of
    /// printing it: for running the gateway inside another program (the
    /// bench runs the whole stack in one process this way).
    pub async fn run_until(
        config: Config,
        ready: impl FnOnce(Listening),
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), BoxError> {
        for region in &config.regions {
            if !nordlys_api::validate::is_region(region) {
                return Err(
                    format!("configured region {region:?} is not a valid region id").into(),
                );
            }
        }
        if !config.nats.has_credentials() {
            tracing::warn!("INSECURE: the NATS connection has no credentials; a NATS server that lets this gateway in unauthenticated lets anyone in, and regions and the quota service trust the identity its calls carry; for local development only");
        }
        let client =
            nordlys_transport::connect_with(
                &config.nats_url,
                "nordlys-gateway",
                &config
                    .nats
                    .clone()
                    .or_inbox_prefix(nordlys_transport::permissions::gateway().inbox_prefix),
            )
            .await?;
        let nats = NatsChannel::new(client.clone(), config.default_timeout());
        let quota = QuotaRoute::new(nats.clone());
        let state = Arc::new(State {
            auth: Authenticator::new(
                &config.operator_key,
                quota.clone(),
                Duration::from_millis(config.auth_cache_ttl_ms),
            )?,
            quota,
            regions: Mesh::new(
                nats,
                config.route,
                config.route_overrides.clone(),
                Duration::from_millis(config.eject_ms),
                Duration::from_millis(config.read_attempt_ms),
            ),
            discovery: Discovery::new(&config.regions),
            config: config.clone(),
        });

        // Know the regions before the first call.
        if let Err(e) = state
            .discovery
            .refresh(&client, Duration::from_millis(150), Duration::from_secs(1))
            .await
        {
            tracing::warn!(error = %e, "first region discovery failed");
        }
        state.regions.sync(&state.discovery.snapshot());
        let discovery = {
            let state = state.clone();
            let interval = Duration::from_millis(config.discovery_interval_ms.max(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = state
                        .discovery
                        .refresh(&client, Duration::from_millis(150), Duration::from_secs(1))
                        .await
                    {
                        // Keep the last view: direct routes still work without NATS.
                        tracing::warn!(error = %e, "region discovery failed; keeping the last view");
                    }
                    // Also puts ejected endpoints back once cooled down.
                    state.regions.sync(&state.discovery.snapshot());
                }
            })
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        // One builder per protocol version: the builder is consumed and not Clone.
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(nordlys_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for service in SERVICES {
                builder = builder.with_service_name(*service);
            }
            builder
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        for service in SERVICES {
            health
                .set_service_status(*service, tonic_health::ServingStatus::Serving)
                .await;
        }
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;

        let api = Api::new(state.clone());
        // One set of public services: served over gRPC, and over HTTP/JSON
        // in process through the google.api.http annotations.
        let routes = tonic::service::Routes::new(ProjectServiceServer::new(api.clone()))
            .add_service(UserServiceServer::new(api.clone()))
            .add_service(MembershipServiceServer::new(api.clone()))
            .add_service(NetworkServiceServer::new(api.clone()))
            .add_service(AccessRuleServiceServer::new(api.clone()))
            .add_service(RegionServiceServer::new(api.clone()))
            .add_service(OrganizationServiceServer::new(api.clone()))
            .add_service(QuotaServiceServer::new(api.clone()));
        let http = crate::http::HttpServer::start(
            &config,
            SERVICES,
            routes.clone(),
            Arc::new(api),
            state.regions.metrics_handle(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "gRPC listening");
        let http_addr = http.local_addr()?;
        tracing::info!(addr = %http_addr, "HTTP listening");
        ready(Listening {
            grpc: addr,
            http: http_addr,
        });
        let mut http = http.spawn();

        let result = tonic::transport::Server::builder()
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(nordlys_transport::coalesced_incoming(listener), async {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight calls");
                http.stop();
                for service in SERVICES {
                    health
                        .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                        .await;
                }
            })
            .await;
        http.shutdown().await;
        discovery.abort();
        let (grpc, nats) = state.regions.metrics().calls();
        let (fallbacks, retries, ejections) = state.regions.metrics().faults();
        tracing::info!(
            grpc,
            nats,
            fallbacks,
            retries,
            ejections,
            "region calls by route"
        );
        result.map_err(Into::into)
    }
}
