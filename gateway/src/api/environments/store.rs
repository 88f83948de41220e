//! Environments and templates in the JetStream KV bucket
//! `nordlys-environments`: one entry per environment (`env.{org}.{id}`)
//! and per template (`tpl.{org}.{id}`, `tpl._shared.{id}` for shared
//! ones), each written by compare-and-set.

use async_nats::jetstream::kv;
use futures::StreamExt;
use nordlys_proto::pb::nordlys::v1::{Environment, EnvironmentSpec, EnvironmentTemplate};
use nordlys_transport::Buckets;
use prost::Message;
use tokio::sync::OnceCell;
use tonic::Status;

use super::markers::{self, Markers};
use nordlys_transport::permissions::ENVIRONMENTS_BUCKET as BUCKET;

/// The owner part of a shared template's key (not an organization id).
const SHARED: &str = "_shared";

/// What is kept of an environment.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Stored {
    /// The environment as GetEnvironment shows it.
    #[prost(message, optional, tag = "1")]
    pub(super) environment: Option<Environment>,
    /// The resolved spec the last complete apply converged to: a resource
    /// that differs from it changed outside the environment.
    #[prost(message, optional, tag = "2")]
    pub(super) applied: Option<EnvironmentSpec>,
}

/// The bucket, opened on first use (NATS may come up after the gateway).
#[derive(Debug)]
pub(crate) struct EnvironmentStore {
    buckets: Buckets,
    kv: OnceCell<kv::Store>,
    markers: Markers,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the environment store is not available: {e}"))
}

fn env_key(org: &str, id: &str) -> String {
    format!("env.{org}.{id}")
}

fn template_key(org: Option<&str>, id: &str) -> String {
    format!("tpl.{}.{id}", org.unwrap_or(SHARED))
}

impl EnvironmentStore {
    pub(crate) fn new(buckets: Buckets) -> EnvironmentStore {
        EnvironmentStore {
            buckets,
            kv: OnceCell::new(),
            markers: Markers::default(),
        }
    }

    /// Which environment manages each resource, as this gateway last saw.
    pub(crate) fn markers(&self) -> &Markers {
        &self.markers
    }

    /// Follows the markers into memory for as long as the gateway runs,
    /// waiting for the bucket when NATS is not there yet.
    pub(crate) async fn follow_markers(&self) {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match self.kv().await {
                Ok(kv) => return self.markers.follow(kv.clone()).await,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "environment markers: no bucket yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Marks each of `resources` as `environment`'s (those not already).
    pub(super) async fn mark(
        &self,
        resources: impl IntoIterator<Item = &String>,
        environment: &str,
    ) -> Result<(), Status> {
        let kv = self.kv().await?;
        for resource in resources {
            if self.markers.managed_by(resource).as_deref() != Some(environment) {
                kv.put(markers::key(resource), environment.to_string().into())
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// Removes `environment`'s marks from each of `resources` (another
    /// environment's stay).
    pub(super) async fn unmark(
        &self,
        resources: impl IntoIterator<Item = &String>,
        environment: &str,
    ) -> Result<(), Status> {
        let kv = self.kv().await?;
        for resource in resources {
            let key = markers::key(resource);
            let Some(entry) = kv.entry(&key).await.map_err(unavailable)? else {
                continue;
            };
            if entry.operation == kv::Operation::Put && entry.value == environment.as_bytes() {
                // Only if it is still this marker (another apply may take it).
                match kv.delete_expect_revision(&key, Some(entry.revision)).await {
                    Ok(()) => {}
                    Err(e) if e.to_string().contains("wrong last sequence") => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        Ok(())
    }

    async fn kv(&self) -> Result<&kv::Store, Status> {
        self.kv
            .get_or_try_init(|| async {
                self.buckets
                    .open(
                        BUCKET,
                        "Nordlys environments and environment templates",
                        None,
                    )
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    async fn get<T: Message + Default>(&self, key: &str) -> Result<Option<(T, u64)>, Status> {
        let Some(entry) = self.kv().await?.entry(key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = T::decode(entry.value)
            .map_err(|e| Status::internal(format!("undecodable entry {key}: {e}")))?;
        Ok(Some((value, entry.revision)))
    }

    /// Writes `value` if the key is still at `revision` (`None`: absent);
    /// ABORTED when another writer came first.
    async fn put<T: Message>(
        &self,
        key: &str,
        value: &T,
        revision: Option<u64>,
    ) -> Result<(), Status> {
        let kv = self.kv().await?;
        let bytes = value.encode_to_vec().into();
        let written = match revision {
            Some(revision) => kv
                .update(key, bytes, revision)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => kv
                .create(key, bytes)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        written.map_err(|e| {
            if e.contains("wrong last sequence")
                || e.contains("already exists")
                || e.contains("key exists")
            {
                Status::aborted(format!(
                    "{key} changed meanwhile (another apply?); try again"
                ))
            } else {
                unavailable(e)
            }
        })
    }

    async fn delete(&self, key: &str) -> Result<(), Status> {
        self.kv().await?.delete(key).await.map_err(unavailable)
    }

    /// The latest value of every key matching `filter` (a `*` in its last
    /// token), sorted by key: an ordered consumer of the bucket's stream on
    /// those subjects alone, so a page of one organization costs what that
    /// organization holds (the KV API lists every key of the bucket).
    async fn all<T: Message + Default>(&self, filter: &str) -> Result<Vec<T>, Status> {
        use async_nats::jetstream::consumer::{pull, DeliverPolicy};
        self.kv().await?;
        let prefix = format!("$KV.{BUCKET}.");
        let stream = self
            .buckets
            .context()
            .get_stream(format!("KV_{BUCKET}"))
            .await
            .map_err(unavailable)?;
        let mut consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{prefix}{filter}"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut latest = std::collections::BTreeMap::new();
        let mut pending = consumer.info().await.map_err(unavailable)?.num_pending;
        if pending > 0 {
            let mut messages = consumer.messages().await.map_err(unavailable)?;
            while pending > 0 {
                let Some(message) = messages.next().await else {
                    break;
                };
                let message = message.map_err(unavailable)?;
                pending = message.info().map(|i| i.pending).unwrap_or(0);
                let key = message
                    .subject
                    .as_str()
                    .strip_prefix(&prefix)
                    .unwrap_or_default()
                    .to_string();
                // Deletes and purges leave a marker with this header.
                let removed = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some();
                if removed {
                    latest.remove(&key);
                } else {
                    latest.insert(key, message.payload.clone());
                }
            }
        }
        latest
            .into_iter()
            .map(|(key, bytes)| {
                T::decode(bytes)
                    .map_err(|e| Status::internal(format!("undecodable entry {key}: {e}")))
            })
            .collect()
    }

    pub(super) async fn environment(
        &self,
        org: &str,
        id: &str,
    ) -> Result<Option<(Stored, u64)>, Status> {
        self.get(&env_key(org, id)).await
    }

    pub(super) async fn put_environment(
        &self,
        org: &str,
        id: &str,
        stored: &Stored,
        revision: Option<u64>,
    ) -> Result<(), Status> {
        self.put(&env_key(org, id), stored, revision).await
    }

    pub(super) async fn delete_environment(&self, org: &str, id: &str) -> Result<(), Status> {
        self.delete(&env_key(org, id)).await
    }

    pub(super) async fn environments(&self, org: &str) -> Result<Vec<Stored>, Status> {
        self.all(&format!("env.{org}.*")).await
    }

    pub(super) async fn template(
        &self,
        org: Option<&str>,
        id: &str,
    ) -> Result<Option<EnvironmentTemplate>, Status> {
        Ok(self.get(&template_key(org, id)).await?.map(|(t, _)| t))
    }

    pub(super) async fn create_template(
        &self,
        org: Option<&str>,
        id: &str,
        template: &EnvironmentTemplate,
    ) -> Result<(), Status> {
        self.put(&template_key(org, id), template, None)
            .await
            .map_err(|e| match e.code() {
                tonic::Code::Aborted => {
                    Status::already_exists(format!("template {} exists", template.name))
                }
                _ => e,
            })
    }

    pub(super) async fn delete_template(&self, org: Option<&str>, id: &str) -> Result<(), Status> {
        self.delete(&template_key(org, id)).await
    }

    pub(super) async fn templates(
        &self,
        org: Option<&str>,
    ) -> Result<Vec<EnvironmentTemplate>, Status> {
        self.all(&format!("tpl.{}.*", org.unwrap_or(SHARED))).await
    }
}
