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

/// Follows the keys of `kv` matching `keys` (a subject filter such as `>`
/// or `res.>`) for as long as the caller awaits: first each key's last
/// entry, then every change, each given to `apply` once, in revision
/// order. `applied` says the last revision applied. When the watch ends or
/// fails (a reconnect the ordered consumer could not ride out), it resumes
/// after that revision: every key changed since has its newest entry past
/// it (deletes leave an entry too), so nothing is missed. `what` names the
/// follower in the logs.
pub async fn follow_kv(
    kv: &kv::Store,
    keys: &str,
    what: &str,
    applied: impl Fn() -> u64,
    mut apply: impl FnMut(&kv::Entry),
) {
    use futures::StreamExt;
    let mut backoff = Duration::from_millis(50);
    loop {
        let from = applied();
        let watch = if from == 0 {
            kv.watch_with_history(keys).await
        } else {
            kv.watch_from_revision(keys, from + 1).await
        };
        match watch {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::warn!(error = %e, "{what}: watch failed; resuming");
                            break;
                        }
                    };
                    backoff = Duration::from_millis(50);
                    if entry.revision > applied() {
                        apply(&entry);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "{what}: cannot watch the bucket; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
