//! The applied-operations record: which operation ids (committed
//! reservation ids, give-back operation ids) were applied to an
//! organization's quota in a region, so that a retry changes nothing.
//!
//! The most recent ids sit in the quota document itself
//! ([`QuotaDoc::applied`], at most about [`RECENT_MAX`]). When a document
//! holds more, the oldest are first written as their own keys into the ops
//! bucket (`<bucket>-ops`, entries expiring after a day), and only after
//! those writes succeeded removed from the document with a compare-and-set.
//! So at every instant an applied id is in the document or in the ops
//! bucket, and "was it applied?" is: in the document, else a get in the ops
//! bucket. The document stays small whatever the traffic, and the cost of an
//! operation does not grow with history.
//!
//! [`RECENT_MAX`]: crate::reservation::RECENT_MAX

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tonic::Status;

use crate::reservation::{QuotaDoc, APPLIED_RETENTION_MS};
use crate::store::{self, StoreError, Write};
use crate::Controller;

/// Gets or puts to the ops bucket in flight at once for one call.
const PARALLEL: usize = 32;

/// The ops bucket.
#[derive(Debug, Clone)]
pub struct OpsLog {
    kv: kv::Store,
    /// Quota keys whose ids are being moved by this instance, so concurrent
    /// callers do not all move the same ids.
    spilling: Arc<Mutex<HashSet<String>>>,
}

/// The ops bucket of state bucket `bucket`.
pub fn bucket_name(bucket: &str) -> String {
    format!("{bucket}-ops")
}

/// The key of operation `id` applied to `org`'s quota in `region`:
/// `op.<org>.<region>.<id>`. Ids may hold `.` and `:`, which a key token
/// cannot, so those (and the escape `=`) become `=XX`.
pub fn op_key(org: &str, region: &str, id: &str) -> String {
    let mut key = format!("op.{org}.{region}.");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

impl OpsLog {
    /// Opens (or creates) the ops bucket of state bucket `bucket`.
    pub async fn open(
        buckets: impl Into<nordlys_transport::Buckets>,
        bucket: &str,
    ) -> Result<OpsLog, StoreError> {
        let kv = store::open_bucket(
            buckets,
            &bucket_name(bucket),
            "Nordlys quota: applied operation ids that no longer fit in their quota document",
            Some(Duration::from_millis(APPLIED_RETENTION_MS.unsigned_abs())),
        )
        .await?;
        Ok(OpsLog {
            kv,
            spilling: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Which of `ids` the ops bucket records as applied to `org` in `region`.
    pub async fn applied_among(
        &self,
        org: &str,
        region: &str,
        ids: Vec<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let found: Vec<Option<String>> = futures::stream::iter(ids)
            .map(|id| {
                let key = op_key(org, region, &id);
                let kv = self.kv.clone();
                async move {
                    let entry = kv
                        .entry(key)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                    let present = matches!(entry, Some(e) if e.operation == kv::Operation::Put);
                    Ok::<_, StoreError>(present.then_some(id))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Records `ids` (with when they were applied) as applied.
    async fn record(
        &self,
        org: &str,
        region: &str,
        ids: &[(String, i64)],
    ) -> Result<(), StoreError> {
        // Owned keys and values: a stream over borrowed ones trips the
        // compiler's higher-ranked lifetime check inside async_trait.
        let puts: Vec<(String, Bytes)> = ids
            .iter()
            .map(|(id, at)| (op_key(org, region, id), Bytes::from(at.to_string())))
            .collect();
        futures::stream::iter(puts)
            .map(|(key, value)| {
                let kv = self.kv.clone();
                async move {
                    kv.put(key, value)
                        .await
                        .map(drop)
                        .map_err(|e| StoreError::Unavailable(e.to_string()))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Marks `key` as being moved; false when this instance already is.
    fn begin_spill(&self, key: &str) -> bool {
        self.spilling
            .lock()
            .map(|mut set| set.insert(key.to_string()))
            .unwrap_or(false)
    }

    fn end_spill(&self, key: &str) {
        if let Ok(mut set) = self.spilling.lock() {
            set.remove(key);
        }
    }
}

impl Controller {
    /// Which of `ids` were applied to `org`'s quota in `region`, as far as
    /// the ops bucket knows; the ids the document `doc` knows are not asked
    /// about. For [`Store::modify_with`](crate::store::Store::modify_with)'s
    /// lookup.
    pub(crate) fn logged_among<'a>(
        &self,
        org: &str,
        region: &str,
        doc: Option<&QuotaDoc>,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> impl std::future::Future<Output = Result<BTreeSet<String>, Status>> + Send + 'static {
        let ask: Vec<String> = ids
            .into_iter()
            .filter(|id| !doc.is_some_and(|d| d.knows_applied(id)))
            .map(str::to_string)
            .collect();
        let ops = self.ops.clone();
        let (org, region) = (org.to_string(), region.to_string());
        async move {
            ops.applied_among(&org, &region, ask)
                .await
                .map_err(Status::from)
        }
    }

    /// Moves the oldest applied ids of `org`'s quota document in `region` to
    /// the ops bucket when it holds too many: put them there first, then
    /// remove them from the document with a compare-and-set. A failure is
    /// logged and left for the next operation to retry: nothing is lost, the
    /// ids stay in the document meanwhile.
    pub(crate) async fn spill(&self, org: &str, region: &str) {
        let key = store::quota_key(org, region);
        if !self.ops.begin_spill(&key) {
            return;
        }
        if let Err(e) = self.spill_now(org, region, &key).await {
            tracing::warn!(organization = %org, region = %region, error = %e, "could not move applied ids to the ops bucket; will retry");
        }
        self.ops.end_spill(&key);
    }

    async fn spill_now(&self, org: &str, region: &str, key: &str) -> Result<(), StoreError> {
        // A few rounds: a document read while others kept adding may still
        // be over after one batch; more than that is the next caller's job.
        for _ in 0..4 {
            let Some(doc) = self.store.get::<QuotaDoc>(key).await? else {
                return Ok(());
            };
            if !doc.value.needs_spill() {
                return Ok(());
            }
            let moving = doc.value.spill_candidates();
            if moving.is_empty() {
                return Ok(());
            }
            self.ops.record(org, region, &moving).await?;
            self.store
                .modify(key, |current: Option<QuotaDoc>| {
                    let Some(mut doc) = current else {
                        return Ok::<_, StoreError>((Write::Keep, ()));
                    };
                    if doc.forget_spilled(&moving) {
                        Ok((Write::Put(doc), ()))
                    } else {
                        Ok((Write::Keep, ()))
                    }
                })
                .await?;
            tracing::debug!(organization = %org, region = %region, moved = moving.len(), "applied ids moved to the ops bucket");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_keys_are_valid_and_distinct() {
        let ok = |k: &str| {
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.'))
        };
        let a = op_key("acme", "sto1", "req:1.2");
        assert_eq!(a, "op.acme.sto1.req=3A1=2E2");
        assert!(ok(&a));
        // The escape itself is escaped, so no two ids share a key.
        assert_ne!(op_key("acme", "sto1", "a=3A"), op_key("acme", "sto1", "a:"));
        assert_eq!(bucket_name("nordlys-quota"), "nordlys-quota-ops");
    }
}
