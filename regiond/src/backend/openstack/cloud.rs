//! The Keystone, Neutron, Nova and Cinder calls regiond makes, typed, through
//! openstack_sdk's async client. The client keeps the token in memory,
//! renews it ahead of expiry in the background, and on a 401 re-authenticates
//! once and repeats the call, so none of that shows here.
//!
//! Requests use openstack_sdk's endpoint builders; answers are read into the
//! small structs below, which hold only what the mapping needs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use openstack_sdk::api::identity::v3 as ks;
use openstack_sdk::api::network::v2 as nw;
use openstack_sdk::api::{ignore, ApiError, QueryAsync, RestEndpoint};
use openstack_sdk::api::{AsyncClient, MicroVersionStrategy, RestClient};
use openstack_sdk::config::ConfigFile;
use openstack_sdk::types::identity::v3::Project;
use openstack_sdk::types::{ApiVersion, BoxedAsyncRead, ServiceType};
use openstack_sdk::{AsyncOpenStack, RenewHandle, RestError};
use openstack_sdk_core::catalog::ServiceEndpoint;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::quota_sets::{parse_usage, QuotaSet, QuotaSetCall, QuotaSetService, QuotaUse};
use crate::backend::{BackendError, Refusal};
use crate::config::OpenStackConfig;

/// The Neutron quota names a tier may set (those of Neutron's quota API).
pub(crate) const QUOTA_NAMES: &[&str] = &[
    "floatingip",
    "network",
    "port",
    "rbac_policy",
    "router",
    "security_group",
    "security_group_rule",
    "subnet",
    "subnetpool",
];

/// How long before a token expires the background task renews it.
const RENEW_MARGIN_MINUTES: i64 = 5;

/// A call Keystone, Neutron, Nova or Cinder did not do.
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    /// `keystone`, `neutron`, `nova` or `cinder`.
    pub(crate) service: &'static str,
    /// The HTTP status, when the service answered.
    pub(crate) status: Option<u16>,
    /// Neutron's error type (`OverQuota`, `NetworkNotFound`, ...), if given.
    pub(crate) kind: String,
    /// The service's message, or why there was no answer.
    pub(crate) message: String,
    /// The answer came but could not be read.
    pub(crate) undecodable: bool,
}

/// The `message` (and Neutron's `type`) of an OpenStack error body:
/// `{"NeutronError": {"type", "message"}}`, `{"error": {"message"}}`,
/// `{"message"}`, or Nova's and Cinder's `{"badRequest": {"message"}}`
/// (one key naming the fault; the SDK may hand it over under `error`).
fn error_text(body: &Value) -> (String, String) {
    let kind = body
        .pointer("/NeutronError/type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let fault = |v: &Value| {
        v.as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.values().next())
            .and_then(|f| f.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = ["/NeutronError/message", "/error/message", "/message"]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
        .map(str::to_string)
        .or_else(|| body.get("error").and_then(fault))
        .or_else(|| fault(body))
        .unwrap_or_else(|| body.to_string());
    (kind, message)
}

impl CallError {
    fn new(service: &'static str, error: ApiError<RestError>) -> CallError {
        let answered = |status: http::StatusCode, body: Value| {
            let (kind, message) = error_text(&body);
            CallError {
                service,
                status: Some(status.as_u16()),
                kind,
                message,
                undecodable: false,
            }
        };
        match error {
            ApiError::OpenStack { status, msg, .. } => {
                // 404s carry the whole body as text; others its message.
                let body = serde_json::from_str(&msg).unwrap_or(Value::String(msg));
                let body = match body {
                    Value::String(message) => serde_json::json!({ "message": message }),
                    body => body,
                };
                answered(status, body)
            }
            ApiError::OpenStackUnrecognized { status, obj, .. } => {
                let body = match obj {
                    Value::Object(_) if obj.get("NeutronError").is_some() => obj,
                    // The SDK hands over the value of `error`.
                    obj => serde_json::json!({ "error": obj }),
                };
                answered(status, body)
            }
            ApiError::OpenStackService { status, data, .. } => CallError {
                service,
                status: Some(status.as_u16()),
                kind: String::new(),
                message: data.chars().take(500).collect(),
                undecodable: false,
            },
            e @ (ApiError::Json { .. } | ApiError::DataType { .. }) => CallError {
                service,
                status: None,
                kind: String::new(),
                message: e.to_string(),
                undecodable: true,
            },
            other => CallError {
                service,
                status: None,
                kind: String::new(),
                message: other.to_string(),
                undecodable: false,
            },
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub(crate) fn is_conflict(&self) -> bool {
        self.status == Some(409) && self.kind != "OverQuota"
    }

    fn refused(self, reason: Refusal) -> BackendError {
        BackendError::Refused {
            reason,
            service: self.service.to_string(),
            message: self.message,
        }
    }
}

/// Keystone/Neutron/Nova/Cinder 400 → INVALID_ARGUMENT, 404 → NOT_FOUND, 409 →
/// ALREADY_EXISTS (OverQuota → RESOURCE_EXHAUSTED), 401/403 (after the
/// client's one re-authentication) → PERMISSION_DENIED, 5xx, timeouts and
/// refused connections → UNAVAILABLE.
impl From<CallError> for BackendError {
    fn from(e: CallError) -> BackendError {
        match e.status {
            Some(400) => e.refused(Refusal::InvalidArgument),
            Some(404) => e.refused(Refusal::NotFound),
            Some(409) if e.kind == "OverQuota" => e.refused(Refusal::ResourceExhausted),
            Some(409) => e.refused(Refusal::AlreadyExists),
            Some(413) => e.refused(Refusal::ResourceExhausted),
            Some(401 | 403) => e.refused(Refusal::PermissionDenied),
            Some(status) if status >= 500 => {
                BackendError::Unavailable(format!("{} answered {status}: {}", e.service, e.message))
            }
            Some(status) => {
                BackendError::Internal(format!("{} answered {status}: {}", e.service, e.message))
            }
            None if e.undecodable => {
                BackendError::Internal(format!("{}: {}", e.service, e.message))
            }
            None => BackendError::Unavailable(format!("{}: {}", e.service, e.message)),
        }
    }
}

/// A request that could not be built (a bug, not the cloud's fault).
fn build_error(e: impl std::fmt::Display) -> CallError {
    CallError {
        service: "openstack_sdk",
        status: None,
        kind: String::new(),
        message: format!("cannot build request: {e}"),
        undecodable: true,
    }
}

type CallResult<T> = Result<T, CallError>;

/// A Keystone domain.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Domain {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// A Keystone project.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KsProject {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    /// Extra attributes Keystone keeps as they were given (Nordlys keeps
    /// access rules' changed descriptions there, see `set_project_extra`).
    #[serde(flatten)]
    pub(crate) extra: BTreeMap<String, Value>,
}

/// `PATCH /v3/projects/{id}` setting one extra attribute: the SDK's project
/// builder takes only Keystone's own fields. Keystone merges extra
/// attributes key by key, so two such patches of different keys never undo
/// each other.
struct ProjectExtra<'a> {
    id: &'a str,
    key: &'a str,
    value: Value,
}

impl RestEndpoint for ProjectExtra<'_> {
    fn method(&self) -> http::Method {
        http::Method::PATCH
    }

    fn endpoint(&self) -> std::borrow::Cow<'static, str> {
        format!("projects/{}", self.id).into()
    }

    fn body(&self) -> Result<Option<(&'static str, Vec<u8>)>, openstack_sdk::api::BodyError> {
        let mut project = serde_json::Map::new();
        project.insert(self.key.to_string(), self.value.clone());
        let body = serde_json::json!({ "project": project });
        Ok(Some(("application/json", serde_json::to_vec(&body)?)))
    }

    fn service_type(&self) -> ServiceType {
        ServiceType::Identity
    }

    fn response_key(&self) -> Option<std::borrow::Cow<'static, str>> {
        Some("project".into())
    }

    fn min_version(&self) -> Option<ApiVersion> {
        Some(ApiVersion::new(3, 0))
    }
}

/// A Keystone user; Nordlys keeps its own fields as extra attributes, which
/// Keystone stores and returns as they are.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KsUser {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: serde_json::Map<String, Value>,
}

/// A Keystone role.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Role {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Ref {
    pub(crate) id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Scope {
    #[serde(default)]
    pub(crate) project: Option<Ref>,
}

/// A Keystone role assignment.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Assignment {
    pub(crate) role: Ref,
    #[serde(default)]
    pub(crate) user: Option<Ref>,
    #[serde(default)]
    pub(crate) scope: Scope,
}

/// A Neutron network.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NNetwork {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tenant_id: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
}

/// A Neutron subnet.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NSubnet {
    pub(crate) id: String,
    pub(crate) network_id: String,
    pub(crate) cidr: String,
    #[serde(default)]
    pub(crate) gateway_ip: Option<String>,
    #[serde(default)]
    pub(crate) dns_nameservers: Vec<String>,
}

/// A Neutron security group.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NGroup {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tenant_id: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) security_group_rules: Vec<NRule>,
}

/// A Neutron security group rule.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NRule {
    pub(crate) id: String,
    pub(crate) direction: String,
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    #[serde(default)]
    pub(crate) port_range_min: Option<u32>,
    #[serde(default)]
    pub(crate) port_range_max: Option<u32>,
    #[serde(default)]
    pub(crate) remote_ip_prefix: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) created_at: Option<String>,
}

/// A subnet to create.
#[derive(Debug, Clone)]
pub(crate) struct SubnetSpec<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) network_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) cidr: &'a str,
    pub(crate) ipv6: bool,
    pub(crate) gateway_ip: &'a str,
    pub(crate) dns: &'a [String],
}

/// A security group rule to create.
#[derive(Debug, Clone)]
pub(crate) struct RuleSpec<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) security_group_id: &'a str,
    pub(crate) egress: bool,
    pub(crate) ipv6: bool,
    pub(crate) protocol: Option<&'a str>,
    pub(crate) ports: Option<(u32, u32)>,
    pub(crate) remote_ip_prefix: Option<&'a str>,
    pub(crate) description: &'a str,
}

/// The cloud's client with a CLIENT span around each request, its context
/// in the request's `traceparent` (openstack_sdk hands every request to
/// [`AsyncClient::rest_async`] as a builder whose headers it keeps, 401
/// retries included). The token requests openstack_sdk makes on its own
/// (authentication, renewal) do not pass here.
struct Traced<'a>(&'a AsyncOpenStack);

impl<'a> RestClient for Traced<'a> {
    type Error = RestError;

    fn get_current_project(&self) -> Option<Project> {
        self.0.get_current_project()
    }

    fn microversion_strategy(&self) -> MicroVersionStrategy {
        self.0.microversion_strategy()
    }
}

/// The span of `request`, its context written into the request's headers.
fn client_span(request: &mut http::request::Builder) -> tracing::Span {
    let span = match (request.method_ref(), request.uri_ref()) {
        (Some(method), Some(uri)) => nordlys_telemetry::http_client_span(method, uri),
        _ => tracing::Span::none(),
    };
    if let Some(headers) = request.headers_mut() {
        nordlys_telemetry::inject_headers(&span, headers);
    }
    span
}

fn record<T>(span: &tracing::Span, result: &Result<http::Response<T>, ApiError<RestError>>) {
    match result {
        Ok(response) => nordlys_telemetry::record_http_status(span, response.status().as_u16()),
        Err(e) => nordlys_telemetry::set_error(span, e.to_string()),
    }
}

#[async_trait::async_trait]
impl<'a> AsyncClient for Traced<'a> {
    async fn rest_async(
        &self,
        mut request: http::request::Builder,
        body: Vec<u8>,
    ) -> Result<http::Response<Bytes>, ApiError<RestError>> {
        let span = client_span(&mut request);
        let result = self
            .0
            .rest_async(request, body)
            .instrument(span.clone())
            .await;
        record(&span, &result);
        result
    }

    async fn rest_read_body_async(
        &self,
        mut request: http::request::Builder,
        body: BoxedAsyncRead,
    ) -> Result<http::Response<Bytes>, ApiError<RestError>> {
        let span = client_span(&mut request);
        let result = self
            .0
            .rest_read_body_async(request, body)
            .instrument(span.clone())
            .await;
        record(&span, &result);
        result
    }

    async fn download_async(
        &self,
        mut request: http::request::Builder,
        body: Vec<u8>,
    ) -> Result<(http::HeaderMap, BoxedAsyncRead), ApiError<RestError>> {
        let span = client_span(&mut request);
        let result = self
            .0
            .download_async(request, body)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            nordlys_telemetry::set_error(&span, e.to_string());
        }
        result
    }

    async fn get_service_endpoint(
        &self,
        service_type: &ServiceType,
        version: Option<&ApiVersion>,
    ) -> Result<ServiceEndpoint, ApiError<RestError>> {
        self.0.get_service_endpoint(service_type, version).await
    }
}

/// One region's Keystone and Neutron, and its Nova and Cinder if the
/// catalog has them.
pub(crate) struct Cloud {
    client: AsyncOpenStack,
    _renew: RenewHandle,
    /// Whether the catalog has a compute endpoint in the cloud's region.
    compute: bool,
    /// Whether the catalog has a volumev3 (block-storage) endpoint there.
    volume: bool,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client's Debug shows the catalog, never the credentials.
        f.debug_struct("Cloud")
            .field("client", &self.client)
            .field("compute", &self.compute)
            .field("volume", &self.volume)
            .finish()
    }
}

impl Cloud {
    /// Reads the `clouds.yaml` entry (password or application-credential
    /// auth, as clouds.yaml says), authenticates and finds Neutron.
    pub(crate) async fn connect(config: &OpenStackConfig) -> Result<Cloud, BackendError> {
        let name = if config.cloud.is_empty() {
            std::env::var("OS_CLOUD").unwrap_or_default()
        } else {
            config.cloud.clone()
        };
        if name.is_empty() {
            return Err(BackendError::Internal(
                "no cloud named: set `cloud` under [openstack], NORDLYS_OPENSTACK__CLOUD or OS_CLOUD"
                    .into(),
            ));
        }
        let file = config.clouds_file.clone().or_else(|| {
            std::env::var_os("OS_CLIENT_CONFIG_FILE")
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
        });
        let files = ConfigFile::new_with_user_specified_configs(file.as_ref(), None::<PathBuf>)
            .map_err(|e| BackendError::Internal(format!("cannot read clouds.yaml: {e}")))?;
        let profile = files
            .get_cloud_config(&name)
            .map_err(|e| BackendError::Internal(format!("cannot read cloud {name}: {e}")))?
            .ok_or_else(|| {
                BackendError::Internal(format!("cloud {name} is not in any clouds.yaml"))
            })?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let client = AsyncOpenStack::builder(&profile)
            // A daemon keeps its token in memory only.
            .disable_auth_cache(true)
            .http_timeout(timeout)
            .http_connect_timeout(timeout.min(Duration::from_secs(5)))
            .connect()
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!("cannot authenticate to cloud {name}: {e}"))
            })?;
        client
            .discover_service_endpoint(&ServiceType::Network)
            .await
            .map_err(|e| BackendError::Unavailable(format!("cannot reach Neutron: {e}")))?;
        // Nova's and Cinder's catalog URLs carry their version (and
        // Cinder's the project), so unlike Neutron they need no discovery;
        // their presence decides whether tiers may size them.
        let traced = Traced(&client);
        let compute = traced
            .get_service_endpoint(&ServiceType::Compute, None)
            .await
            .is_ok();
        let volume = traced
            .get_service_endpoint(&ServiceType::BlockStorage, None)
            .await
            .is_ok();
        let renew = client.enable_auto_renew(chrono::TimeDelta::minutes(RENEW_MARGIN_MINUTES));
        Ok(Cloud {
            client,
            _renew: renew,
            compute,
            volume,
        })
    }

    /// Whether the region's catalog has `service`.
    pub(crate) fn has(&self, service: QuotaSetService) -> bool {
        match service {
            QuotaSetService::Compute => self.compute,
            QuotaSetService::Volume => self.volume,
        }
    }

    /// Whether a Neutron call met a routing 404 (no Neutron error type):
    /// openstack_sdk 0.22 forgets discovered endpoint versions when a 401
    /// makes it re-authenticate (its background renewal discovers them
    /// again, its 401 path does not), so Neutron calls lose their `/v2.0`.
    fn lost_endpoint(e: &CallError) -> bool {
        e.service == "neutron" && e.status == Some(404) && e.kind.is_empty()
    }

    async fn rediscover(&self, e: &CallError) {
        tracing::info!(error = %e.message, "Neutron endpoint lost after re-authentication: discovering it again");
        if let Err(e) = self
            .client
            .discover_service_endpoint(&ServiceType::Network)
            .await
        {
            tracing::warn!(error = %e, "cannot discover Neutron again");
        }
    }

    async fn query<T, E>(&self, service: &'static str, endpoint: E) -> CallResult<T>
    where
        E: RestEndpoint + Sync + Send,
        T: DeserializeOwned + Send + 'static,
    {
        let first = timed(service, async {
            endpoint
                .query_async(&Traced(&self.client))
                .await
                .map_err(|e| CallError::new(service, e))
        })
        .await;
        match first {
            Err(e) if Self::lost_endpoint(&e) => {
                self.rediscover(&e).await;
                timed(service, async {
                    endpoint
                        .query_async(&Traced(&self.client))
                        .await
                        .map_err(|e| CallError::new(service, e))
                })
                .await
            }
            other => other,
        }
    }

    async fn run<E>(&self, service: &'static str, endpoint: E) -> CallResult<()>
    where
        E: RestEndpoint + Sync + Send,
    {
        let endpoint = ignore(endpoint);
        let first = timed(service, async {
            endpoint
                .query_async(&Traced(&self.client))
                .await
                .map_err(|e| CallError::new(service, e))
        })
        .await;
        match first {
            Err(e) if Self::lost_endpoint(&e) => {
                self.rediscover(&e).await;
                timed(service, async {
                    endpoint
                        .query_async(&Traced(&self.client))
                        .await
                        .map_err(|e| CallError::new(service, e))
                })
                .await
            }
            other => other,
        }
    }

    /// A delete that counts "already gone" as done.
    async fn remove<E>(&self, service: &'static str, endpoint: E) -> CallResult<()>
    where
        E: RestEndpoint + Sync + Send,
    {
        match self.run(service, endpoint).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    // -- Keystone ----------------------------------------------------------

    pub(crate) async fn domain(&self, name: &str) -> CallResult<Option<Domain>> {
        let ep = ks::domain::list::Request::builder()
            .name(name)
            .build()
            .map_err(build_error)?;
        let domains: Vec<Domain> = self.query("keystone", ep).await?;
        Ok(domains.into_iter().find(|d| d.name == name))
    }

    pub(crate) async fn domains(&self) -> CallResult<Vec<Domain>> {
        let ep = ks::domain::list::Request::builder()
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    pub(crate) async fn create_domain(
        &self,
        name: &str,
        description: &str,
        tags: Vec<String>,
    ) -> CallResult<Domain> {
        let domain = ks::domain::create::DomainBuilder::default()
            .name(name)
            .description(Some(description.into()))
            .tags(tags.into_iter().map(Into::into).collect::<Vec<_>>())
            .build()
            .map_err(build_error)?;
        let ep = ks::domain::create::Request::builder()
            .domain(domain)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    /// Projects carrying all these tags (a comma-separated list).
    pub(crate) async fn projects_tagged(&self, tags: &str) -> CallResult<Vec<KsProject>> {
        let ep = ks::project::list::Request::builder()
            .tags(tags)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    pub(crate) async fn create_project(
        &self,
        name: &str,
        domain_id: &str,
        description: &str,
        tags: Vec<String>,
    ) -> CallResult<KsProject> {
        let project = ks::project::create::ProjectBuilder::default()
            .name(name)
            .domain_id(Some(domain_id.into()))
            .description(Some(description.into()))
            .tags(tags.into_iter().map(Into::into).collect::<Vec<_>>())
            .build()
            .map_err(build_error)?;
        let ep = ks::project::create::Request::builder()
            .project(project)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    /// Sets a project's description and its whole tag list in one PATCH.
    pub(crate) async fn update_project(
        &self,
        project_id: &str,
        description: &str,
        tags: Vec<String>,
    ) -> CallResult<KsProject> {
        let project = ks::project::set::ProjectBuilder::default()
            .description(Some(description.into()))
            .tags(tags.into_iter().map(Into::into).collect::<Vec<_>>())
            .build()
            .map_err(build_error)?;
        let ep = ks::project::set::Request::builder()
            .id(project_id)
            .project(project)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    /// Sets one extra attribute of a project.
    pub(crate) async fn set_project_extra(
        &self,
        project_id: &str,
        key: &str,
        value: Value,
    ) -> CallResult<KsProject> {
        let ep = ProjectExtra {
            id: project_id,
            key,
            value,
        };
        self.query("keystone", ep).await
    }

    pub(crate) async fn add_project_tag(&self, project_id: &str, tag: &str) -> CallResult<()> {
        let ep = ks::project::tag::set::Request::builder()
            .project_id(project_id)
            .value(tag)
            .build()
            .map_err(build_error)?;
        match self.run("keystone", ep).await {
            // Keystone refuses to add a tag the project already has (a
            // racing tier update added it): that is the goal reached.
            Err(e) if e.status == Some(400) && e.message.contains("non-unique") => Ok(()),
            other => other,
        }
    }

    pub(crate) async fn remove_project_tag(&self, project_id: &str, tag: &str) -> CallResult<()> {
        let ep = ks::project::tag::delete::Request::builder()
            .project_id(project_id)
            .value(tag)
            .build()
            .map_err(build_error)?;
        self.remove("keystone", ep).await
    }

    pub(crate) async fn delete_project(&self, id: &str) -> CallResult<()> {
        let ep = ks::project::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("keystone", ep).await
    }

    pub(crate) async fn users(&self, domain_id: &str) -> CallResult<Vec<KsUser>> {
        let ep = ks::user::list::Request::builder()
            .domain_id(domain_id)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    pub(crate) async fn user(&self, domain_id: &str, name: &str) -> CallResult<Option<KsUser>> {
        let ep = ks::user::list::Request::builder()
            .domain_id(domain_id)
            .name(name)
            .build()
            .map_err(build_error)?;
        let users: Vec<KsUser> = self.query("keystone", ep).await?;
        Ok(users.into_iter().find(|u| u.name == name))
    }

    /// Creates a user without a password (people sign in through the
    /// cloud's identity provider); `extra` becomes Keystone extra attributes.
    pub(crate) async fn create_user(
        &self,
        domain_id: &str,
        name: &str,
        extra: BTreeMap<String, Value>,
    ) -> CallResult<KsUser> {
        let user = ks::user::create::UserBuilder::default()
            .name(name)
            .domain_id(domain_id)
            .enabled(true)
            .properties(extra.into_iter())
            .build()
            .map_err(build_error)?;
        let ep = ks::user::create::Request::builder()
            .user(user)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    /// Sets attributes of a user (Keystone keeps the ones it does not know
    /// as extra attributes).
    pub(crate) async fn update_user(
        &self,
        id: &str,
        attributes: BTreeMap<String, Value>,
    ) -> CallResult<KsUser> {
        let user = ks::user::set::UserBuilder::default()
            .properties(attributes.into_iter())
            .build()
            .map_err(build_error)?;
        let ep = ks::user::set::Request::builder()
            .id(id)
            .user(user)
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    pub(crate) async fn delete_user(&self, id: &str) -> CallResult<()> {
        let ep = ks::user::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("keystone", ep).await
    }

    pub(crate) async fn roles(&self) -> CallResult<Vec<Role>> {
        let ep = ks::role::list::Request::builder()
            .build()
            .map_err(build_error)?;
        self.query("keystone", ep).await
    }

    /// Direct role assignments on a project, of a user, or both.
    pub(crate) async fn assignments(
        &self,
        project_id: Option<&str>,
        user_id: Option<&str>,
    ) -> CallResult<Vec<Assignment>> {
        let mut ep = ks::role_assignment::list::Request::builder();
        if let Some(project) = project_id {
            ep.scope_project_id(project);
        }
        if let Some(user) = user_id {
            ep.user_id(user);
        }
        self.query("keystone", ep.build().map_err(build_error)?)
            .await
    }

    pub(crate) async fn grant(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> CallResult<()> {
        let ep = ks::project::user::role::set::Request::builder()
            .project_id(project_id)
            .user_id(user_id)
            .id(role_id)
            .build()
            .map_err(build_error)?;
        self.run("keystone", ep).await
    }

    pub(crate) async fn revoke(
        &self,
        project_id: &str,
        user_id: &str,
        role_id: &str,
    ) -> CallResult<()> {
        let ep = ks::project::user::role::delete::Request::builder()
            .project_id(project_id)
            .user_id(user_id)
            .id(role_id)
            .build()
            .map_err(build_error)?;
        self.remove("keystone", ep).await
    }

    // -- Neutron -----------------------------------------------------------

    /// Networks, narrowed by owner, name and exact description.
    pub(crate) async fn networks(
        &self,
        tenant: Option<&str>,
        name: Option<&str>,
        description: Option<&str>,
    ) -> CallResult<Vec<NNetwork>> {
        let mut ep = nw::network::list::Request::builder();
        if let Some(tenant) = tenant {
            ep.tenant_id(tenant);
        }
        if let Some(name) = name {
            ep.name(name);
        }
        if let Some(description) = description {
            ep.description(description);
        }
        self.query("neutron", ep.build().map_err(build_error)?)
            .await
    }

    pub(crate) async fn create_network(
        &self,
        tenant: &str,
        name: &str,
        description: &str,
    ) -> CallResult<NNetwork> {
        let network = nw::network::create::NetworkBuilder::default()
            .name(name)
            .tenant_id(tenant)
            .description(description)
            .build()
            .map_err(build_error)?;
        let ep = nw::network::create::Request::builder()
            .network(network)
            .build()
            .map_err(build_error)?;
        self.query("neutron", ep).await
    }

    pub(crate) async fn delete_network(&self, id: &str) -> CallResult<()> {
        let ep = nw::network::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("neutron", ep).await
    }

    pub(crate) async fn subnets(
        &self,
        tenant: Option<&str>,
        network_id: Option<&str>,
    ) -> CallResult<Vec<NSubnet>> {
        let mut ep = nw::subnet::list::Request::builder();
        if let Some(tenant) = tenant {
            ep.tenant_id(tenant);
        }
        if let Some(network) = network_id {
            ep.network_id(network);
        }
        self.query("neutron", ep.build().map_err(build_error)?)
            .await
    }

    pub(crate) async fn create_subnet(&self, spec: SubnetSpec<'_>) -> CallResult<NSubnet> {
        let mut subnet = nw::subnet::create::SubnetBuilder::default();
        subnet
            .name(spec.name)
            .tenant_id(spec.tenant)
            .network_id(spec.network_id)
            .cidr(Some(spec.cidr.into()))
            .ip_version(if spec.ipv6 { 6 } else { 4 })
            .dns_nameservers(
                spec.dns
                    .iter()
                    .map(|d| d.as_str().into())
                    .collect::<Vec<_>>(),
            );
        if !spec.gateway_ip.is_empty() {
            subnet.gateway_ip(Some(spec.gateway_ip.into()));
        }
        let ep = nw::subnet::create::Request::builder()
            .subnet(subnet.build().map_err(build_error)?)
            .build()
            .map_err(build_error)?;
        self.query("neutron", ep).await
    }

    /// Sets a subnet's DNS servers in place.
    pub(crate) async fn set_subnet_dns(&self, id: &str, dns: &[String]) -> CallResult<NSubnet> {
        let subnet = nw::subnet::set::SubnetBuilder::default()
            .dns_nameservers(dns.iter().map(|d| d.as_str().into()).collect::<Vec<_>>())
            .build()
            .map_err(build_error)?;
        let ep = nw::subnet::set::Request::builder()
            .id(id)
            .subnet(subnet)
            .build()
            .map_err(build_error)?;
        self.query("neutron", ep).await
    }

    pub(crate) async fn delete_subnet(&self, id: &str) -> CallResult<()> {
        let ep = nw::subnet::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("neutron", ep).await
    }

    pub(crate) async fn security_groups(
        &self,
        tenant: Option<&str>,
        name: Option<&str>,
    ) -> CallResult<Vec<NGroup>> {
        let mut ep = nw::security_group::list::Request::builder();
        if let Some(tenant) = tenant {
            ep.tenant_id(tenant);
        }
        if let Some(name) = name {
            ep.name(name);
        }
        self.query("neutron", ep.build().map_err(build_error)?)
            .await
    }

    pub(crate) async fn create_security_group(
        &self,
        tenant: &str,
        name: &str,
        description: &str,
    ) -> CallResult<NGroup> {
        let group = nw::security_group::create::SecurityGroupBuilder::default()
            .name(name)
            .tenant_id(tenant)
            .description(description)
            .build()
            .map_err(build_error)?;
        let ep = nw::security_group::create::Request::builder()
            .security_group(group)
            .build()
            .map_err(build_error)?;
        self.query("neutron", ep).await
    }

    pub(crate) async fn delete_security_group(&self, id: &str) -> CallResult<()> {
        let ep = nw::security_group::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("neutron", ep).await
    }

    pub(crate) async fn create_rule(&self, spec: RuleSpec<'_>) -> CallResult<NRule> {
        use nw::security_group_rule::create::{Direction, Ethertype};
        let mut rule = nw::security_group_rule::create::SecurityGroupRuleBuilder::default();
        rule.security_group_id(spec.security_group_id)
            .tenant_id(spec.tenant)
            .direction(if spec.egress {
                Direction::Egress
            } else {
                Direction::Ingress
            })
            .ethertype(if spec.ipv6 {
                Ethertype::Ipv6
            } else {
                Ethertype::Ipv4
            })
            .description(spec.description);
        if let Some(protocol) = spec.protocol {
            rule.protocol(protocol);
        }
        if let Some((min, max)) = spec.ports {
            // Ports are at most 65535, well inside i32.
            rule.port_range_min(Some(min as i32))
                .port_range_max(Some(max as i32));
        }
        if let Some(prefix) = spec.remote_ip_prefix {
            rule.remote_ip_prefix(prefix);
        }
        let ep = nw::security_group_rule::create::Request::builder()
            .security_group_rule(rule.build().map_err(build_error)?)
            .build()
            .map_err(build_error)?;
        self.query("neutron", ep).await
    }

    pub(crate) async fn delete_rule(&self, id: &str) -> CallResult<()> {
        let ep = nw::security_group_rule::delete::Request::builder()
            .id(id)
            .build()
            .map_err(build_error)?;
        self.remove("neutron", ep).await
    }

    /// Sets a project's Neutron quotas (names from [`QUOTA_NAMES`]).
    pub(crate) async fn set_quota(
        &self,
        project_id: &str,
        values: &BTreeMap<String, i64>,
    ) -> CallResult<()> {
        let mut quota = nw::quota::set::QuotaBuilder::default();
        for (name, value) in values {
            let v = i32::try_from(*value).unwrap_or(i32::MAX);
            match name.as_str() {
                "floatingip" => quota.floatingip(v),
                "network" => quota.network(v),
                "port" => quota.port(v),
                "rbac_policy" => quota.rbac_policy(v),
                "router" => quota.router(v),
                "security_group" => quota.security_group(v),
                "security_group_rule" => quota.security_group_rule(v),
                "subnet" => quota.subnet(v),
                "subnetpool" => quota.subnetpool(v),
                _ => &mut quota,
            };
        }
        let ep = nw::quota::set::Request::builder()
            .id(project_id)
            .quota(quota.build().map_err(build_error)?)
            .build()
            .map_err(build_error)?;
        let _: Value = self.query("neutron", ep).await?;
        Ok(())
    }

    /// A project's Neutron limits and use, by quota name (`network`,
    /// `floatingip`, `security_group`, ...).
    pub(crate) async fn neutron_quota_usage(
        &self,
        project_id: &str,
    ) -> CallResult<BTreeMap<String, QuotaUse>> {
        let ep = nw::quota::details::Request::builder()
            .id(project_id)
            .build()
            .map_err(build_error)?;
        let quota: Value = self.query("neutron", ep).await?;
        crate::backend::openstack::quota_sets::parse_neutron_usage(&quota).map_err(|message| {
            CallError {
                service: "neutron",
                status: None,
                kind: String::new(),
                message,
                undecodable: true,
            }
        })
    }

    /// Puts a project's Neutron quotas back to the defaults.
    pub(crate) async fn reset_quota(&self, project_id: &str) -> CallResult<()> {
        let ep = nw::quota::delete::Request::builder()
            .id(project_id)
            .build()
            .map_err(build_error)?;
        self.remove("neutron", ep).await
    }

    // -- Nova and Cinder ---------------------------------------------------

    /// Sets a project's Nova or Cinder quotas (names from
    /// `quota_sets::NOVA_NAMES`/`CINDER_NAMES`). Cinder takes any project
    /// id without asking Keystone, so callers pass ids Keystone gave.
    pub(crate) async fn set_quota_set(
        &self,
        service: QuotaSetService,
        project_id: &str,
        values: &BTreeMap<String, i64>,
    ) -> CallResult<()> {
        let ep = QuotaSet::new(service, project_id, QuotaSetCall::Set(values));
        let _: Value = self.query(service.name(), ep).await?;
        Ok(())
    }

    /// Puts a project's Nova or Cinder quotas back to the defaults.
    pub(crate) async fn reset_quota_set(
        &self,
        service: QuotaSetService,
        project_id: &str,
    ) -> CallResult<()> {
        let ep = QuotaSet::new(service, project_id, QuotaSetCall::Reset);
        self.remove(service.name(), ep).await
    }

    /// A project's Nova or Cinder limits and what it uses of them.
    pub(crate) async fn quota_usage(
        &self,
        service: QuotaSetService,
        project_id: &str,
    ) -> CallResult<BTreeMap<String, QuotaUse>> {
        let ep = QuotaSet::new(service, project_id, QuotaSetCall::Usage);
        let quota_set: Value = self.query(service.name(), ep).await?;
        parse_usage(&quota_set).map_err(|message| CallError {
            service: service.name(),
            status: None,
            kind: String::new(),
            message,
            undecodable: true,
        })
    }
}

/// Runs one OpenStack HTTP call, counted in the metrics by service and
/// status, with its time.
async fn timed<T>(
    service: &'static str,
    call: impl std::future::Future<Output = CallResult<T>>,
) -> CallResult<T> {
    let mut timing = Timing {
        service,
        started: std::time::Instant::now(),
        done: false,
    };
    let result = call.await;
    timing.done = true;
    crate::metrics::METRICS.openstack(
        service,
        result
            .as_ref()
            .map(|_| ())
            .map_err(|e| crate::metrics::OpenStackFailure::Status(e.status)),
        timing.started.elapsed(),
    );
    result
}

/// Counts a call dropped before OpenStack answered (the caller's deadline
/// passed): it would otherwise not show at all.
struct Timing {
    service: &'static str,
    started: std::time::Instant,
    done: bool,
}

impl Drop for Timing {
    fn drop(&mut self) {
        if !self.done {
            crate::metrics::METRICS.openstack(
                self.service,
                Err(crate::metrics::OpenStackFailure::Cancelled),
                self.started.elapsed(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_neutron_and_keystone_error_bodies() {
        let neutron = serde_json::json!({"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['network'].", "detail": ""}});
        let (kind, message) = error_text(&neutron);
        assert_eq!(kind, "OverQuota");
        assert!(message.starts_with("Quota exceeded"));
        let keystone = serde_json::json!({"error": {"code": 409, "message": "Conflict occurred", "title": "Conflict"}});
        assert_eq!(error_text(&keystone).1, "Conflict occurred");
        // Nova's fault as the SDK hands it over (under `error`), and bare.
        let nova = serde_json::json!({"badRequest": {"code": 400, "message": "Project ID x is not a valid project."}});
        assert_eq!(
            error_text(&serde_json::json!({ "error": nova })).1,
            "Project ID x is not a valid project."
        );
        assert_eq!(error_text(&nova).1, "Project ID x is not a valid project.");
    }

    #[test]
    fn maps_statuses_to_backend_errors() {
        let error = |status: Option<u16>, kind: &str| CallError {
            service: "neutron",
            status,
            kind: kind.into(),
            message: "m".into(),
            undecodable: false,
        };
        let refusal = |e: CallError| match BackendError::from(e) {
            BackendError::Refused { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(
            refusal(error(Some(400), "")),
            Some(Refusal::InvalidArgument)
        );
        assert_eq!(refusal(error(Some(404), "")), Some(Refusal::NotFound));
        assert_eq!(refusal(error(Some(409), "")), Some(Refusal::AlreadyExists));
        assert_eq!(
            refusal(error(Some(409), "OverQuota")),
            Some(Refusal::ResourceExhausted)
        );
        assert_eq!(
            refusal(error(Some(403), "")),
            Some(Refusal::PermissionDenied)
        );
        assert!(matches!(
            BackendError::from(error(Some(503), "")),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            BackendError::from(error(None, "")),
            BackendError::Unavailable(_)
        ));
    }
}
