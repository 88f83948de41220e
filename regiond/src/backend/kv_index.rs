//! The kv backend's in-memory index of its bucket, so a list page, a
//! project's children and an organization's counts cost what they return,
//! not what the bucket holds.
//!
//! Each instance keeps one: per kind, every resource's record sorted by
//! name, plus the names of each organization (and, for memberships, of each
//! user). It is built at open by watching the whole bucket with its history
//! (the last message of every key) and kept current by the same watch, puts
//! and deletes alike; request id keys (`q.*`) are ignored.
//!
//! The index trails the bucket by the watch's delay, and other instances
//! write to the same bucket, so a reader first waits until the index has
//! applied everything up to the stream's last sequence as of the call's
//! start ([`Index::caught_up`]): a create acknowledged on any instance is
//! in the next list on every instance. When the watch is broken it is
//! resumed from the last applied sequence; until it has caught up, readers
//! wait, and answer UNAVAILABLE past their budget rather than from a stale
//! index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use nordlys_proto::pb::nordlys::v1::{Membership, ResourceCounts};
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::kv::Record;
use super::{BackendError, Filter, ResourceKind, Result};

/// How long a reader waits for the index to catch up before answering
/// UNAVAILABLE.
pub(super) const READ_BUDGET: Duration = Duration::from_secs(2);

fn slot(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Project => 0,
        ResourceKind::User => 1,
        ResourceKind::Membership => 2,
        ResourceKind::Network => 3,
        ResourceKind::AccessRule => 4,
    }
}

/// The kind and name of a resource key (`p.projects/web`); `None` for the
/// request id index (`q.*`) and anything else.
fn parse_key(key: &str) -> Option<(ResourceKind, &str)> {
    let (prefix, name) = key.split_once('.')?;
    let kind = match prefix {
        "p" => ResourceKind::Project,
        "u" => ResourceKind::User,
        "m" => ResourceKind::Membership,
        "n" => ResourceKind::Network,
        "a" => ResourceKind::AccessRule,
        _ => return None,
    };
    Some((kind, name))
}

#[derive(Debug)]
struct Row {
    record: Arc<Record>,
    /// A membership's user (for deleting a user's memberships); empty for
    /// other kinds.
    user: String,
}

#[derive(Debug, Default)]
struct Table {
    rows: BTreeMap<String, Row>,
    /// Names per organization.
    by_org: HashMap<String, BTreeSet<String>>,
    /// Memberships per user.
    by_user: HashMap<String, BTreeSet<String>>,
}

fn unlink(map: &mut HashMap<String, BTreeSet<String>>, key: &str, name: &str) {
    if let Some(names) = map.get_mut(key) {
        names.remove(name);
        if names.is_empty() {
            map.remove(key);
        }
    }
}

/// Every resource of a region, sorted per kind. Pure data: the watch feeds
/// it, readers query it.
#[derive(Debug, Default)]
pub(super) struct Tables {
    kinds: [Table; 5],
    /// Rows a page has stepped over (a page should step over about a page).
    scanned: AtomicU64,
}

impl Tables {
    /// Sets (or replaces) a resource's record.
    pub(super) fn insert(&mut self, kind: ResourceKind, name: &str, record: Record) {
        self.remove(kind, name);
        let user = if kind == ResourceKind::Membership {
            // An undecodable membership is listed (its decode error then
            // surfaces to the reader) but belongs to no user.
            Membership::decode(record.value.as_slice())
                .map(|m| m.user)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let table = &mut self.kinds[slot(kind)];
        table
            .by_org
            .entry(record.organization.clone())
            .or_default()
            .insert(name.to_string());
        if !user.is_empty() {
            table
                .by_user
                .entry(user.clone())
                .or_default()
                .insert(name.to_string());
        }
        table.rows.insert(
            name.to_string(),
            Row {
                record: Arc::new(record),
                user,
            },
        );
    }

    /// Forgets a resource.
    pub(super) fn remove(&mut self, kind: ResourceKind, name: &str) {
        let table = &mut self.kinds[slot(kind)];
        let Some(row) = table.rows.remove(name) else {
            return;
        };
        unlink(&mut table.by_org, &row.record.organization, name);
        if !row.user.is_empty() {
            unlink(&mut table.by_user, &row.user, name);
        }
    }

    /// The page `filter` selects, sorted by name: it steps through the
    /// narrowest sorted range the filter allows (a parent's children, an
    /// organization's names, or everything after `after`), so it costs
    /// about the page.
    pub(super) fn page(&self, kind: ResourceKind, filter: &Filter) -> Vec<(String, Arc<Record>)> {
        let table = &self.kinds[slot(kind)];
        let after = filter.after.as_str();
        let mut scanned = 0u64;
        let mut out = Vec::new();
        let mut take = |name: &str, row: &Row| {
            scanned += 1;
            if filter.matches(name, &row.record.organization) {
                out.push((name.to_string(), row.record.clone()));
            }
            out.len() < filter.limit
        };
        if filter.limit > 0 {
            if let Some(parent) = &filter.parent {
                // Children of `parent` are exactly the names in
                // [`{parent}/`, `{parent}0`): '0' follows '/'.
                let start = format!("{parent}/");
                let lower = if after >= start.as_str() {
                    Bound::Excluded(after)
                } else {
                    Bound::Included(start.as_str())
                };
                for (name, row) in table.rows.range::<str, _>((lower, Bound::Unbounded)) {
                    if !name.starts_with(&start) || !take(name, row) {
                        break;
                    }
                }
            } else if let Some(org) = &filter.organization {
                let names = table.by_org.get(org);
                let range = names
                    .into_iter()
                    .flat_map(|n| n.range::<str, _>((Bound::Excluded(after), Bound::Unbounded)));
                for name in range {
                    if let Some(row) = table.rows.get(name) {
                        if !take(name, row) {
                            break;
                        }
                    }
                }
            } else {
                for (name, row) in table
                    .rows
                    .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
                {
                    if !take(name, row) {
                        break;
                    }
                }
            }
        }
        self.scanned.fetch_add(scanned, Ordering::Relaxed);
        out
    }

    /// The names of `kind` starting with `prefix`, sorted.
    pub(super) fn names_under(&self, kind: ResourceKind, prefix: &str) -> Vec<String> {
        self.kinds[slot(kind)]
            .rows
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(name, _)| name)
            .take_while(|name| name.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The names of a user's memberships, sorted.
    pub(super) fn memberships_of(&self, user: &str) -> Vec<String> {
        self.kinds[slot(ResourceKind::Membership)]
            .by_user
            .get(user)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What `organization` holds, per quota-counted kind.
    pub(super) fn count(&self, organization: &str) -> ResourceCounts {
        let n = |kind| {
            self.kinds[slot(kind)]
                .by_org
                .get(organization)
                .map_or(0, |names| names.len() as i64)
        };
        ResourceCounts {
            projects: n(ResourceKind::Project),
            users: n(ResourceKind::User),
            networks: n(ResourceKind::Network),
            access_rules: n(ResourceKind::AccessRule),
        }
    }

    /// How many resources of each kind, all organizations.
    #[cfg(test)]
    pub(super) fn len(&self, kind: ResourceKind) -> usize {
        self.kinds[slot(kind)].rows.len()
    }

    /// Rows stepped over by pages so far.
    pub(super) fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    /// Applies one bucket entry.
    fn apply(&mut self, key: &str, operation: kv::Operation, value: &[u8]) {
        let Some((kind, name)) = parse_key(key) else {
            return;
        };
        match operation {
            kv::Operation::Put => match Record::decode(value) {
                Ok(record) => self.insert(kind, name, record),
                Err(e) => {
                    // Listed nowhere rather than failing every list; a get
                    // of it still reports the decode error.
                    tracing::warn!(key, error = %e, "kv index: undecodable record skipped");
                    self.remove(kind, name);
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => self.remove(kind, name),
        }
    }
}

#[derive(Debug)]
struct Shared {
    tables: RwLock<Tables>,
    /// The stream sequence of the last entry applied.
    applied: watch::Sender<u64>,
}

/// The index of one bucket, kept current by a task watching it. Dropping it
/// stops the task.
#[derive(Debug)]
pub(super) struct Index {
    shared: Arc<Shared>,
    kv: kv::Store,
    follower: JoinHandle<()>,
}

impl Drop for Index {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Index {
    /// Starts indexing `kv` and waits (up to `budget`) until it holds the
    /// whole bucket as of now, so a daemon serves only with a full index.
    pub(super) async fn open(kv: kv::Store, budget: Duration) -> Result<Index> {
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            tables: RwLock::new(Tables::default()),
            applied,
        });
        let follower = tokio::spawn(follow(kv.clone(), shared.clone()));
        let index = Index {
            shared,
            kv,
            follower,
        };
        index.caught_up(budget).await?;
        Ok(index)
    }

    /// Waits until the index has applied every change the bucket held when
    /// this was called (read-your-writes across instances); UNAVAILABLE when
    /// that takes longer than `budget`.
    pub(super) async fn caught_up(&self, budget: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + budget;
        let info = tokio::time::timeout_at(deadline, self.kv.stream.get_info())
            .await
            .map_err(|_| unavailable("the bucket's stream info timed out"))?
            .map_err(|e| unavailable(format!("the bucket's stream info: {e}")))?;
        let last = info.state.last_sequence;
        let mut applied = self.shared.applied.subscribe();
        let waited = tokio::time::timeout_at(deadline, applied.wait_for(|seq| *seq >= last))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            // The sender lives in `shared`, which we hold: cannot close.
            Ok(false) => Err(unavailable("the index stopped")),
            Err(_) => Err(unavailable(format!(
                "the index is behind the bucket (at {} of {last})",
                *self.shared.applied.borrow()
            ))),
        }
    }

    /// Reads the tables after [`Index::caught_up`].
    pub(super) async fn read<T>(&self, f: impl FnOnce(&Tables) -> T) -> Result<T> {
        self.caught_up(READ_BUDGET).await?;
        Ok(self.read_now(f))
    }

    /// Reads the tables as they are (no wait).
    pub(super) fn read_now<T>(&self, f: impl FnOnce(&Tables) -> T) -> T {
        let tables = self
            .shared
            .tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&tables)
    }
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("JetStream KV index: {e}"))
}

/// Follows the bucket for as long as the index lives
/// ([`nordlys_transport::follow_kv`]: every key's last entry, then each
/// change, resumed after the last one applied).
async fn follow(kv: kv::Store, shared: Arc<Shared>) {
    nordlys_transport::follow_kv(
        &kv,
        ">",
        "kv index",
        || *shared.applied.borrow(),
        |entry| {
            shared
                .tables
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .apply(&entry.key, entry.operation, &entry.value);
            shared.applied.send_replace(entry.revision);
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use nordlys_proto::pb::nordlys::v1::Project;

    use super::*;

    fn record(org: &str) -> Record {
        Record {
            organization: org.into(),
            ..Default::default()
        }
    }

    fn filled() -> Tables {
        let mut t = Tables::default();
        for (name, org) in [
            ("projects/c", "organizations/x"),
            ("projects/a", "organizations/x"),
            ("projects/b", "organizations/y"),
            ("projects/d", "organizations/y"),
            ("projects/e", "organizations/x"),
        ] {
            t.insert(ResourceKind::Project, name, record(org));
        }
        for name in [
            "projects/a/networks/n2",
            "projects/a/networks/n1",
            "projects/ab/networks/n1",
            "projects/a0/networks/n1",
        ] {
            t.insert(ResourceKind::Network, name, record("organizations/x"));
        }
        t
    }

    fn names(page: Vec<(String, Arc<Record>)>) -> Vec<String> {
        page.into_iter().map(|(n, _)| n).collect()
    }

    fn filter(org: Option<&str>, parent: Option<&str>, after: &str, limit: usize) -> Filter {
        Filter {
            organization: org.map(str::to_string),
            parent: parent.map(str::to_string),
            after: after.into(),
            limit,
        }
    }

    #[test]
    fn pages_are_sorted_and_bounded() {
        let t = filled();
        let p = ResourceKind::Project;
        assert_eq!(
            names(t.page(p, &filter(None, None, "", 10))),
            [
                "projects/a",
                "projects/b",
                "projects/c",
                "projects/d",
                "projects/e"
            ]
        );
        assert_eq!(
            names(t.page(p, &filter(None, None, "projects/b", 2))),
            ["projects/c", "projects/d"]
        );
        assert!(t.page(p, &filter(None, None, "projects/e", 2)).is_empty());
        assert!(t.page(p, &filter(None, None, "", 0)).is_empty());
    }

    #[test]
    fn organization_pages_step_over_only_the_organization() {
        let t = filled();
        let p = ResourceKind::Project;
        let before = t.scanned();
        assert_eq!(
            names(t.page(p, &filter(Some("organizations/x"), None, "projects/a", 1))),
            ["projects/c"]
        );
        assert_eq!(t.scanned() - before, 1);
        assert_eq!(
            names(t.page(p, &filter(Some("organizations/y"), None, "", 10))),
            ["projects/b", "projects/d"]
        );
        assert!(t
            .page(p, &filter(Some("organizations/z"), None, "", 10))
            .is_empty());
    }

    #[test]
    fn parent_pages_hold_only_its_children() {
        let t = filled();
        let n = ResourceKind::Network;
        assert_eq!(
            names(t.page(n, &filter(None, Some("projects/a"), "", 10))),
            ["projects/a/networks/n1", "projects/a/networks/n2"]
        );
        assert_eq!(
            names(t.page(
                n,
                &filter(None, Some("projects/a"), "projects/a/networks/n1", 10)
            )),
            ["projects/a/networks/n2"]
        );
        // An `after` before the parent's range starts at the range.
        assert_eq!(
            names(t.page(n, &filter(None, Some("projects/ab"), "projects/a", 10))),
            ["projects/ab/networks/n1"]
        );
        // Both filters apply.
        assert!(t
            .page(
                n,
                &filter(Some("organizations/y"), Some("projects/a"), "", 10)
            )
            .is_empty());
        assert_eq!(
            t.names_under(n, "projects/a/"),
            ["projects/a/networks/n1", "projects/a/networks/n2"]
        );
    }

    #[test]
    fn puts_replace_deletes_forget_and_request_keys_are_ignored() {
        let mut t = filled();
        let p = ResourceKind::Project;
        let moved = Record {
            organization: "organizations/y".into(),
            value: Project::default().encode_to_vec(),
            ..Default::default()
        };
        t.apply("p.projects/a", kv::Operation::Put, &moved.encode_to_vec());
        assert_eq!(t.count("organizations/x").projects, 2);
        assert_eq!(t.count("organizations/y").projects, 3);
        t.apply("p.projects/b", kv::Operation::Delete, &[]);
        t.apply("p.projects/d", kv::Operation::Purge, &[]);
        t.apply("q.p.acme.cmVx", kv::Operation::Put, b"projects/q");
        t.apply("p.projects/bad", kv::Operation::Put, b"\xff\xff");
        assert_eq!(
            names(t.page(p, &filter(None, None, "", 10))),
            ["projects/a", "projects/c", "projects/e"]
        );
        assert_eq!(t.count("organizations/y").projects, 1);
        assert_eq!(t.len(p), 3);
    }

    #[test]
    fn memberships_are_found_by_user_and_counts_by_org() {
        let mut t = filled();
        let m = ResourceKind::Membership;
        for (name, user) in [
            ("projects/a/members/u1", "organizations/x/users/u1"),
            ("projects/c/members/u1", "organizations/x/users/u1"),
            ("projects/c/members/u2", "organizations/x/users/u2"),
        ] {
            let r = Record {
                organization: "organizations/x".into(),
                value: Membership {
                    name: name.into(),
                    user: user.into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                ..Default::default()
            };
            t.insert(m, name, r);
        }
        assert_eq!(
            t.memberships_of("organizations/x/users/u1"),
            ["projects/a/members/u1", "projects/c/members/u1"]
        );
        t.remove(m, "projects/a/members/u1");
        assert_eq!(
            t.memberships_of("organizations/x/users/u1"),
            ["projects/c/members/u1"]
        );
        assert!(t.memberships_of("organizations/x/users/u3").is_empty());
        let counts = t.count("organizations/x");
        assert_eq!((counts.projects, counts.networks), (3, 4));
    }

    #[test]
    fn kinds_cover_every_slot() {
        let kinds = [
            ResourceKind::Project,
            ResourceKind::User,
            ResourceKind::Membership,
            ResourceKind::Network,
            ResourceKind::AccessRule,
        ];
        let mut slots: Vec<usize> = kinds.iter().map(|k| slot(*k)).collect();
        slots.sort();
        assert_eq!(slots, [0, 1, 2, 3, 4]);
    }
}
