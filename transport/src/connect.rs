//! Connecting to NATS the same way in every service: the servers, who the
//! service is (nkey, credentials or user and password, always read from
//! files), TLS, and where its JetStream buckets live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kv_bucket::Buckets;
use crate::BoxError;

/// How a service reaches NATS besides the server URLs (`[nats]` in every
/// service's configuration).
///
/// ```toml
/// nats_url = "tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222"
/// [nats]
/// nkey_file = "/etc/nordlys/nats/gateway.nk"
/// ca_file = "/etc/nordlys/nats/ca.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// A file holding the nkey seed (`SU…`) the service logs in with; the
    /// server's configuration holds only the public key.
    pub nkey_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and seed), for servers run in
    /// operator mode.
    pub creds_file: Option<PathBuf>,
    /// The user name, with `password_file`.
    pub user: Option<String>,
    /// A file holding the password of `user` (its first line).
    pub password_file: Option<PathBuf>,
    /// The CA the servers' certificates chain to; setting it makes TLS
    /// required.
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for servers that verify their clients (with
    /// `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The JetStream domain of the cluster that keeps the buckets, for a
    /// service connected to a leaf node that has no JetStream of its own.
    pub jetstream_domain: Option<String>,
    /// How many servers keep a copy of each KV bucket the service creates:
    /// 1 on a single server, 3 on a three-node cluster.
    pub replicas: usize,
    /// The prefix of the service's reply subjects; giving each service its
    /// own lets NATS permissions keep the others from reading its replies.
    /// Defaults to the one `nordlysctl nats config` permits the service:
    /// `_INBOX.gateway`, `_INBOX.quota`, `_INBOX.regiond-{region}`.
    pub inbox_prefix: Option<String>,
}

impl Default for NatsSettings {
    fn default() -> NatsSettings {
        NatsSettings {
            nkey_file: None,
            creds_file: None,
            user: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            jetstream_domain: None,
            replicas: 1,
            inbox_prefix: None,
        }
    }
}

impl NatsSettings {
    /// Whether the service proves who it is to the server. Without it, any
    /// client that reaches the server can send what the service sends.
    pub fn has_credentials(&self) -> bool {
        self.nkey_file.is_some() || self.creds_file.is_some() || self.user.is_some()
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        let identities = [
            self.nkey_file.is_some(),
            self.creds_file.is_some(),
            self.user.is_some(),
        ];
        if identities.iter().filter(|set| **set).count() > 1 {
            return Err("nats: set one of nkey_file, creds_file or user".to_string());
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err("nats: user and password_file go together".to_string());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("nats: cert_file and key_file go together".to_string());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "nats: replicas must be 1 to 5, not {}",
                self.replicas
            ));
        }
        if let Some(domain) = &self.jetstream_domain {
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return Err(format!(
                    "nats: jetstream_domain {domain:?} is not a valid domain"
                ));
            }
        }
        if let Some(prefix) = &self.inbox_prefix {
            let valid = !prefix.is_empty()
                && prefix.split('.').all(|token| {
                    !token.is_empty() && !token.contains(['*', '>', ' ', '\t', '\r', '\n'])
                });
            if !valid {
                return Err(format!("nats: inbox_prefix {prefix:?} is not a subject"));
            }
        }
        Ok(())
    }

    /// The client's connect options, secrets read from their files.
    async fn options(&self) -> Result<async_nats::ConnectOptions, BoxError> {
        self.validate()?;
        let mut options = if let Some(path) = &self.creds_file {
            async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| file_error("creds_file", path, e))?
        } else if let Some(path) = &self.nkey_file {
            let seed = read_secret("nkey_file", path)?;
            // Refuse a public key or garbage here, with the file named,
            // rather than an authorization error from the server later.
            nkeys::KeyPair::from_seed(&seed).map_err(|e| {
                format!("nats: nkey_file {}: not an nkey seed: {e}", path.display())
            })?;
            async_nats::ConnectOptions::with_nkey(seed)
        } else if let (Some(user), Some(path)) = (&self.user, &self.password_file) {
            let password = read_secret("password_file", path)?;
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password)
        } else {
            async_nats::ConnectOptions::new()
        };
        if let Some(ca) = &self.ca_file {
            readable("ca_file", ca)?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            readable("cert_file", cert)?;
            readable("key_file", key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok(options)
    }

    /// These settings, with `prefix` as the inbox prefix unless one is set:
    /// each service defaults to the prefix its NATS permissions allow (see
    /// [`crate::permissions`]).
    pub fn or_inbox_prefix(mut self, prefix: String) -> NatsSettings {
        self.inbox_prefix.get_or_insert(prefix);
        self
    }

    /// Where this service's buckets live, for `client`.
    pub fn buckets(&self, client: async_nats::Client) -> Buckets {
        let context = match &self.jetstream_domain {
            Some(domain) => async_nats::jetstream::with_domain(client, domain),
            None => async_nats::jetstream::new(client),
        };
        Buckets::new(context, self.replicas)
    }
}

fn file_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("nats: {what} {}: {e}", path.display())
}

fn readable(what: &str, path: &Path) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| file_error(what, path, e))
}

/// The first line of a secret file, without its line ending.
fn read_secret(what: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(what, path, e))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.is_empty() {
        return Err(format!("nats: {what} {} is empty", path.display()));
    }
    Ok(secret)
}

/// Connects to `url` (one URL or several, comma-separated: a cluster's seed
/// servers) as `name`, with `settings`.
///
/// Reconnects quickly (100 ms, growing to 1 s): a nats-server restart should
/// cost seconds, not async-nats's default back-off of up to several seconds
/// per attempt, because discovery, the quota service and every NATS route
/// wait on it. Permission violations the server reports are logged: NATS
/// tells the client about them only asynchronously, and the call that hit
/// one sees nothing but a timeout.
pub async fn connect_with(
    url: &str,
    name: &str,
    settings: &NatsSettings,
) -> Result<async_nats::Client, BoxError> {
    // Both rustls providers are in the build (ring here, aws-lc-rs through
    // the OpenStack client), so rustls cannot pick one for async-nats.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = settings.options().await?;
    let servers = servers(url)?;
    let client = options
        .name(name)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::ServerError(error) => {
                    tracing::error!(%error, "NATS server refused an operation");
                }
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::debug!(event = %other, "NATS"),
            }
        })
        .connect(servers)
        .await?;
    Ok(client)
}

/// The servers of `url`: one URL, or several separated by commas.
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("nats_url {u:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err("nats_url is empty".to_string());
    }
    Ok(servers)
}

/// Connects as `name` with no credentials and no TLS (tests, local
/// development).
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .connect(url)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_at_a_time() {
        let settings = NatsSettings {
            nkey_file: Some("a".into()),
            user: Some("u".into()),
            password_file: Some("p".into()),
            ..NatsSettings::default()
        };
        assert!(settings.validate().is_err());
        let settings = NatsSettings {
            user: Some("u".into()),
            ..NatsSettings::default()
        };
        assert!(settings
            .validate()
            .expect_err("no password")
            .contains("password_file"));
    }

    #[test]
    fn replicas_and_prefix_are_checked() {
        for (replicas, ok) in [(0, false), (1, true), (3, true), (6, false)] {
            let settings = NatsSettings {
                replicas,
                ..NatsSettings::default()
            };
            assert_eq!(settings.validate().is_ok(), ok, "{replicas}");
        }
        for (prefix, ok) in [("_INBOX.gw", true), ("_INBOX.>", false), ("a..b", false)] {
            let settings = NatsSettings {
                inbox_prefix: Some(prefix.into()),
                ..NatsSettings::default()
            };
            assert_eq!(settings.validate().is_ok(), ok, "{prefix}");
        }
    }

    #[test]
    fn several_servers_are_separated_by_commas() {
        assert_eq!(
            servers("nats://a:4222, tls://b:4222").map(|s| s.len()),
            Ok(2)
        );
        assert!(servers("nats://a:4222,nats://b:port")
            .expect_err("a bad port")
            .contains("b:port"));
        assert!(servers(" , ").is_err());
    }

    #[tokio::test]
    async fn secrets_come_from_files_with_their_names_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = NatsSettings {
            nkey_file: Some(dir.path().join("missing.nk")),
            ..NatsSettings::default()
        };
        let error = settings.options().await.expect_err("missing file");
        assert!(error.to_string().contains("missing.nk"), "{error}");
        let public = dir.path().join("public.nk");
        std::fs::write(
            &public,
            "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\n",
        )
        .expect("write");
        let settings = NatsSettings {
            nkey_file: Some(public),
            ..NatsSettings::default()
        };
        let error = settings.options().await.expect_err("a public key");
        assert!(error.to_string().contains("not an nkey seed"), "{error}");
    }
}
