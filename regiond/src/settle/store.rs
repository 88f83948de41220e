//! Where a region keeps its unsettled quota changes and the request ids of
//! deleted resources: small key-value stores with compare-and-set, in
//! memory (for the memory backend, whose resources die with the process
//! too) or in JetStream KV buckets with a 24-hour age limit (shared by every
//! instance of the region and kept across restarts). The age limit bounds
//! them whatever the traffic: a change still unsettled after a day is the
//! reconciler's to repair.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::sync::Mutex;

/// How long an entry lives at most.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The entry exists (create) or moved (update, delete).
    #[error("the entry changed under us")]
    Conflict,
    /// The store cannot be reached.
    #[error("settle store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        match e {
            StoreError::Conflict => tonic::Status::aborted(e.to_string()),
            StoreError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}

/// A key-value store with revisions.
#[async_trait]
pub(crate) trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value and its revision.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError>;
    /// Creates `key`; [`StoreError::Conflict`] when it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError>;
    /// Replaces revision `revision` of `key`.
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError>;
    /// Deletes revision `revision` of `key`; [`StoreError::Conflict`] when
    /// it moved or is gone, so a delete can claim what it deletes.
    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError>;
    /// Writes `key` whatever was there.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError>;
    /// Every key.
    async fn keys(&self) -> Result<Vec<String>, StoreError>;
}

/// The last revision given out, and each key's value and revision.
type Entries = (u64, HashMap<String, (Bytes, u64)>);

/// A store in this process's memory.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    entries: Mutex<Entries>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        Ok(self.entries.lock().await.1.get(key).cloned())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        let mut guard = self.entries.lock().await;
        let (last, map) = &mut *guard;
        if map.contains_key(key) {
            return Err(StoreError::Conflict);
        }
        *last += 1;
        map.insert(key.to_string(), (value, *last));
        Ok(*last)
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError> {
        let mut guard = self.entries.lock().await;
        let (last, map) = &mut *guard;
        match map.get_mut(key) {
            Some(entry) if entry.1 == revision => {
                *last += 1;
                *entry = (value, *last);
                Ok(*last)
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        let mut guard = self.entries.lock().await;
        match guard.1.get(key) {
            Some(entry) if entry.1 == revision => {
                guard.1.remove(key);
                Ok(())
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        let mut guard = self.entries.lock().await;
        let (last, map) = &mut *guard;
        *last += 1;
        map.insert(key.to_string(), (value, *last));
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.entries.lock().await.1.keys().cloned().collect())
    }
}

/// A store in a JetStream KV bucket.
#[derive(Debug)]
pub(crate) struct KvStore {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl KvStore {
    /// Opens (creating it when missing) the bucket `name`.
    pub(crate) async fn open(
        buckets: impl Into<nordlys_transport::Buckets>,
        name: &str,
        description: &str,
    ) -> Result<KvStore, StoreError> {
        let kv = nordlys_transport::open_bucket(buckets, name, description, Some(MAX_AGE))
            .await
            .map_err(unavailable)?;
        Ok(KvStore { kv })
    }
}

#[async_trait]
impl Store for KvStore {
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        let entry = self.kv.entry(key).await.map_err(unavailable)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.kv.create(key, value).await.map_err(|e| {
            if e.kind() == kv::CreateErrorKind::AlreadyExists {
                StoreError::Conflict
            } else {
                unavailable(e)
            }
        })
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError> {
        self.kv.update(key, value, revision).await.map_err(|e| {
            if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                StoreError::Conflict
            } else {
                unavailable(e)
            }
        })
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        match self.kv.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Lost the race (gone or rewritten), or the store failed.
                match self.kv.entry(key).await {
                    Ok(Some(entry)) if entry.revision != revision => Err(StoreError::Conflict),
                    Ok(None) => Err(StoreError::Conflict),
                    _ => Err(unavailable(e)),
                }
            }
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.kv.put(key, value).await.map_err(unavailable)?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.kv
            .keys()
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_compares_and_sets() {
        let s = MemoryStore::default();
        let r1 = s
            .create("a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        assert!(matches!(
            s.create("a", Bytes::from_static(b"2")).await,
            Err(StoreError::Conflict)
        ));
        let r2 = s
            .update("a", Bytes::from_static(b"2"), r1)
            .await
            .expect("update");
        assert!(matches!(
            s.update("a", Bytes::from_static(b"3"), r1).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(s.delete("a", r1).await, Err(StoreError::Conflict)));
        s.delete("a", r2).await.expect("delete");
        assert!(
            matches!(s.delete("a", r2).await, Err(StoreError::Conflict)),
            "a second delete claims nothing"
        );
        assert!(s.get("a").await.expect("get").is_none());
    }
}
