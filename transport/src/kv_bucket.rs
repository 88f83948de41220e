//! Opening a JetStream KV bucket, for every service that keeps state in one.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::BoxError;

/// Where a service's KV buckets live: the JetStream context (its domain,
/// when the service reaches the cluster through a leaf node) and how many
/// replicas a bucket it creates gets.
#[derive(Debug, Clone)]
pub struct Buckets {
    context: jetstream::Context,
    replicas: usize,
}

impl Buckets {
    /// Buckets of `context`, created with `replicas` copies.
    pub fn new(context: jetstream::Context, replicas: usize) -> Buckets {
        Buckets { context, replicas }
    }

    /// The JetStream context the buckets are reached through.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// Opens KV bucket `bucket`, creating it (file storage, one value per
    /// key) when missing; with `max_age`, entries expire after it.
    ///
    /// `create_key_value` first reads the account info, which async-nats
    /// 0.51 cannot parse from nats-server 2.9 (Debian's): the bucket's
    /// stream is defined the way ADR-8 defines a KV bucket, then opened.
    /// Creating an identical stream is idempotent, so instances starting
    /// together do not race.
    pub async fn open(
        &self,
        bucket: &str,
        description: &str,
        max_age: Option<Duration>,
    ) -> Result<kv::Store, BoxError> {
        let js = &self.context;
        if let Ok(kv) = js.get_key_value(bucket).await {
            return Ok(kv);
        }
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_string()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_message_size: -1,
            max_age: max_age.unwrap_or_default(),
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            num_replicas: self.replicas,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
        Ok(js.get_key_value(bucket).await?)
    }
}

/// A plain client's buckets: no domain, one replica (tests, a single
/// server).
impl From<async_nats::Client> for Buckets {
    fn from(client: async_nats::Client) -> Buckets {
        Buckets::new(jetstream::new(client), 1)
    }
}

/// Opens (or creates) KV bucket `bucket` of `buckets`; see [`Buckets::open`].
pub async fn open_bucket(
    buckets: impl Into<Buckets>,
    bucket: &str,
    description: &str,
    max_age: Option<Duration>,
) -> Result<kv::Store, BoxError> {
    buckets.into().open(bucket, description, max_age).await
}
