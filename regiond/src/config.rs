//! Settings: defaults < TOML file < `NORDLYS_*` environment < flags.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
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
}

impl BackendKind {
    /// The name service metadata shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Kv => "kv",
        }
    }
}

/// How regiond runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The NATS server (`NORDLYS_NATS_URL`).
    pub nats_url: String,
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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats_url: "nats://127.0.0.1:4222".to_string(),
            region: String::new(),
            backend: BackendKind::Kv,
            shutdown_grace_secs: 10,
            grpc_listen: "127.0.0.1:0".to_string(),
            grpc_advertise: String::new(),
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
    /// The region is missing or not a region id.
    #[error("region {0:?} is not a region id (1 to 32 lowercase letters, digits and hyphens, starting with a letter); set --region, NORDLYS_REGION or `region` in the config file")]
    Region(String),
    /// The gRPC listen address is neither `off` nor an address.
    #[error("grpc_listen {0:?} must be an address such as 127.0.0.1:7001 (port 0 for any free port) or `off`")]
    GrpcListen(String),
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
        let config: Config = figment
            .merge(Env::prefixed("NORDLYS_"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
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
        Ok(())
    }

    /// The direct gRPC listen address, unless turned off.
    pub fn grpc_listen(&self) -> Option<std::net::SocketAddr> {
        self.grpc_listen.parse().ok()
    }

    /// How long a shutdown waits for calls in flight.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("regiond.toml");
        std::fs::write(
            &file,
            "region = \"osl1\"\nnats_url = \"nats://file:4222\"\nshutdown_grace_secs = 3\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), &Overrides::default()).expect("loads");
        assert_eq!(config.region, "osl1");
        assert_eq!(config.shutdown_grace(), Duration::from_secs(3));
        let flags = Overrides {
            region: Some("sto1".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&file), &flags).expect("loads");
        assert_eq!(config.region, "sto1");
        assert_eq!(config.nats_url, "nats://file:4222");
        assert_eq!(config.backend, BackendKind::Kv);
    }

    #[test]
    fn refuses_bad_regions_and_missing_files() {
        let bad = Overrides {
            region: Some("Stockholm 1".into()),
            ..Default::default()
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
}
