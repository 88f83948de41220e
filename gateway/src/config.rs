//! Gateway configuration: defaults < TOML file < `NORDLYS_*` env < flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use nordlys_transport::tls::{MeshTlsConfig, TlsConfig};
use serde::{Deserialize, Serialize};

use crate::mesh::RouteMode;

/// Everything the gateway needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS server URL; several, comma-separated, for a cluster.
    pub nats_url: String,
    /// Credentials and TLS of the NATS connection (`[nats]`, or
    /// `NORDLYS_NATS__NKEY_FILE` and the like).
    #[serde(default)]
    pub nats: nordlys_transport::NatsSettings,
    /// Public gRPC listen address.
    pub listen: SocketAddr,
    /// Public HTTP/JSON listen address (HTTP/1.1 and cleartext HTTP/2).
    pub http_listen: SocketAddr,
    /// The largest HTTP request body, in bytes; larger ones get a 400.
    pub http_max_body_bytes: usize,
    /// Ignore unknown JSON fields and query parameters instead of a 400.
    pub http_allow_unknown_fields: bool,
    /// The operator's API key: all organizations, organizations and quotas.
    /// Empty disables the operator role.
    pub operator_key: String,
    /// Regions expected to exist even when none of their daemons answers, so
    /// lists name them `unreachable` instead of forgetting them.
    pub regions: Vec<String>,
    /// Deadline of a call whose caller set none, in milliseconds (an
    /// environment's apply or delete gets `max_timeout_ms`).
    pub default_timeout_ms: u64,
    /// Longest deadline the gateway honours, in milliseconds.
    pub max_timeout_ms: u64,
    /// How long a list waits for each region before naming it unreachable.
    pub list_region_timeout_ms: u64,
    /// How often regiond instances are rediscovered ($SRV.INFO).
    pub discovery_interval_ms: u64,
    /// How long an authenticated API key is trusted before it is checked again.
    pub auth_cache_ttl_ms: u64,
    /// How calls reach regions: `auto` (direct gRPC, NATS fallback), `nats`, `grpc`.
    pub route: RouteMode,
    /// Per-region route modes, e.g. `{ osl1 = "nats" }`.
    pub route_overrides: HashMap<String, RouteMode>,
    /// How long a failed direct endpoint stays out of the balancer.
    pub eject_ms: u64,
    /// How long one attempt of a read may take before the read is tried
    /// again on the next route (a daemon that hangs, a request lost with a
    /// killed instance). Writes always get the whole deadline.
    pub read_attempt_ms: u64,
    /// `[tls]`: the certificate of the public gRPC and HTTP listeners
    /// (`NORDLYS_TLS__CERT_FILE`, `NORDLYS_TLS__KEY_FILE`). Unset: plaintext,
    /// for local development only.
    pub tls: TlsConfig,
    /// `[mesh_tls]`: mutual TLS to regiond's direct gRPC port
    /// (`NORDLYS_MESH_TLS__CA_FILE`, `..._CERT_FILE`, `..._KEY_FILE`). Unset:
    /// plaintext, for local development only.
    pub mesh_tls: MeshTlsConfig,
    /// How long the audit stream keeps events, in days; 0 keeps them until
    /// `events_max_bytes` pushes them out.
    pub events_max_age_days: u64,
    /// The audit stream's size limit in bytes, the oldest events going
    /// first; -1 for none.
    pub events_max_bytes: i64,
    /// How many audit events may wait for NATS before new ones are dropped
    /// (and counted); calls never wait for it.
    pub events_outbox: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats: nordlys_transport::NatsSettings::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_max_body_bytes: 4 * 1024 * 1024,
            http_allow_unknown_fields: false,
            operator_key: String::new(),
            regions: Vec::new(),
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            list_region_timeout_ms: 2_000,
            discovery_interval_ms: 2_000,
            auth_cache_ttl_ms: 5_000,
            route: RouteMode::Auto,
            route_overrides: HashMap::new(),
            eject_ms: 5_000,
            read_attempt_ms: 1_000,
            tls: TlsConfig::default(),
            mesh_tls: MeshTlsConfig::default(),
            events_max_age_days: 365,
            events_max_bytes: -1,
            events_outbox: 100_000,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `NORDLYS_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(
                Env::prefixed("NORDLYS_")
                    .only(&[
                        "nats_url",
                        "listen",
                        "http_listen",
                        "http_max_body_bytes",
                        "http_allow_unknown_fields",
                        "operator_key",
                        "regions",
                        "default_timeout_ms",
                        "max_timeout_ms",
                        "list_region_timeout_ms",
                        "discovery_interval_ms",
                        "auth_cache_ttl_ms",
                        "route",
                        "eject_ms",
                        "read_attempt_ms",
                        "events_max_age_days",
                        "events_max_bytes",
                        "events_outbox",
                        "tls__cert_file",
                        "tls__key_file",
                        "tls__reload_interval_ms",
                        "mesh_tls__ca_file",
                        "mesh_tls__cert_file",
                        "mesh_tls__key_file",
                        "mesh_tls__reload_interval_ms",
                    ])
                    // `__` reaches into tables: NORDLYS_TLS__CERT_FILE.
                    .split("__"),
            )
            // `__` reaches into the `[nats]` table: NORDLYS_NATS__NKEY_FILE.
            .merge(Env::prefixed("NORDLYS_NATS__").map(|key| format!("nats.{key}").into()))
            .extract()
            .map_err(Box::new)
    }

    /// The default deadline.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }

    /// The longest deadline.
    pub fn max_timeout(&self) -> Duration {
        Duration::from_millis(self.max_timeout_ms)
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_deployment_loads() {
        // In a jail: the other tests set NORDLYS_* variables.
        figment::Jail::expect_with(|_| {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nordlys/gateway.toml");
            let config = Config::load(Some(&file)).map_err(|e| *e)?;
            assert_eq!(config.nats_url.split(',').count(), 3);
            assert!(config.nats.has_credentials());
            assert!(config.nats.validate().is_ok());
            assert!(config.nats.ca_file.is_some());
            Ok(())
        });
    }

    #[test]
    fn tls_sections_come_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gateway.toml",
                "[tls]\ncert_file = \"/etc/tls/gw.crt\"\nkey_file = \"/etc/tls/gw.key\"\n\
                 [mesh_tls]\nca_file = \"/etc/mesh/ca.crt\"\n",
            )?;
            jail.set_env("NORDLYS_MESH_TLS__CERT_FILE", "/etc/mesh/gw.crt");
            jail.set_env("NORDLYS_TLS__KEY_FILE", "/run/gw.key");
            let config = Config::load(Some(Path::new("gateway.toml"))).map_err(|e| *e)?;
            assert_eq!(
                config.tls.cert_file.as_deref(),
                Some(Path::new("/etc/tls/gw.crt"))
            );
            assert_eq!(
                config.tls.key_file.as_deref(),
                Some(Path::new("/run/gw.key"))
            );
            assert_eq!(
                config.mesh_tls.ca_file.as_deref(),
                Some(Path::new("/etc/mesh/ca.crt"))
            );
            assert_eq!(
                config.mesh_tls.cert_file.as_deref(),
                Some(Path::new("/etc/mesh/gw.crt"))
            );
            assert!(config.mesh_tls.key_file.is_none());
            Ok(())
        });
    }

    #[test]
    fn unknown_tls_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gateway.toml", "[tls]\ncertificate = \"/x\"\n")?;
            assert!(Config::load(Some(Path::new("gateway.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn no_tls_section_means_plaintext() {
        // In a jail too: the other tests set NORDLYS_* variables.
        figment::Jail::expect_with(|_| {
            let config = Config::load(None).map_err(|e| *e)?;
            assert!(config.tls.cert_file.is_none() && config.tls.key_file.is_none());
            assert!(config.mesh_tls.ca_file.is_none());
            Ok(())
        });
    }
}
