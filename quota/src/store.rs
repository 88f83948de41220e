//! State in a NATS JetStream KV bucket, JSON documents under dotted keys:
//!
//! | key | document |
//! | --- | --- |
//! | `org.<org>` | [`OrgDoc`](crate::OrgDoc) |
//! | `member.<org>.<hex principal>` | [`MemberDoc`](crate::MemberDoc) |
//! | `apikey.<keyid>` | [`ApiKeyDoc`](crate::ApiKeyDoc) |
//! | `quota.<org>.<region>` | [`QuotaDoc`](crate::reservation::QuotaDoc) |
//!
//! Applied operation ids that no longer fit in a quota document live in a
//! second bucket, see [`crate::ops`].
//!
//! Every read-modify-write goes through [`Store::modify`]: read the entry
//! and its revision, compute the new value, write it only if the revision is
//! still the same (`update`, or `create` for a new key), else read again. So
//! any number of quota instances can share the bucket without lost updates.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Attempts of one compare-and-set before giving up with ABORTED. Within
/// one instance writers of a key queue on a local lock, so conflicts come
/// only from other instances and a handful of attempts suffice.
const MAX_ATTEMPTS: u32 = 64;
/// Local lock stripes: writers of keys in the same stripe queue up.
const STRIPES: usize = 64;

/// What went wrong talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket could not be reached or refused the operation.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// Other writers kept winning the compare-and-set.
    #[error("too much contention on {0}")]
    Contention(String),
    /// A stored document does not parse.
    #[error("stored document {key} is corrupt: {error}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        error: String,
    },
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// What a [`Store::modify`] step wants written.
#[derive(Debug)]
pub enum Write<T> {
    /// Nothing: the entry stays as it was.
    Keep,
    /// Nothing, and the answer holds for any newer revision too (an id
    /// already applied stays applied), so it may come from a cached read.
    Settled,
    /// This value.
    Put(T),
    /// A delete marker.
    Delete,
}

/// A stored document and its revision.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The document.
    pub value: T,
    /// The revision it was read at.
    pub revision: u64,
}

/// The bucket and the local write locks.
#[derive(Debug, Clone)]
pub struct Store {
    kv: kv::Store,
    stripes: Arc<Vec<tokio::sync::Mutex<()>>>,
    cache: Arc<WriteCache>,
}

/// The last revision this process read or wrote of each hot key (quota
/// documents), so a read-modify-write can start from it and skip the read:
/// the compare-and-set still checks it is current, and a lost race reads
/// afresh. A key another instance keeps writing is left out of the cache
/// for a while, so it costs no more than reading every time.
#[derive(Debug, Default)]
struct WriteCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, Cached>>,
}

#[derive(Debug, Clone)]
enum Cached {
    Entry(Bytes, u64),
    /// A cached start lost its race at this time: read first until later.
    Shared(std::time::Instant),
}

/// Keys whose documents are cached for writes.
const CACHED_PREFIX: &str = "quota.";
/// Cached keys at most; the cache starts over when full.
const CACHE_MAX: usize = 16_384;
/// How long a key written elsewhere too is read before each write.
const SHARED_BACKOFF: Duration = Duration::from_secs(5);

impl WriteCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Cached>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        match self.lock().get(key)? {
            Cached::Entry(bytes, revision) => Some((bytes.clone(), *revision)),
            Cached::Shared(_) => None,
        }
    }

    /// Remembers `key` at `revision`, unless another writer was seen lately.
    fn put(&self, key: &str, bytes: Bytes, revision: u64) {
        if !key.starts_with(CACHED_PREFIX) {
            return;
        }
        let mut entries = self.lock();
        if let Some(Cached::Shared(at)) = entries.get(key) {
            if at.elapsed() < SHARED_BACKOFF {
                return;
            }
        }
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(key.to_string(), Cached::Entry(bytes, revision));
    }

    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// A cached start of `key` was stale: another instance writes it too.
    fn shared(&self, key: &str) {
        self.lock()
            .insert(key.to_string(), Cached::Shared(std::time::Instant::now()));
    }
}

impl Store {
    /// Opens `bucket`, creating it (file storage) when missing.
    pub async fn open(
        buckets: impl Into<nordlys_transport::Buckets>,
        bucket: &str,
    ) -> Result<Store, StoreError> {
        let kv = open_bucket(
            buckets,
            bucket,
            "Nordlys organizations, members, API keys and quotas",
            None,
        )
        .await?;
        Ok(Store::from_kv(kv))
    }

    /// Wraps an open bucket.
    pub fn from_kv(kv: kv::Store) -> Store {
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Store {
            kv,
            stripes: Arc::new(stripes),
            cache: Arc::default(),
        }
    }

    fn stripe(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() as usize) % self.stripes.len()]
    }

    /// The raw entry: `(value, revision)`, value `None` when deleted; `None`
    /// when the key never existed.
    async fn entry(&self, key: &str) -> Result<Option<(Option<Bytes>, u64)>, StoreError> {
        let entry = self.kv.entry(key).await.map_err(unavailable)?;
        Ok(entry.map(|e| match e.operation {
            Operation::Put => (Some(e.value), e.revision),
            Operation::Delete | Operation::Purge => (None, e.revision),
        }))
    }

    /// Reads a document; `None` when missing or deleted.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        match self.entry(key).await? {
            Some((Some(bytes), revision)) => Ok(Some(Versioned {
                value: decode(key, &bytes)?,
                revision,
            })),
            _ => Ok(None),
        }
    }

    /// The keys starting with `prefix` (deleted ones left out), sorted.
    ///
    /// This walks the bucket's key list: fine for the walking skeleton's
    /// numbers of organizations, members and keys.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.kv.keys().await.map_err(unavailable)?;
        let mut keys: Vec<String> = keys
            .try_filter(|k| std::future::ready(k.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(unavailable)?;
        keys.sort();
        Ok(keys)
    }

    /// Reads every document whose key starts with `prefix`, sorted by key.
    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for key in self.keys(prefix).await? {
            // Deleted between listing and reading: skip it.
            if let Some(v) = self.get(&key).await? {
                out.push((key, v.value));
            }
        }
        Ok(out)
    }

    /// Read-modify-write of one key with compare-and-set: `step` sees the
    /// current document (`None` when missing) and says what to write and
    /// what to answer. When another writer got there first, `step` runs again
    /// on the newer document, so it must be a pure function of its input.
    pub async fn modify<T, R, E, F>(&self, key: &str, mut step: F) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
        F: FnMut(Option<T>) -> Result<(Write<T>, R), E>,
    {
        self.modify_with(
            key,
            |_| std::future::ready(Ok(())),
            |current, ()| step(current),
        )
        .await
    }

    /// As [`Store::modify`], with a lookup between the read and the step:
    /// `lookup` sees the document just read and fetches what the step needs
    /// from elsewhere (applied ids in the ops bucket), and `step` gets both.
    /// The lookup runs again after every lost race, so what it fetched is
    /// never older than the document it goes with.
    pub async fn modify_with<T, X, R, E, L, LF, F>(
        &self,
        key: &str,
        mut lookup: L,
        mut step: F,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
        L: FnMut(Option<&T>) -> LF,
        LF: std::future::Future<Output = Result<X, E>>,
        F: FnMut(Option<T>, X) -> Result<(Write<T>, R), E>,
    {
        let _local = self.stripe(key).lock().await;
        let mut cached = self.cache.get(key);
        let mut attempt = 0;
        while attempt < MAX_ATTEMPTS {
            let from_cache = cached.is_some();
            let entry = match cached.take() {
                Some((bytes, revision)) => Some((Some(bytes), revision)),
                None => {
                    let entry = self.entry(key).await?;
                    if let Some((Some(bytes), revision)) = &entry {
                        self.cache.put(key, bytes.clone(), *revision);
                    }
                    entry
                }
            };
            let (current, revision) = match entry {
                Some((Some(bytes), revision)) => (Some(decode(key, &bytes)?), Some(revision)),
                Some((None, revision)) => (None, Some(revision)),
                None => (None, None),
            };
            let existed = current.is_some();
            let found = lookup(current.as_ref()).await?;
            let (write, answer) = step(current, found)?;
            let outcome = match write {
                Write::Settled => return Ok(answer),
                // An answer from a cached read that changes nothing may be
                // stale (a limit since raised, a reservation made
                // elsewhere): only a fresh read may give it.
                Write::Keep if from_cache => continue,
                Write::Keep => return Ok(answer),
                Write::Put(value) => self.put_at(key, &value, revision).await,
                Write::Delete => match (existed, revision) {
                    (true, Some(rev)) => {
                        self.cache.forget(key);
                        self.kv
                            .delete_expect_revision(key, Some(rev))
                            .await
                            .map(|()| None)
                            .map_err(|e| {
                                (
                                    e.kind() == UpdateErrorKind::WrongLastRevision,
                                    e.to_string(),
                                )
                            })
                    }
                    _ => return Ok(answer),
                },
            };
            match outcome {
                Ok(written) => {
                    if let Some((bytes, revision)) = written {
                        self.cache.put(key, bytes, revision);
                    }
                    return Ok(answer);
                }
                Err((true, _)) if from_cache => {
                    // Another instance wrote it since: read it, and keep
                    // reading it before writes for a while.
                    self.cache.shared(key);
                }
                Err((true, _)) => {
                    self.cache.forget(key);
                    crate::metrics::METRICS.conflict();
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err((false, e)) => {
                    self.cache.forget(key);
                    return Err(StoreError::Unavailable(e).into());
                }
            }
        }
        crate::metrics::METRICS.contention();
        Err(StoreError::Contention(key.to_string()).into())
    }

    /// Writes `value` only if the entry is still at `revision` (`None`: only
    /// if it does not exist). `Ok(false)` when another writer got there
    /// first.
    pub async fn put_if<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: Option<u64>,
    ) -> Result<bool, StoreError> {
        let _local = self.stripe(key).lock().await;
        match self.put_at(key, value, revision).await {
            Ok(written) => {
                if let Some((bytes, revision)) = written {
                    self.cache.put(key, bytes, revision);
                }
                Ok(true)
            }
            Err((true, _)) => {
                self.cache.forget(key);
                crate::metrics::METRICS.conflict();
                Ok(false)
            }
            Err((false, e)) => Err(StoreError::Unavailable(e)),
        }
    }

    /// The compare-and-set write: the value written and its revision, or
    /// `Err((true, _))` when the revision moved.
    async fn put_at<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: Option<u64>,
    ) -> Result<Option<(Bytes, u64)>, (bool, String)> {
        let bytes = encode(value);
        let written = match revision {
            Some(rev) => self.kv.update(key, bytes.clone(), rev).await.map_err(|e| {
                (
                    e.kind() == UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
            None => self
                .kv
                .create(key, bytes.clone())
                .await
                .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string())),
        }?;
        Ok(Some((bytes, written)))
    }
}

/// Opens KV bucket `bucket`, creating it when missing; `max_age` makes its
/// entries expire.
pub(crate) async fn open_bucket(
    buckets: impl Into<nordlys_transport::Buckets>,
    bucket: &str,
    description: &str,
    max_age: Option<Duration>,
) -> Result<kv::Store, StoreError> {
    nordlys_transport::open_bucket(buckets, bucket, description, max_age)
        .await
        .map_err(unavailable)
}

/// Waits a little, more after each lost race, with jitter so the losers do
/// not collide again in step.
async fn backoff(attempt: u32) {
    let cap_ms = 1u64 << attempt.min(6);
    let ms = rand::random_range(0..=cap_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        error: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // Our documents are plain structs and maps with string keys: serializing
    // them cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Key of an organization.
pub fn org_key(org: &str) -> String {
    format!("org.{org}")
}

/// Key of a member. Principals may hold `@`, which KV keys cannot: hex keeps
/// them within `[0-9a-f]` and preserves their byte order.
pub fn member_key(org: &str, principal: &str) -> String {
    format!("member.{org}.{}", hex::encode(principal.as_bytes()))
}

/// The key prefix of an organization's members.
pub fn member_prefix(org: &str) -> String {
    format!("member.{org}.")
}

/// Key of an API key.
pub fn api_key_key(key: &str) -> String {
    format!("apikey.{key}")
}

/// The key prefix of all API keys.
pub const API_KEY_PREFIX: &str = "apikey.";
/// The key prefix of all organizations.
pub const ORG_PREFIX: &str = "org.";

/// Key of an organization's quota in a region.
pub fn quota_key(org: &str, region: &str) -> String {
    format!("quota.{org}.{region}")
}

/// The key prefix of an organization's quotas.
pub fn quota_prefix(org: &str) -> String {
    format!("quota.{org}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_use_only_allowed_characters() {
        let ok = |k: &str| {
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
        };
        for k in [
            org_key("acme"),
            member_key("acme", "alice@acme.example"),
            api_key_key("k0123"),
            quota_key("acme", "sto1"),
        ] {
            assert!(ok(&k), "{k}");
        }
        assert_eq!(member_key("acme", "a@b"), "member.acme.614062");
    }
}
