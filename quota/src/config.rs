//! Configuration: defaults < TOML file < `NORDLYS_*` environment < flags.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::reservation::Counts;

/// The quota service's settings.
///
/// ```toml
/// nats_url = "nats://127.0.0.1:4222"
/// bucket = "nordlys-quota"
/// reservation_ttl = 60          # seconds
/// reconcile_interval_secs = 300 # 0: no periodic reconciliation
/// reconcile_confirm_ms = 1000   # a drift must be seen twice this far apart
/// reconcile_timeout_ms = 5000   # how long a region has to count
/// metrics_listen = "127.0.0.1:9466" # GET /metrics; "off" (default): none
/// [default_limits]
/// projects = 10
/// users = 50
/// networks = 20
/// access_rules = 100
/// ```
///
/// Environment: `NORDLYS_NATS_URL`, `NORDLYS_BUCKET`,
/// `NORDLYS_RESERVATION_TTL`, `NORDLYS_DEFAULT_LIMITS__PROJECTS`,
/// `NORDLYS_RECONCILE_INTERVAL_SECS`, `NORDLYS_METRICS_LISTEN`, ...
///
/// Applied operation ids that no longer fit in a quota document go to the
/// bucket `<bucket>-ops` (see [`crate::ops`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The NATS server; several, comma-separated, for a cluster.
    pub nats_url: String,
    /// Credentials, TLS and bucket replicas of the NATS connection
    /// (`[nats]`, or `NORDLYS_NATS__NKEY_FILE` and the like).
    pub nats: nordlys_transport::NatsSettings,
    /// Serve on a NATS connection without credentials (`--insecure-dev`
    /// only): any client of that server could then call the quota service
    /// as the gateway or a region.
    #[serde(skip)]
    pub insecure_dev: bool,
    /// The JetStream KV bucket holding all state (created if missing).
    pub bucket: String,
    /// Limits of organizations and regions the operator set none for.
    pub default_limits: Counts,
    /// Seconds a reservation lives when the caller asks for no TTL.
    pub reservation_ttl: u64,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace: u64,
    /// Seconds between reconciliations of every organization's usage with
    /// what the regions hold; 0 turns them off (ReconcileQuotas still works).
    pub reconcile_interval_secs: u64,
    /// Milliseconds between the two observations of a drift: it is corrected
    /// only when seen twice with the same difference.
    pub reconcile_confirm_ms: u64,
    /// Milliseconds a region has to answer CountResources.
    pub reconcile_timeout_ms: u64,
    /// Where `GET /metrics` (Prometheus text) is served; port 0 picks a
    /// free port; `off` (the default) serves none.
    pub metrics_listen: String,
    /// The quota tiers organizations may have, smallest first (each
    /// region's `[openstack.tiers.*]` says what they size there). Empty: no
    /// tier can be set or asked for.
    pub tiers: Vec<String>,
    /// The tier of organizations never given one (one of `tiers`, or empty:
    /// below them all, so the first tier is the next one up).
    pub default_tier: String,
    /// Days after a tier change during which a customer's next request
    /// waits for an operator instead of being granted at once.
    pub tier_change_days: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats: nordlys_transport::NatsSettings::default(),
            insecure_dev: false,
            bucket: "nordlys-quota".to_string(),
            default_limits: Counts {
                projects: 10,
                users: 50,
                networks: 20,
                access_rules: 100,
            },
            reservation_ttl: 60,
            shutdown_grace: 10,
            reconcile_interval_secs: 300,
            reconcile_confirm_ms: 1000,
            reconcile_timeout_ms: 5000,
            metrics_listen: "off".to_string(),
            tiers: Vec::new(),
            default_tier: String::new(),
            tier_change_days: 30,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--nats-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// `--bucket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `--reservation-ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_ttl: Option<u64>,
    /// `--reconcile-interval-secs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_interval_secs: Option<u64>,
    /// `--metrics-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// `--insecure-dev`.
    #[serde(skip)]
    pub insecure_dev: bool,
}

/// A configuration that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed.
    #[error(transparent)]
    Load(Box<figment::Error>),
    /// The values are unusable.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Layers the sources and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::figment(file, overrides)
            .extract::<Config>()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.insecure_dev = overrides.insecure_dev;
        config.checked()
    }

    /// The metrics listen address, unless turned off.
    pub fn metrics_listen(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listen.parse().ok()
    }

    fn figment(file: Option<&Path>, overrides: &Overrides) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            // A named file must exist: a typo should not silently run on defaults.
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("NORDLYS_").split("__"))
            .merge(Serialized::defaults(overrides))
    }

    /// Checks what serde cannot.
    pub fn checked(self) -> Result<Config, ConfigError> {
        self.nats.validate().map_err(ConfigError::Invalid)?;
        if !self.nats.has_credentials() && !self.insecure_dev {
            return Err(ConfigError::Invalid(
                "the NATS connection has no credentials, so any client of that server could call the quota service as the gateway: set [nats] nkey_file, creds_file or user and password_file, or pass --insecure-dev for local development".to_string(),
            ));
        }
        if self.bucket.is_empty()
            || !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid(format!(
                "bucket {:?}: use letters, digits, '-' and '_'",
                self.bucket
            )));
        }
        if crate::reservation::Kind::ALL
            .iter()
            .any(|k| self.default_limits.get(*k) < 0)
        {
            return Err(ConfigError::Invalid(
                "default_limits must not be negative".to_string(),
            ));
        }
        if self.reservation_ttl == 0 {
            return Err(ConfigError::Invalid(
                "reservation_ttl must be at least 1 second".to_string(),
            ));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "metrics_listen {:?} must be an address such as 127.0.0.1:9466 (port 0 for any free port) or `off`",
                self.metrics_listen
            )));
        }
        if self.reconcile_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "reconcile_timeout_ms must be at least 1".to_string(),
            ));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.is_empty() || self.tiers[..i].contains(tier) {
                return Err(ConfigError::Invalid(format!(
                    "tiers must be distinct names, smallest first; {tier:?} is not"
                )));
            }
        }
        if !self.default_tier.is_empty() && !self.tiers.contains(&self.default_tier) {
            return Err(ConfigError::Invalid(format!(
                "default_tier {:?} is not one of tiers ({})",
                self.default_tier,
                self.tiers.join(", ")
            )));
        }
        Ok(self)
    }

    /// The default reservation lifetime.
    pub fn reservation_ttl(&self) -> Duration {
        Duration::from_secs(self.reservation_ttl)
    }

    /// Time between periodic reconciliations; `None` when turned off.
    pub fn reconcile_interval(&self) -> Option<Duration> {
        (self.reconcile_interval_secs > 0)
            .then(|| Duration::from_secs(self.reconcile_interval_secs))
    }

    /// Time between the two observations of a drift.
    pub fn reconcile_confirm(&self) -> Duration {
        Duration::from_millis(self.reconcile_confirm_ms)
    }

    /// How long a region has to count.
    pub fn reconcile_timeout(&self) -> Duration {
        Duration::from_millis(self.reconcile_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_deployment_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nordlys/quota.toml");
        let config = Config::load(Some(&file), &Overrides::default())
            .expect("deploy/nordlys/quota.toml loads");
        assert_eq!(config.nats.replicas, 3);
        assert!(config.nats.has_credentials());
        assert_eq!(config.tiers, ["small", "large"]);
        assert_eq!(config.default_tier, "small");
    }

    #[test]
    fn tiers_are_distinct_and_hold_the_default() {
        let load = |toml: &str| {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("quota.toml");
            std::fs::write(&file, toml).expect("write");
            let dev = Overrides {
                insecure_dev: true,
                ..Overrides::default()
            };
            Config::load(Some(&file), &dev)
        };
        let ok = load("tiers = [\"s\", \"m\"]\ndefault_tier = \"s\"\n").expect("loads");
        assert_eq!(ok.tiers, ["s", "m"]);
        let twice = load("tiers = [\"s\", \"s\"]\n").expect_err("twice");
        assert!(twice.to_string().contains("distinct"), "{twice}");
        let stray = load("tiers = [\"s\"]\ndefault_tier = \"xl\"\n").expect_err("stray default");
        assert!(stray.to_string().contains("default_tier"), "{stray}");
    }

    #[test]
    fn refuses_a_nats_connection_without_credentials_unless_insecure_dev() {
        let error = Config::load(None, &Overrides::default()).expect_err("no credentials");
        assert!(error.to_string().contains("--insecure-dev"), "{error}");
        let dev = Overrides {
            insecure_dev: true,
            ..Overrides::default()
        };
        assert!(Config::load(None, &dev).is_ok());
    }

    #[test]
    fn metrics_listen_is_off_an_address_or_refused() {
        let with = |listen: &str| Overrides {
            insecure_dev: true,
            metrics_listen: Some(listen.into()),
            ..Overrides::default()
        };
        let dev = Overrides {
            insecure_dev: true,
            ..Overrides::default()
        };
        let off = Config::load(None, &dev).expect("loads");
        assert_eq!(off.metrics_listen(), None, "off by default");
        let on = Config::load(None, &with("127.0.0.1:0")).expect("loads");
        assert_eq!(
            on.metrics_listen(),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        let error = Config::load(None, &with("everywhere")).expect_err("refused");
        assert!(error.to_string().contains("metrics_listen"), "{error}");
    }

    #[test]
    fn layers_override_in_order() {
        let toml = "bucket = \"from-file\"\nreservation_ttl = 30\n[default_limits]\nprojects = 3\n";
        let overrides = Overrides {
            bucket: Some("from-flag".into()),
            ..Overrides::default()
        };
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .merge(Serialized::defaults(&overrides))
            .extract()
            .expect("valid");
        assert_eq!(config.bucket, "from-flag");
        assert_eq!(config.reservation_ttl, 30);
        assert_eq!(config.default_limits.projects, 3);
        assert_eq!(config.default_limits.users, 50, "unset keys keep defaults");
    }

    #[test]
    fn bad_values_are_refused() {
        let dev = Config {
            insecure_dev: true,
            ..Config::default()
        };
        let bad = Config {
            bucket: "a.b".into(),
            ..dev.clone()
        };
        assert!(bad.checked().is_err());
        let mut bad = dev.clone();
        bad.default_limits.networks = -1;
        assert!(bad.checked().is_err());
        assert!(dev.checked().is_ok());
    }
}
