//! Settings: defaults < TOML file < `NORDLYS_*` environment < flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use nordlys_transport::tls::MeshTlsConfig;
use serde::{Deserialize, Serialize};

/// The backends a region can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In process; everything is lost on restart, and instances of one
    /// region do not share it.
    Memory,
    /// A JetStream KV bucket per region: shared by the region's instances,
    /// kept across restarts (needs a nats-server with JetStream).
    Kv,
    /// A real OpenStack region: Keystone and Neutron, reached with a
    /// `clouds.yaml` entry (see [`OpenStackConfig`]).
    Openstack,
    /// A Kubernetes or OKD cluster: namespaces, role bindings, network
    /// policies and resource quotas, reached with a kubeconfig (see
    /// [`KubeConfig`]).
    Kube,
}

impl BackendKind {
    /// The name service metadata shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Kv => "kv",
            BackendKind::Openstack => "openstack",
            BackendKind::Kube => "kube",
        }
    }
}

/// How regiond runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The NATS server (`NORDLYS_NATS_URL`); several, comma-separated, for
    /// a cluster or a leaf node's pair.
    pub nats_url: String,
    /// Credentials, TLS and JetStream domain of the NATS connection
    /// (`[nats]`, or `NORDLYS_NATS__NKEY_FILE` and the like).
    pub nats: nordlys_transport::NatsSettings,
    /// Serve on a NATS connection without credentials (`--insecure-dev`
    /// only, never from a file): any client of that server could then
    /// call the region as the gateway, for any organization.
    #[serde(skip)]
    pub insecure_dev: bool,
    /// The region served, for example `sto1` (`NORDLYS_REGION`). Required.
    pub region: String,
    /// The backend (`NORDLYS_BACKEND`). `kv` by default: a region run as
    /// several instances needs them to share state, which `memory` cannot.
    pub backend: BackendKind,
    /// How long a shutdown waits for calls in flight, in seconds.
    pub shutdown_grace_secs: u64,
    /// Where the direct gRPC listener binds (`NORDLYS_GRPC_LISTEN`); port 0
    /// picks a free port; `off` serves NATS only.
    pub grpc_listen: String,
    /// The address advertised to gateways as `grpc_endpoint`
    /// (`NORDLYS_GRPC_ADVERTISE`), when it differs from the bound one (NAT,
    /// a wildcard bind). Empty: the bound address.
    pub grpc_advertise: String,
    /// Where `GET /metrics` (Prometheus text) is served
    /// (`NORDLYS_METRICS_LISTEN`); port 0 picks a free port; `off` (the
    /// default) serves none.
    pub metrics_listen: String,
    /// The OpenStack backend's settings (`[openstack]`, or
    /// `NORDLYS_OPENSTACK__CLOUD` and the like).
    pub openstack: OpenStackConfig,
    /// The Kubernetes backend's settings (`[kube]`, or
    /// `NORDLYS_KUBE__KUBECONFIG` and the like).
    pub kube: KubeConfig,
    /// How old an unsettled quota change must be before the sweeper takes it
    /// over from the call that made it, in milliseconds
    /// (`NORDLYS_SETTLE_GRACE_MS`). Longer than a gateway takes to commit a
    /// create it saw succeed, and than the cloud may take to finish a
    /// request whose daemon died (a running call keeps its note fresh).
    pub settle_grace_ms: u64,
    /// How often the sweeper looks for unsettled quota changes, in
    /// milliseconds (`NORDLYS_SETTLE_INTERVAL_MS`).
    pub settle_interval_ms: u64,
    /// Whether the region removes orphans (networks and access rules whose
    /// project is gone, and cloud resources it made whose owner is gone)
    /// when the quota reconciler counts (`NORDLYS_REMOVE_ORPHANS`); off,
    /// they are only reported.
    pub remove_orphans: bool,
    /// `[mesh_tls]`: mutual TLS on the direct gRPC port (`NORDLYS_MESH_TLS__CA_FILE`,
    /// `NORDLYS_MESH_TLS__CERT_FILE`, `NORDLYS_MESH_TLS__KEY_FILE`): clients
    /// must present a certificate of the mesh CA. Unset: plaintext, for
    /// local development only.
    pub mesh_tls: MeshTlsConfig,
}

/// How regiond reaches and shapes an OpenStack region.
///
/// ```toml
/// [openstack]
/// cloud = "sto1"                      # an entry of clouds.yaml (default: OS_CLOUD)
/// clouds_file = "/etc/nordlys/clouds.yaml"
/// default_tier = "small"
/// [openstack.organization_tiers]
/// acme = "large"
/// [openstack.tiers.small]
/// network = 5                         # Neutron
/// subnet = 5
/// security_group = 4
/// security_group_rule = 50
/// port = 50
/// instances = 10                      # Nova
/// cores = 20
/// ram = 51200                         # MB
/// volumes = 10                        # Cinder
/// gigabytes = 500
/// snapshots = 10
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenStackConfig {
    /// The `clouds.yaml` entry to use; empty means `OS_CLOUD`.
    pub cloud: String,
    /// A `clouds.yaml` read besides the standard places (`./clouds.yaml`,
    /// `~/.config/openstack/`, `/etc/openstack/`); none means
    /// `OS_CLIENT_CONFIG_FILE`, when set.
    pub clouds_file: Option<PathBuf>,
    /// Names this Nordlys installation in the cloud: its Keystone domains are
    /// `{namespace}-{org}` and its tags start with it, so two installations
    /// (or test runs) can share one cloud without seeing each other.
    pub namespace: String,
    /// Seconds an OpenStack call may take before the region counts as
    /// unavailable.
    pub timeout_secs: u64,
    /// The quota tier of organizations not named in `organization_tiers`;
    /// empty leaves the services' default quotas.
    pub default_tier: String,
    /// Tiers by organization id.
    pub organization_tiers: BTreeMap<String, String>,
    /// Quota values per tier, as OpenStack Adjutant defines its quota
    /// sizes, in one table: Neutron's (`network`, `subnet`, `port`,
    /// `security_group`, `security_group_rule`, `router`, `floatingip`,
    /// ...), Nova's (`instances`, `cores`, `ram` in MB, ...) and Cinder's
    /// (`volumes`, `gigabytes`, `snapshots`, ...). Each name belongs to one
    /// service; the backend refuses unknown names at start.
    pub tiers: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Default for OpenStackConfig {
    fn default() -> OpenStackConfig {
        OpenStackConfig {
            cloud: String::new(),
            clouds_file: None,
            namespace: "nordlys".to_string(),
            timeout_secs: 30,
            default_tier: String::new(),
            organization_tiers: BTreeMap::new(),
            tiers: BTreeMap::new(),
        }
    }
}

/// The tier `organization_id` gets of a region's configuration (empty: none).
fn tier_of<'a>(
    organization_tiers: &'a BTreeMap<String, String>,
    default_tier: &'a str,
    organization_id: &str,
) -> &'a str {
    organization_tiers
        .get(organization_id)
        .map_or(default_tier, String::as_str)
}

/// The first tier `default_tier` or `organization_tiers` use that
/// `defined` does not know, if any.
fn undefined_tier<'a>(
    default_tier: &'a str,
    organization_tiers: &'a BTreeMap<String, String>,
    defined: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    std::iter::once(default_tier)
        .chain(organization_tiers.values().map(String::as_str))
        .find(|tier| !tier.is_empty() && !defined(tier))
}

/// Whether a namespace is 1 to `max` lowercase letters, digits and hyphens,
/// starting with a letter.
fn is_namespace(namespace: &str, max: usize) -> bool {
    !namespace.is_empty()
        && namespace.len() <= max
        && namespace.starts_with(|c: char| c.is_ascii_lowercase())
        && namespace
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

impl OpenStackConfig {
    /// The tier an organization's projects get (empty: none).
    pub fn tier_of(&self, organization_id: &str) -> &str {
        tier_of(
            &self.organization_tiers,
            &self.default_tier,
            organization_id,
        )
    }

    /// Checks the namespace and that every tier used is defined.
    fn validate(&self) -> Result<(), ConfigError> {
        if !is_namespace(&self.namespace, 32) {
            return Err(ConfigError::OpenStack(format!(
                "namespace {:?} must be 1 to 32 lowercase letters, digits and hyphens, starting with a letter",
                self.namespace
            )));
        }
        match undefined_tier(&self.default_tier, &self.organization_tiers, |t| {
            self.tiers.contains_key(t)
        }) {
            Some(tier) => Err(ConfigError::OpenStack(format!(
                "quota tier {tier:?} is used but not defined under [openstack.tiers]"
            ))),
            None => Ok(()),
        }
    }
}

/// How regiond reaches and shapes a Kubernetes or OKD region.
///
/// ```toml
/// [kube]
/// kubeconfig = "/etc/nordlys/kubeconfig"    # default: KUBECONFIG, ~/.kube/config, in-cluster
/// context = "osl1"
/// subject = "oidc:{email}"                  # how the cluster's identity provider names a user
/// default_tier = "small"
/// [kube.organization_tiers]
/// acme = "large"
/// [kube.tiers.small.quota]                  # the namespace's ResourceQuota
/// "requests.cpu" = "4"
/// "requests.memory" = "8Gi"
/// pods = "20"
/// services = "10"
/// persistentvolumeclaims = "5"
/// [kube.tiers.small.default_limits]         # its LimitRange: a container's default limits
/// cpu = "500m"
/// memory = "512Mi"
/// [kube.tiers.small.default_requests]       # and default requests
/// cpu = "100m"
/// memory = "128Mi"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KubeConfig {
    /// The kubeconfig file; none: `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; empty: its current context.
    pub context: String,
    /// Names this installation in the cluster: project namespaces are
    /// `{namespace}-{project}`, users live in namespace `{namespace}`, and
    /// everything is labelled `nordlys.io/installation={namespace}`.
    pub namespace: String,
    /// Seconds a Kubernetes call may take before the region counts as
    /// unavailable; also how long a project delete waits for its namespace
    /// to go.
    pub timeout_secs: u64,
    /// The subject name a user's RoleBindings name, as the cluster's
    /// identity provider knows the user: `{organization}`, `{user}` and
    /// `{email}` are replaced (like kube-apiserver's
    /// `--oidc-username-prefix`, add a prefix when the provider does).
    /// It must tell organizations apart: the default is
    /// `{organization}:{user}`.
    pub subject: String,
    /// The quota tier of organizations not named in `organization_tiers`;
    /// empty: no ResourceQuota.
    pub default_tier: String,
    /// Tiers by organization id.
    pub organization_tiers: BTreeMap<String, String>,
    /// The tiers: each a namespace's ResourceQuota and LimitRange.
    pub tiers: BTreeMap<String, KubeTier>,
}

/// A quota tier of a Kubernetes region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeTier {
    /// The ResourceQuota's `hard` limits by resource name (`pods`,
    /// `requests.cpu`, `limits.memory`, `persistentvolumeclaims`, ...), as
    /// Kubernetes quantities.
    #[serde(deserialize_with = "quantities")]
    pub quota: BTreeMap<String, String>,
    /// A container's default limits (LimitRange `default`).
    #[serde(deserialize_with = "quantities")]
    pub default_limits: BTreeMap<String, String>,
    /// A container's default requests (LimitRange `defaultRequest`).
    #[serde(deserialize_with = "quantities")]
    pub default_requests: BTreeMap<String, String>,
}

/// Kubernetes quantities by name: `"500m"`, `"4Gi"`, or a plain number
/// (`pods = 10` in TOML, or from a variable, which reads `10` as a number).
fn quantities<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Quantity {
        Text(String),
        Integer(i64),
        Float(f64),
    }
    let map = BTreeMap::<String, Quantity>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(k, q)| {
            let q = match q {
                Quantity::Text(s) => s,
                Quantity::Integer(n) => n.to_string(),
                Quantity::Float(f) => f.to_string(),
            };
            (k, q)
        })
        .collect())
}

impl Default for KubeConfig {
    fn default() -> KubeConfig {
        KubeConfig {
            kubeconfig: None,
            context: String::new(),
            namespace: "nordlys".to_string(),
            timeout_secs: 30,
            subject: "{organization}:{user}".to_string(),
            default_tier: String::new(),
            organization_tiers: BTreeMap::new(),
            tiers: BTreeMap::new(),
        }
    }
}

impl KubeConfig {
    /// The tier an organization's projects get (empty: none).
    pub fn tier_of(&self, organization_id: &str) -> &str {
        tier_of(
            &self.organization_tiers,
            &self.default_tier,
            organization_id,
        )
    }

    /// Checks the namespace, the subject template and the tiers used.
    fn validate(&self) -> Result<(), ConfigError> {
        // The namespace prefixes namespace names (DNS labels of at most 63).
        if !is_namespace(&self.namespace, 20) || self.namespace.ends_with('-') {
            return Err(ConfigError::Kube(format!(
                "namespace {:?} must be 1 to 20 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
                self.namespace
            )));
        }
        if !self.subject.contains("{user}") && !self.subject.contains("{email}") {
            return Err(ConfigError::Kube(format!(
                "subject {:?} must contain {{user}} or {{email}}: otherwise every user is the same subject",
                self.subject
            )));
        }
        if self.subject.contains("{user}") && !self.subject.contains("{organization}") {
            return Err(ConfigError::Kube(format!(
                "subject {:?} names {{user}} without {{organization}}: users of two organizations may share an id, and would share their access",
                self.subject
            )));
        }
        match undefined_tier(&self.default_tier, &self.organization_tiers, |t| {
            self.tiers.contains_key(t)
        }) {
            Some(tier) => Err(ConfigError::Kube(format!(
                "quota tier {tier:?} is used but not defined under [kube.tiers]"
            ))),
            None => Ok(()),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats: nordlys_transport::NatsSettings::default(),
            insecure_dev: false,
            region: String::new(),
            backend: BackendKind::Kv,
            shutdown_grace_secs: 10,
            grpc_listen: "127.0.0.1:0".to_string(),
            grpc_advertise: String::new(),
            metrics_listen: "off".to_string(),
            openstack: OpenStackConfig::default(),
            kube: KubeConfig::default(),
            settle_grace_ms: 30_000,
            settle_interval_ms: 5_000,
            remove_orphans: false,
            mesh_tls: MeshTlsConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--nats-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// `--region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `--backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// `--grpc-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<String>,
    /// `--grpc-advertise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_advertise: Option<String>,
    /// `--metrics-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// `--insecure-dev`.
    #[serde(skip)]
    pub insecure_dev: bool,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named does not exist.
    #[error("config file {0} not found")]
    MissingFile(String),
    /// A layer could not be read or has a value of the wrong type.
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
    /// The OpenStack settings do not hold together.
    #[error("openstack: {0}")]
    OpenStack(String),
    /// The region is missing or not a region id.
    #[error("region {0:?} is not a region id (1 to 32 lowercase letters, digits and hyphens, starting with a letter); set --region, NORDLYS_REGION or `region` in the config file")]
    Region(String),
    /// The Kubernetes settings do not hold together.
    #[error("kube: {0}")]
    Kube(String),
    /// The NATS settings do not hold together.
    #[error("{0}")]
    Nats(String),
    /// The NATS connection has no credentials and `--insecure-dev` was not given.
    #[error("the NATS connection has no credentials, so any client of that server could call this region as the gateway, for any organization: set [nats] nkey_file, creds_file or user and password_file, or pass --insecure-dev for local development")]
    NoCredentials,
    /// The gRPC listen address is neither `off` nor an address.
    #[error("grpc_listen {0:?} must be an address such as 127.0.0.1:7001 (port 0 for any free port) or `off`")]
    GrpcListen(String),
    /// The metrics listen address is neither `off` nor an address.
    #[error("metrics_listen {0:?} must be an address such as 127.0.0.1:9464 (port 0 for any free port) or `off`")]
    MetricsListen(String),
}

impl Config {
    /// Reads the layers and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            // figment takes a missing file for an empty one; a named file must exist.
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut config: Config = figment
            // `__` reaches into tables: NORDLYS_OPENSTACK__CLOUD.
            .merge(Env::prefixed("NORDLYS_").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.insecure_dev = overrides.insecure_dev;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !nordlys_api::validate::is_region(&self.region) {
            return Err(ConfigError::Region(self.region.clone()));
        }
        if self.grpc_listen != "off" && self.grpc_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::GrpcListen(self.grpc_listen.clone()));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::MetricsListen(self.metrics_listen.clone()));
        }
        self.nats.validate().map_err(ConfigError::Nats)?;
        if !self.nats.has_credentials() && !self.insecure_dev {
            return Err(ConfigError::NoCredentials);
        }
        self.openstack.validate()?;
        self.kube.validate()
    }

    /// The direct gRPC listen address, unless turned off.
    pub fn grpc_listen(&self) -> Option<std::net::SocketAddr> {
        self.grpc_listen.parse().ok()
    }

    /// The metrics listen address, unless turned off.
    pub fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listen.parse().ok()
    }

    /// How long a shutdown waits for calls in flight.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How old an unsettled change is before the sweeper takes it over.
    pub fn settle_grace(&self) -> Duration {
        Duration::from_millis(self.settle_grace_ms)
    }

    /// How often the sweeper runs (at least every 100 ms).
    pub fn settle_interval(&self) -> Duration {
        Duration::from_millis(self.settle_interval_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags of a local development run: no NATS credentials needed.
    fn dev() -> Overrides {
        Overrides {
            insecure_dev: true,
            ..Overrides::default()
        }
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(
            &file,
            "region = \"osl1\"\nnats_url = \"nats://file:4222\"\nshutdown_grace_secs = 3\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &dev()).expect("loads");
        assert_eq!(config.region, "osl1");
        assert_eq!(config.shutdown_grace(), Duration::from_secs(3));
        let flags = Overrides {
            region: Some("sto1".into()),
            ..dev()
        };
        let config = Config::load(Some(&file), &flags).expect("loads");
        assert_eq!(config.region, "sto1");
        assert_eq!(config.nats_url, "nats://file:4222");
        assert_eq!(config.backend, BackendKind::Kv);
    }

    #[test]
    fn reads_openstack_tiers_and_refuses_undefined_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(
            &file,
            "region = \"sto1\"\nbackend = \"openstack\"\n[openstack]\ncloud = \"sto1\"\ndefault_tier = \"small\"\n[openstack.organization_tiers]\nacme = \"large\"\n[openstack.tiers.small]\nnetwork = 2\n[openstack.tiers.large]\nnetwork = 20\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &dev()).expect("loads");
        assert_eq!(config.backend, BackendKind::Openstack);
        assert_eq!(config.openstack.cloud, "sto1");
        assert_eq!(config.openstack.tier_of("acme"), "large");
        assert_eq!(config.openstack.tier_of("other"), "small");
        assert_eq!(config.openstack.tiers["large"]["network"], 20);
        std::fs::write(
            &file,
            "region = \"sto1\"\n[openstack]\ndefault_tier = \"huge\"\n",
        )
        .expect("write");
        assert!(matches!(
            Config::load(Some(&file), &dev()),
            Err(ConfigError::OpenStack(_))
        ));
    }

    #[test]
    fn reads_the_mesh_tls_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(
            &file,
            "region = \"sto1\"\n[mesh_tls]\nca_file = \"/m/ca.crt\"\ncert_file = \"/m/r.crt\"\nkey_file = \"/m/r.key\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &dev()).expect("loads");
        assert_eq!(
            config.mesh_tls.ca_file.as_deref(),
            Some(Path::new("/m/ca.crt"))
        );
        assert_eq!(
            config.mesh_tls.key_file.as_deref(),
            Some(Path::new("/m/r.key"))
        );
        let plain = Config::load(
            None,
            &Overrides {
                region: Some("sto1".into()),
                ..dev()
            },
        )
        .expect("loads");
        assert_eq!(plain.mesh_tls, MeshTlsConfig::default());
    }

    #[test]
    fn refuses_bad_regions_and_missing_files() {
        let bad = Overrides {
            region: Some("Stockholm 1".into()),
            ..dev()
        };
        assert!(matches!(
            Config::load(None, &bad),
            Err(ConfigError::Region(_))
        ));
        assert!(matches!(
            Config::load(Some(Path::new("/nonexistent/regiond.toml")), &bad),
            Err(ConfigError::MissingFile(_))
        ));
    }

    #[test]
    fn metrics_listen_is_off_an_address_or_refused() {
        let with = |listen: &str| Overrides {
            region: Some("sto1".into()),
            metrics_listen: Some(listen.into()),
            ..dev()
        };
        let off = Config::load(None, &dev_in("sto1")).expect("loads");
        assert_eq!(off.metrics_listen(), None, "off by default");
        let on = Config::load(None, &with("127.0.0.1:0")).expect("loads");
        assert_eq!(
            on.metrics_listen(),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        assert!(matches!(
            Config::load(None, &with("localhost")),
            Err(ConfigError::MetricsListen(_))
        ));
    }

    fn dev_in(region: &str) -> Overrides {
        Overrides {
            region: Some(region.into()),
            ..dev()
        }
    }

    #[test]
    fn the_reference_deployment_loads() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nordlys/regiond-sto1.toml");
        let config = Config::load(Some(&file), &Overrides::default())
            .expect("deploy/nordlys/regiond-sto1.toml loads");
        assert_eq!(config.region, "sto1");
        assert_eq!(config.nats.jetstream_domain.as_deref(), Some("hub"));
        assert_eq!(config.nats.replicas, 3);
    }

    #[test]
    fn the_reference_kube_region_loads() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nordlys/regiond-osl1.toml");
        let config = Config::load(Some(&file), &Overrides::default())
            .expect("deploy/nordlys/regiond-osl1.toml loads");
        assert_eq!(config.backend, BackendKind::Kube);
        assert_eq!(config.kube.subject, "oidc:{email}");
        assert_eq!(config.kube.tier_of("bigcorp"), "large");
        assert_eq!(
            config.kube.tiers["small"].quota["requests.cpu"],
            "4".to_string()
        );
    }

    #[test]
    fn kube_quantities_may_be_plain_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(
            &file,
            "region = \"osl1\"\n[kube.tiers.small]\nquota = { pods = 10, \"requests.cpu\" = 1.5, \"limits.memory\" = \"8Gi\" }\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &dev()).expect("loads");
        let quota = &config.kube.tiers["small"].quota;
        assert_eq!(quota["pods"], "10");
        assert_eq!(quota["requests.cpu"], "1.5");
        assert_eq!(quota["limits.memory"], "8Gi");
    }

    #[test]
    fn kube_settings_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        for (kube, says) in [
            ("namespace = \"Nordlys\"", "namespace"),
            ("namespace = \"a-very-long-installation-name\"", "namespace"),
            // Users of two organizations may share an id.
            ("subject = \"{user}\"", "{organization}"),
            ("subject = \"admin\"", "{user} or {email}"),
            ("default_tier = \"gold\"", "gold"),
        ] {
            std::fs::write(&file, format!("region = \"osl1\"\n[kube]\n{kube}\n")).expect("write");
            let err = Config::load(Some(&file), &dev()).expect_err(kube);
            assert!(matches!(err, ConfigError::Kube(_)), "{kube}: {err}");
            assert!(err.to_string().contains(says), "{kube}: {err}");
        }
        // A tier with a field it does not have is named.
        std::fs::write(
            &file,
            "region = \"osl1\"\n[kube.tiers.small]\nquotas = { pods = \"1\" }\n",
        )
        .expect("write");
        let err = Config::load(Some(&file), &dev()).expect_err("unknown field");
        assert!(err.to_string().contains("quotas"), "{err}");
    }

    #[test]
    fn refuses_a_nats_connection_without_credentials_unless_insecure_dev() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(&file, "region = \"sto1\"\n").expect("write");
        assert!(matches!(
            Config::load(Some(&file), &Overrides::default()),
            Err(ConfigError::NoCredentials)
        ));
        assert!(Config::load(Some(&file), &dev()).is_ok());
        std::fs::write(
            &file,
            "region = \"sto1\"\n[nats]\nnkey_file = \"/etc/nordlys/regiond.nk\"\nreplicas = 3\njetstream_domain = \"hub\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &Overrides::default()).expect("loads");
        assert_eq!(config.nats.replicas, 3);
        assert_eq!(config.nats.jetstream_domain.as_deref(), Some("hub"));
    }
}
