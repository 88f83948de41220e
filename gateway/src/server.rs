//! Wiring: NATS connection, discovery, the gRPC server with reflection and
//! health, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_server::AccessRuleServiceServer,
    environment_service_server::EnvironmentServiceServer, event_service_server::EventServiceServer,
    membership_service_server::MembershipServiceServer,
    network_service_server::NetworkServiceServer,
    organization_service_server::OrganizationServiceServer,
    project_service_server::ProjectServiceServer, quota_service_server::QuotaServiceServer,
    region_service_server::RegionServiceServer, user_service_server::UserServiceServer,
};
use nordlys_transport::{tls, BoxError, NatsChannel};

use crate::api::Api;
use crate::auth::Authenticator;
use crate::discovery::Discovery;
use crate::events::{EventLog, Events, Retention};
use crate::mesh::{Mesh, RouteMode};
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
    "nordlys.v1.EventService",
    "nordlys.v1.EnvironmentService",
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
        // TLS before anything connects: a bad file stops start-up, named.
        let tls = load_tls(&config)?;
        if !config.nats.has_credentials() {
            tracing::warn!("INSECURE: the NATS connection has no credentials; a NATS server that lets this gateway in unauthenticated lets anyone in, and regions and the quota service trust the identity its calls carry; for local development only");
        }
        let client = nordlys_transport::connect_with(
            &config.nats_url,
            "nordlys-gateway",
            &config
                .nats
                .clone()
                .or_inbox_prefix(nordlys_transport::permissions::gateway().inbox_prefix),
        )
        .await?;
        let nats = NatsChannel::new(client.clone(), config.default_timeout());
        let events = Arc::new(Events::start(
            EventLog::new(
                config.nats.buckets(client.clone()).context().clone(),
                Retention {
                    max_age: Duration::from_secs(config.events_max_age_days * 86_400),
                    max_bytes: config.events_max_bytes,
                    replicas: config.nats.replicas,
                },
            ),
            config.events_outbox,
        ));
        // Made now so the first watch finds it; the outbox makes it later
        // when NATS is not there yet.
        if let Err(e) = events.log().ensure().await {
            tracing::warn!(error = %e, "the audit event stream is not available yet");
        }
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
                tls.mesh_client.clone(),
            ),
            discovery: Discovery::new(&config.regions),
            events,
            environments: crate::api::EnvironmentStore::new(config.nats.buckets(client.clone())),
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
        let markers = {
            let state = state.clone();
            tokio::spawn(async move { state.environments.follow_markers().await })
        };
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
            .add_service(QuotaServiceServer::new(api.clone()))
            .add_service(EventServiceServer::new(api.clone()))
            .add_service(EnvironmentServiceServer::new(api.clone()));
        let metrics = Arc::new(crate::metrics::GatewayMetrics::new(
            state.regions.metrics(),
            &state.events,
        ));
        let http = crate::http::HttpServer::start(
            &config,
            SERVICES,
            routes.clone(),
            Arc::new(api),
            metrics.clone(),
            tls.http.clone(),
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

        let router = tonic::transport::Server::builder()
            // The SERVER span of each call, continuing the caller's trace.
            .layer(nordlys_telemetry::layer::TraceLayer::grpc())
            .layer(metrics.grpc_layer())
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let stopping = async {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            http.stop();
            // Watches last as long as their callers: end them, or the
            // drain would wait for them.
            state.events.close();
            for service in SERVICES {
                health
                    .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        };
        let result = match tls.grpc {
            Some(config) => {
                let incoming = nordlys_transport::tls::TlsIncoming::new(listener, config, "gRPC")?;
                router
                    .serve_with_incoming_shutdown(incoming, stopping)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        nordlys_transport::coalesced_incoming(listener),
                        stopping,
                    )
                    .await
            }
        };
        http.shutdown().await;
        state.events.shutdown(Duration::from_secs(5)).await;
        discovery.abort();
        markers.abort();
        for watch in tls.watches {
            watch.abort();
        }
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

/// The gateway's TLS, read from `[tls]` and `[mesh_tls]`.
struct Tls {
    /// The public gRPC listener's, when `[tls]` is set.
    grpc: Option<Arc<rustls::ServerConfig>>,
    /// The public HTTP listener's, when `[tls]` is set.
    http: Option<Arc<rustls::ServerConfig>>,
    /// The direct route's client side, when `[mesh_tls]` is set.
    mesh_client: Option<Arc<rustls::ClientConfig>>,
    /// The tasks reloading the certificates.
    watches: Vec<tokio::task::JoinHandle<()>>,
}

/// Reads the certificates, starts reloading them (SIGHUP, file changes),
/// and says loudly what is plaintext.
fn load_tls(config: &Config) -> Result<Tls, BoxError> {
    let mut tls = Tls {
        grpc: None,
        http: None,
        mesh_client: None,
        watches: Vec::new(),
    };
    match config.tls.load().map_err(|e| format!("[tls]: {e}"))? {
        Some(cert) => {
            tls.grpc = Some(tls::server_config(cert.clone(), tls::ALPN_GRPC)?);
            tls.http = Some(tls::server_config(cert.clone(), tls::ALPN_HTTP)?);
            tls.watches.push(cert.watch(config.tls.reload_interval()));
            tracing::info!(
                cert_file = ?config.tls.cert_file,
                "the gRPC and HTTP listeners serve TLS; SIGHUP or a changed file reloads the certificate"
            );
        }
        None => tracing::warn!(
            "the gRPC and HTTP listeners are PLAINTEXT: no [tls] cert_file and key_file are set; \
             for local development only"
        ),
    }
    let direct_used = config.route != RouteMode::Nats
        || config
            .route_overrides
            .values()
            .any(|m| *m != RouteMode::Nats);
    match config
        .mesh_tls
        .load()
        .map_err(|e| format!("[mesh_tls]: {e}"))?
    {
        Some(mesh) => {
            tls.mesh_client = Some(mesh.client_config()?);
            tls.watches
                .push(mesh.cert().watch(config.mesh_tls.reload_interval()));
            tracing::info!(
                ca_file = ?config.mesh_tls.ca_file,
                "direct gRPC to regiond uses mutual TLS"
            );
        }
        None if direct_used => tracing::warn!(
            "direct gRPC to regiond is PLAINTEXT: no [mesh_tls] is set; for local development only"
        ),
        None => {}
    }
    Ok(tls)
}
