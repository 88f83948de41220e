//! The quota arithmetic on one (organization, region) document, with no I/O:
//! reserve, commit, release, free and prune. The store applies these inside a
//! compare-and-set loop, so each function sees and returns one consistent
//! state, and the clock is a parameter so tests can move it.
//!
//! Operation ids (committed reservation ids, give-back operation ids) are
//! remembered so a retry applies nothing twice. The document keeps only the
//! most recent ones ([`RECENT_MAX`]); older ones live in the ops bucket (see
//! [`crate::ops`]). The functions here take the ids the ops bucket knows as
//! `logged`, looked up by the caller before the step runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How long an applied operation id is remembered (a repeated create or
/// give-back within this window is recognized and changes nothing). The ops
/// bucket's max age is the same.
pub const APPLIED_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Applied ids a document holds before the oldest move to the ops bucket.
pub const RECENT_MAX: usize = 64;
/// Applied ids a document keeps after a move: moving down to half rather than
/// to the limit makes one move (one compare-and-set) serve many operations.
pub const RECENT_KEEP: usize = 32;
/// Applied ids beyond which a document takes no new one: only reached when
/// the ops bucket has been unavailable for a while, and what keeps the
/// document bounded even then.
pub const RECENT_HARD_MAX: usize = 1024;
/// Ids moved to the ops bucket in one go, so a move (an old document with
/// many legacy ids) stays a bounded amount of work.
pub const SPILL_BATCH: usize = 512;

/// A kind of resource with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Projects.
    Projects,
    /// Users.
    Users,
    /// Networks.
    Networks,
    /// Access rules.
    AccessRules,
}

impl Kind {
    /// Every kind, in field order.
    pub const ALL: [Kind; 4] = [
        Kind::Projects,
        Kind::Users,
        Kind::Networks,
        Kind::AccessRules,
    ];

    /// The field name, as in `ResourceCounts` and the update mask.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Projects => "projects",
            Kind::Users => "users",
            Kind::Networks => "networks",
            Kind::AccessRules => "access_rules",
        }
    }

    /// Parses a field name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A count per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Projects.
    pub projects: i64,
    /// Users.
    pub users: i64,
    /// Networks.
    pub networks: i64,
    /// Access rules.
    pub access_rules: i64,
}

impl Counts {
    /// The count of one kind.
    pub fn get(&self, kind: Kind) -> i64 {
        match kind {
            Kind::Projects => self.projects,
            Kind::Users => self.users,
            Kind::Networks => self.networks,
            Kind::AccessRules => self.access_rules,
        }
    }

    /// Sets the count of one kind.
    pub fn set(&mut self, kind: Kind, value: i64) {
        match kind {
            Kind::Projects => self.projects = value,
            Kind::Users => self.users = value,
            Kind::Networks => self.networks = value,
            Kind::AccessRules => self.access_rules = value,
        }
    }

    /// Adds `other`, kind by kind (saturating: counts never wrap).
    pub fn add(&mut self, other: &Counts) {
        for k in Kind::ALL {
            self.set(k, self.get(k).saturating_add(other.get(k)));
        }
    }

    /// Subtracts `other`, kind by kind, never going below zero.
    pub fn sub_saturating(&mut self, other: &Counts) {
        for k in Kind::ALL {
            self.set(k, self.get(k).saturating_sub(other.get(k)).max(0));
        }
    }

    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        Kind::ALL.iter().all(|k| self.get(*k) == 0)
    }
}

/// Limits the operator set explicitly; a kind left `None` takes the
/// configured default, so changing the default reaches every organization
/// that was never given its own limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Projects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projects: Option<i64>,
    /// Users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
    /// Networks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<i64>,
    /// Access rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_rules: Option<i64>,
}

impl Limits {
    /// The explicit limit of one kind.
    pub fn get(&self, kind: Kind) -> Option<i64> {
        match kind {
            Kind::Projects => self.projects,
            Kind::Users => self.users,
            Kind::Networks => self.networks,
            Kind::AccessRules => self.access_rules,
        }
    }

    /// Sets (or, with `None`, clears) the explicit limit of one kind.
    pub fn set(&mut self, kind: Kind, value: Option<i64>) {
        match kind {
            Kind::Projects => self.projects = value,
            Kind::Users => self.users = value,
            Kind::Networks => self.networks = value,
            Kind::AccessRules => self.access_rules = value,
        }
    }

    /// The limits in force: explicit where set, else `defaults`.
    pub fn effective(&self, defaults: &Counts) -> Counts {
        let mut out = Counts::default();
        for k in Kind::ALL {
            out.set(k, self.get(k).unwrap_or(defaults.get(k)));
        }
        out
    }

    /// Whether no kind has an explicit limit.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|k| self.get(*k).is_none())
    }
}

/// A pending reservation in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// What it holds in this region.
    pub counts: Counts,
    /// When it lapses (unix milliseconds).
    pub expires_at_ms: i64,
    /// Every region of the reservation, so a commit or release that names
    /// only some of them can find the others.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// The state of an organization's quota in one region, one KV entry
/// (`quota.<org>.<region>`).
///
/// Its size is bounded whatever the traffic: pending reservations are what
/// is in flight (they lapse at their TTL), and applied ids are at most
/// [`RECENT_HARD_MAX`] (normally [`RECENT_MAX`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaDoc {
    /// Limits set by the operator.
    #[serde(skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// What exists.
    pub usage: Counts,
    /// Pending reservations by id.
    pub reservations: BTreeMap<String, Reservation>,
    /// Recently applied operation ids and when they were applied (unix ms).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub applied: BTreeMap<String, i64>,
    /// Committed ids written by earlier versions, which kept every one for a
    /// day. Honoured like `applied`, never added to, and moved to the ops
    /// bucket batch by batch, so old documents shrink. (Their `lapsed` map is
    /// simply dropped: commits now say what they created.)
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub committed: BTreeMap<String, i64>,
}

/// One kind over its limit in this region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The kind.
    pub kind: Kind,
    /// Its limit.
    pub limit: i64,
    /// What exists.
    pub used: i64,
    /// What live reservations hold.
    pub reserved: i64,
    /// What was asked for.
    pub asked: i64,
}

/// What a reserve did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// A new reservation was made.
    New,
    /// The id was already reserved and pending: nothing new was held.
    AlreadyPending,
    /// The id was committed before: nothing was reserved.
    AlreadyCommitted,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// A pending reservation became usage.
    Reservation {
        /// Every region of the reservation.
        regions: Vec<String>,
    },
    /// The id was applied here before: nothing changed.
    AlreadyCommitted,
    /// The reservation was unknown here (lapsed, released or never made) and
    /// the commit said what was created: that was counted. `exceeded` lists
    /// the kinds now over their limit.
    Created {
        /// Kinds over their limit after counting it.
        exceeded: Vec<Exceeded>,
    },
    /// Nothing is known about the id and the commit did not say what was
    /// created: only the id was recorded.
    Unknown,
}

/// Why an operation id could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl QuotaDoc {
    /// The sum of live reservations at `now_ms`.
    pub fn reserved(&self, now_ms: i64) -> Counts {
        let mut sum = Counts::default();
        for r in self.reservations.values() {
            if r.expires_at_ms > now_ms {
                sum.add(&r.counts);
            }
        }
        sum
    }

    /// Drops lapsed reservations (a late commit says what it created, so
    /// nothing of them needs keeping) and applied ids older than their
    /// retention.
    pub fn prune(&mut self, now_ms: i64) {
        self.reservations.retain(|_, r| r.expires_at_ms > now_ms);
        let fresh = |at: &i64| now_ms.saturating_sub(*at) < APPLIED_RETENTION_MS;
        self.applied.retain(|_, at| fresh(at));
        self.committed.retain(|_, at| fresh(at));
    }

    /// Whether operation `id` was applied here: in this document, or among
    /// the ids the ops bucket knows (`logged`).
    pub fn was_applied(&self, id: &str, logged: &BTreeSet<String>) -> bool {
        self.applied.contains_key(id) || self.committed.contains_key(id) || logged.contains(id)
    }

    /// Whether the document alone knows `id` as applied, so the ops bucket
    /// need not be asked.
    pub fn knows_applied(&self, id: &str) -> bool {
        self.applied.contains_key(id) || self.committed.contains_key(id)
    }

    /// Remembers operation `id` as applied at `now_ms`; [`Full`] when the
    /// document holds [`RECENT_HARD_MAX`] ids already.
    fn record(&mut self, id: &str, now_ms: i64) -> Result<(), Full> {
        if self.applied.len() >= RECENT_HARD_MAX {
            return Err(Full);
        }
        self.applied.insert(id.to_string(), now_ms);
        Ok(())
    }

    /// Whether the document holds more applied ids than it should keep.
    pub fn needs_spill(&self) -> bool {
        self.applied.len() > RECENT_MAX || !self.committed.is_empty()
    }

    /// The applied ids to move to the ops bucket: the oldest beyond
    /// [`RECENT_KEEP`] when over [`RECENT_MAX`], and legacy committed ids, at
    /// most [`SPILL_BATCH`] in all.
    pub fn spill_candidates(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        if self.applied.len() > RECENT_MAX {
            let mut by_age: Vec<(&String, &i64)> = self.applied.iter().collect();
            by_age.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
            let excess = self.applied.len() - RECENT_KEEP;
            out.extend(
                by_age
                    .into_iter()
                    .take(excess.min(SPILL_BATCH))
                    .map(|(id, at)| (id.clone(), *at)),
            );
        }
        let room = SPILL_BATCH.saturating_sub(out.len());
        out.extend(
            self.committed
                .iter()
                .take(room)
                .map(|(id, at)| (id.clone(), *at)),
        );
        out
    }

    /// Forgets applied ids that are now in the ops bucket. Returns whether
    /// anything changed.
    pub fn forget_spilled(&mut self, ids: &[(String, i64)]) -> bool {
        let mut changed = false;
        for (id, _) in ids {
            changed |= self.applied.remove(id).is_some();
            changed |= self.committed.remove(id).is_some();
        }
        changed
    }

    /// The kinds for which `asked` does not fit next to usage and live
    /// reservations. Kinds not asked for are not checked: a limit lowered
    /// below usage refuses only creates of that kind.
    pub fn check(&self, asked: &Counts, defaults: &Counts, now_ms: i64) -> Vec<Exceeded> {
        let limits = self.limits.effective(defaults);
        let reserved = self.reserved(now_ms);
        Kind::ALL
            .into_iter()
            .filter(|k| asked.get(*k) > 0)
            .filter_map(|kind| {
                let (limit, used, held, want) = (
                    limits.get(kind),
                    self.usage.get(kind),
                    reserved.get(kind),
                    asked.get(kind),
                );
                let total = used.saturating_add(held).saturating_add(want);
                (total > limit).then_some(Exceeded {
                    kind,
                    limit,
                    used,
                    reserved: held,
                    asked: want,
                })
            })
            .collect()
    }

    /// Reserves `counts` under `id` until `expires_at_ms`, unless the id was
    /// applied (nothing happens) or is already pending (nothing more is
    /// held; the later expiry is kept, since the caller is still working).
    #[allow(clippy::too_many_arguments)]
    pub fn reserve(
        &mut self,
        id: &str,
        counts: &Counts,
        regions: &[String],
        expires_at_ms: i64,
        defaults: &Counts,
        now_ms: i64,
        logged: &BTreeSet<String>,
    ) -> Result<Reserved, Vec<Exceeded>> {
        self.prune(now_ms);
        if let Some(existing) = self.reservations.get_mut(id) {
            existing.expires_at_ms = existing.expires_at_ms.max(expires_at_ms);
            return Ok(Reserved::AlreadyPending);
        }
        if self.was_applied(id, logged) {
            return Ok(Reserved::AlreadyCommitted);
        }
        let exceeded = self.check(counts, defaults, now_ms);
        if !exceeded.is_empty() {
            return Err(exceeded);
        }
        self.reservations.insert(
            id.to_string(),
            Reservation {
                counts: *counts,
                expires_at_ms,
                regions: regions.to_vec(),
            },
        );
        Ok(Reserved::New)
    }

    /// Commits reservation `id` in this region, at most once.
    ///
    /// A pending reservation becomes usage. An unknown one (lapsed, released
    /// or never made here) counts `created` when the caller said what it
    /// created: the resource exists, and usage must say what exists even
    /// when that is over the limit (the caller logs that, and later reserves
    /// are refused until usage falls back). Without `created` only the id is
    /// recorded.
    pub fn commit(
        &mut self,
        id: &str,
        created: Option<&Counts>,
        defaults: &Counts,
        now_ms: i64,
        logged: &BTreeSet<String>,
    ) -> Result<Committed, Full> {
        self.prune(now_ms);
        if let Some(r) = self.reservations.get(id) {
            let (counts, regions) = (r.counts, r.regions.clone());
            self.record(id, now_ms)?;
            self.reservations.remove(id);
            self.usage.add(&counts);
            return Ok(Committed::Reservation { regions });
        }
        if self.was_applied(id, logged) {
            return Ok(Committed::AlreadyCommitted);
        }
        self.record(id, now_ms)?;
        Ok(match created {
            Some(counts) => {
                let exceeded = self.check(counts, defaults, now_ms);
                self.usage.add(counts);
                Committed::Created { exceeded }
            }
            None => Committed::Unknown,
        })
    }

    /// Drops pending reservation `id`. Returns the regions of the
    /// reservation when it was pending here.
    pub fn release(&mut self, id: &str, now_ms: i64) -> Option<Vec<String>> {
        self.prune(now_ms);
        self.reservations.remove(id).map(|r| r.regions)
    }

    /// Gives back usage after a delete, never going below zero, with no
    /// deduplication.
    pub fn free(&mut self, counts: &Counts, now_ms: i64) {
        self.prune(now_ms);
        self.usage.sub_saturating(counts);
    }

    /// Gives back `counts` for removal `operation_id`, at most once. Returns
    /// whether it was applied now (false: it had been before).
    pub fn free_once(
        &mut self,
        operation_id: &str,
        counts: &Counts,
        now_ms: i64,
        logged: &BTreeSet<String>,
    ) -> Result<bool, Full> {
        self.prune(now_ms);
        if self.was_applied(operation_id, logged) {
            return Ok(false);
        }
        self.record(operation_id, now_ms)?;
        self.usage.sub_saturating(counts);
        Ok(true)
    }

    /// The regions a pending reservation id spans, from this document.
    pub fn regions_of(&self, id: &str) -> Option<&[String]> {
        self.reservations.get(id).map(|r| r.regions.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const DEFAULTS: Counts = Counts {
        projects: 2,
        users: 5,
        networks: 3,
        access_rules: 10,
    };

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn projects(n: i64) -> Counts {
        Counts {
            projects: n,
            ..Counts::default()
        }
    }

    fn regions() -> Vec<String> {
        vec!["sto1".to_string()]
    }

    fn reserve(
        doc: &mut QuotaDoc,
        id: &str,
        c: Counts,
        now: i64,
    ) -> Result<Reserved, Vec<Exceeded>> {
        doc.reserve(id, &c, &regions(), now + 60_000, &DEFAULTS, now, &none())
    }

    fn commit(doc: &mut QuotaDoc, id: &str, now: i64) -> Committed {
        doc.commit(id, None, &DEFAULTS, now, &none())
            .expect("room for the id")
    }

    #[test]
    fn reserve_within_limit_then_refuse() {
        let mut doc = QuotaDoc::default();
        assert_eq!(reserve(&mut doc, "a", projects(1), NOW), Ok(Reserved::New));
        assert_eq!(reserve(&mut doc, "b", projects(1), NOW), Ok(Reserved::New));
        let err = reserve(&mut doc, "c", projects(1), NOW).expect_err("over the limit");
        assert_eq!(
            err,
            vec![Exceeded {
                kind: Kind::Projects,
                limit: 2,
                used: 0,
                reserved: 2,
                asked: 1
            }]
        );
        assert_eq!(doc.reserved(NOW), projects(2));
        assert!(!doc.reservations.contains_key("c"), "nothing half-written");
    }

    #[test]
    fn every_exceeded_kind_is_reported() {
        let mut doc = QuotaDoc::default();
        let asked = Counts {
            projects: 3,
            users: 1,
            networks: 4,
            access_rules: 0,
        };
        let err = reserve(&mut doc, "a", asked, NOW).expect_err("over");
        let kinds: Vec<Kind> = err.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![Kind::Projects, Kind::Networks]);
    }

    #[test]
    fn repeated_id_reserves_once() {
        let mut doc = QuotaDoc::default();
        assert_eq!(reserve(&mut doc, "a", projects(1), NOW), Ok(Reserved::New));
        assert_eq!(
            reserve(&mut doc, "a", projects(1), NOW + 10),
            Ok(Reserved::AlreadyPending)
        );
        assert_eq!(doc.reserved(NOW + 10), projects(1));
        // The retry extended the reservation.
        assert_eq!(doc.reservations["a"].expires_at_ms, NOW + 10 + 60_000);
    }

    #[test]
    fn committed_id_reserves_nothing() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        assert!(matches!(
            commit(&mut doc, "a", NOW + 1),
            Committed::Reservation { .. }
        ));
        assert_eq!(doc.usage, projects(1));
        assert_eq!(
            reserve(&mut doc, "a", projects(1), NOW + 2),
            Ok(Reserved::AlreadyCommitted)
        );
        assert_eq!(doc.usage, projects(1));
        assert_eq!(doc.reserved(NOW + 2), Counts::default());
    }

    #[test]
    fn an_id_in_the_ops_bucket_counts_as_applied() {
        let mut doc = QuotaDoc::default();
        let logged: BTreeSet<String> = ["old".to_string()].into();
        assert_eq!(
            doc.reserve(
                "old",
                &projects(1),
                &regions(),
                NOW + 1,
                &DEFAULTS,
                NOW,
                &logged
            ),
            Ok(Reserved::AlreadyCommitted)
        );
        assert_eq!(
            doc.commit("old", Some(&projects(1)), &DEFAULTS, NOW, &logged),
            Ok(Committed::AlreadyCommitted)
        );
        assert_eq!(doc.free_once("old", &projects(1), NOW, &logged), Ok(false));
        assert_eq!(doc.usage, Counts::default());
        assert!(doc.applied.is_empty());
    }

    #[test]
    fn commit_twice_is_a_no_op() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        commit(&mut doc, "a", NOW);
        assert_eq!(commit(&mut doc, "a", NOW), Committed::AlreadyCommitted);
        assert_eq!(
            doc.commit("a", Some(&projects(1)), &DEFAULTS, NOW, &none()),
            Ok(Committed::AlreadyCommitted)
        );
        assert_eq!(doc.usage, projects(1));
    }

    #[test]
    fn commit_is_idempotent_per_region() {
        // One reservation over two regions, each its own document: each
        // region's commit counts once, whatever the other does.
        let both = vec!["sto1".to_string(), "osl1".to_string()];
        let mut sto1 = QuotaDoc::default();
        let mut osl1 = QuotaDoc::default();
        for doc in [&mut sto1, &mut osl1] {
            doc.reserve(
                "r",
                &projects(1),
                &both,
                NOW + 60_000,
                &DEFAULTS,
                NOW,
                &none(),
            )
            .expect("fits");
        }
        let created = projects(1);
        for _ in 0..3 {
            sto1.commit("r", Some(&created), &DEFAULTS, NOW + 1, &none())
                .expect("room");
        }
        assert_eq!(sto1.usage, projects(1));
        // osl1 still holds its reservation: its own daemon commits it.
        assert_eq!(osl1.reserved(NOW + 1), projects(1));
        assert_eq!(
            osl1.commit("r", Some(&created), &DEFAULTS, NOW + 2, &none()),
            Ok(Committed::Reservation { regions: both })
        );
        assert_eq!(osl1.usage, projects(1));
    }

    #[test]
    fn created_counts_of_an_unknown_reservation_are_counted() {
        let mut doc = QuotaDoc::default();
        // It lapsed and was pruned: the document forgets it entirely.
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        let later = NOW + 61_000;
        doc.prune(later);
        assert!(doc.reservations.is_empty());
        assert_eq!(
            doc.commit("a", Some(&projects(1)), &DEFAULTS, later, &none()),
            Ok(Committed::Created { exceeded: vec![] })
        );
        assert_eq!(doc.usage, projects(1));
        // Again: counted once.
        assert_eq!(
            doc.commit("a", Some(&projects(1)), &DEFAULTS, later, &none()),
            Ok(Committed::AlreadyCommitted)
        );
        assert_eq!(doc.usage, projects(1));
    }

    #[test]
    fn created_counts_over_the_limit_still_count_and_say_so() {
        let mut doc = QuotaDoc {
            usage: projects(2),
            ..QuotaDoc::default()
        };
        match doc.commit("x", Some(&projects(1)), &DEFAULTS, NOW, &none()) {
            Ok(Committed::Created { exceeded }) => {
                assert_eq!(exceeded.len(), 1);
                assert_eq!(exceeded[0].kind, Kind::Projects);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(doc.usage, projects(3), "usage says what exists");
        assert!(reserve(&mut doc, "y", projects(1), NOW).is_err());
    }

    #[test]
    fn unknown_commit_without_created_records_the_id_only() {
        let mut doc = QuotaDoc::default();
        assert_eq!(commit(&mut doc, "zzz", NOW), Committed::Unknown);
        assert_eq!(doc.usage, Counts::default());
        assert_eq!(
            reserve(&mut doc, "zzz", projects(1), NOW),
            Ok(Reserved::AlreadyCommitted)
        );
    }

    #[test]
    fn expired_reservations_free_quota_and_are_forgotten() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(2), NOW).expect("fits");
        assert!(reserve(&mut doc, "b", projects(1), NOW + 59_999).is_err());
        assert_eq!(doc.reserved(NOW + 60_000), Counts::default());
        assert_eq!(
            reserve(&mut doc, "b", projects(1), NOW + 60_000),
            Ok(Reserved::New)
        );
        assert!(!doc.reservations.contains_key("a"));
    }

    #[test]
    fn release_drops_pending() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        assert_eq!(doc.release("a", NOW), Some(regions()));
        assert_eq!(doc.reserved(NOW), Counts::default());
        assert_eq!(doc.release("a", NOW), None);
        // A released id can be reserved again (it was never committed).
        assert_eq!(reserve(&mut doc, "a", projects(1), NOW), Ok(Reserved::New));
    }

    #[test]
    fn free_saturates_at_zero() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        commit(&mut doc, "a", NOW);
        doc.free(&projects(5), NOW);
        assert_eq!(doc.usage, Counts::default());
    }

    #[test]
    fn free_once_gives_back_once() {
        let mut doc = QuotaDoc {
            usage: projects(3),
            ..QuotaDoc::default()
        };
        assert_eq!(doc.free_once("d1", &projects(1), NOW, &none()), Ok(true));
        assert_eq!(doc.free_once("d1", &projects(1), NOW, &none()), Ok(false));
        assert_eq!(doc.usage, projects(2));
        assert_eq!(doc.free_once("d2", &projects(1), NOW, &none()), Ok(true));
        assert_eq!(doc.usage, projects(1));
    }

    #[test]
    fn applied_ids_are_forgotten_after_a_day() {
        let mut doc = QuotaDoc::default();
        commit(&mut doc, "a", NOW);
        doc.prune(NOW + APPLIED_RETENTION_MS - 1);
        assert!(doc.applied.contains_key("a"));
        doc.prune(NOW + APPLIED_RETENTION_MS);
        assert!(doc.applied.is_empty());
    }

    #[test]
    fn the_recent_map_is_bounded() {
        let mut doc = QuotaDoc::default();
        let mut spilled = BTreeSet::new();
        for i in 0..10_000i64 {
            let id = format!("r{i}");
            reserve(&mut doc, &id, projects(0), NOW + i).expect("fits");
            doc.commit(&id, None, &DEFAULTS, NOW + i, &spilled)
                .expect("room");
            if doc.needs_spill() {
                let moved = doc.spill_candidates();
                assert_eq!(moved.len(), RECENT_MAX + 1 - RECENT_KEEP);
                // The oldest go first.
                assert!(moved
                    .iter()
                    .all(|(_, at)| *at <= NOW + i - RECENT_KEEP as i64));
                spilled.extend(moved.iter().map(|(id, _)| id.clone()));
                assert!(doc.forget_spilled(&moved));
            }
            assert!(doc.applied.len() <= RECENT_MAX);
        }
        // Every id is still known as applied, in the document or moved.
        for i in [0, 5_000, 9_999] {
            assert!(doc.was_applied(&format!("r{i}"), &spilled));
        }
        let json = serde_json::to_vec(&doc).expect("serializes");
        assert!(json.len() < 4096, "{} bytes", json.len());
    }

    #[test]
    fn a_full_document_takes_no_new_ids() {
        let mut doc = QuotaDoc::default();
        for i in 0..RECENT_HARD_MAX {
            doc.free_once(&format!("d{i}"), &projects(0), NOW, &none())
                .expect("room");
        }
        assert_eq!(
            doc.free_once("one-more", &projects(1), NOW, &none()),
            Err(Full)
        );
        assert_eq!(
            doc.commit("c", Some(&projects(1)), &DEFAULTS, NOW, &none()),
            Err(Full)
        );
        assert_eq!(doc.usage, Counts::default(), "nothing half-applied");
    }

    #[test]
    fn legacy_documents_are_read_and_their_ids_honoured() {
        let json = r#"{"usage":{"projects":1},"reservations":{},
            "committed":{"old":1000000},
            "lapsed":{"gone":{"counts":{"projects":1},"lapsed_at_ms":1000000,"regions":["sto1"]}}}"#;
        let mut doc: QuotaDoc = serde_json::from_str(json).expect("parses");
        assert_eq!(
            reserve(&mut doc, "old", projects(1), NOW),
            Ok(Reserved::AlreadyCommitted)
        );
        assert!(doc.needs_spill(), "legacy ids move out");
        let moved = doc.spill_candidates();
        assert_eq!(moved, vec![("old".to_string(), 1_000_000)]);
        doc.forget_spilled(&moved);
        let back = serde_json::to_string(&doc).expect("serializes");
        assert!(
            !back.contains("lapsed") && !back.contains("committed"),
            "{back}"
        );
    }

    #[test]
    fn explicit_limits_override_defaults_per_kind() {
        let mut doc = QuotaDoc::default();
        doc.limits.set(Kind::Projects, Some(0));
        assert_eq!(
            doc.limits.effective(&DEFAULTS),
            Counts {
                projects: 0,
                ..DEFAULTS
            }
        );
        assert!(reserve(&mut doc, "a", projects(1), NOW).is_err());
        // Kinds not asked for are not checked, even when over.
        doc.usage.projects = 7;
        let users = Counts {
            users: 1,
            ..Counts::default()
        };
        assert_eq!(reserve(&mut doc, "b", users, NOW), Ok(Reserved::New));
    }

    #[test]
    fn documents_round_trip_through_json() {
        let mut doc = QuotaDoc::default();
        doc.limits.set(Kind::Networks, Some(4));
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        commit(&mut doc, "a", NOW);
        reserve(&mut doc, "b", projects(1), NOW).expect("fits");
        let json = serde_json::to_string(&doc).expect("serializes");
        let back: QuotaDoc = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, doc);
        let empty: QuotaDoc = serde_json::from_str("{}").expect("defaults");
        assert_eq!(empty, QuotaDoc::default());
    }
}
