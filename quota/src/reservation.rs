//! The quota arithmetic on one (organization, region) document, with no I/O:
//! reserve, commit, release, free and prune. The store applies these inside a
//! compare-and-set loop, so each function sees and returns one consistent
//! state, and the clock is a parameter so tests can move it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How long a committed reservation id is remembered (a repeated create
/// within this window is recognized and reserves nothing).
pub const COMMITTED_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a lapsed reservation is remembered, so a late commit still knows
/// what to count.
pub const LAPSED_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

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

/// A reservation that lapsed before it was committed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lapsed {
    /// What it held in this region.
    pub counts: Counts,
    /// When it lapsed (unix milliseconds).
    pub lapsed_at_ms: i64,
    /// Every region of the reservation.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// The state of an organization's quota in one region, one KV entry
/// (`quota.<org>.<region>`).
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
    /// Committed reservation ids and when they were committed (unix ms).
    pub committed: BTreeMap<String, i64>,
    /// Reservations that lapsed, by id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lapsed: BTreeMap<String, Lapsed>,
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
    /// The id was committed before: nothing changed.
    AlreadyCommitted,
    /// The reservation had lapsed; its counts were added to usage anyway.
    /// `exceeded` lists the kinds that are now over their limit.
    Lapsed {
        /// Every region of the reservation.
        regions: Vec<String>,
        /// Kinds over their limit after counting it.
        exceeded: Vec<Exceeded>,
    },
    /// Nothing is known about the id (never reserved here, or forgotten):
    /// only the id was recorded.
    Unknown,
}

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

    /// Moves lapsed reservations aside and forgets committed ids and lapsed
    /// reservations older than their retention, so a gateway that crashed
    /// between reserve and commit never holds quota for long.
    pub fn prune(&mut self, now_ms: i64) {
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires_at_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(r) = self.reservations.remove(&id) {
                self.lapsed.insert(
                    id,
                    Lapsed {
                        counts: r.counts,
                        lapsed_at_ms: r.expires_at_ms,
                        regions: r.regions,
                    },
                );
            }
        }
        self.committed
            .retain(|_, at| now_ms.saturating_sub(*at) < COMMITTED_RETENTION_MS);
        self.lapsed
            .retain(|_, l| now_ms.saturating_sub(l.lapsed_at_ms) < LAPSED_RETENTION_MS);
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
    /// committed (nothing happens) or is already pending (nothing more is
    /// held; the later expiry is kept, since the caller is still working).
    pub fn reserve(
        &mut self,
        id: &str,
        counts: &Counts,
        regions: &[String],
        expires_at_ms: i64,
        defaults: &Counts,
        now_ms: i64,
    ) -> Result<Reserved, Vec<Exceeded>> {
        self.prune(now_ms);
        if self.committed.contains_key(id) {
            return Ok(Reserved::AlreadyCommitted);
        }
        if let Some(existing) = self.reservations.get_mut(id) {
            existing.expires_at_ms = existing.expires_at_ms.max(expires_at_ms);
            return Ok(Reserved::AlreadyPending);
        }
        let exceeded = self.check(counts, defaults, now_ms);
        if !exceeded.is_empty() {
            return Err(exceeded);
        }
        self.lapsed.remove(id);
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

    /// Turns reservation `id` into usage and remembers the id as committed.
    ///
    /// A lapsed reservation is still counted: the resource it was for exists
    /// now, and usage must say what exists or the organization could go
    /// further over its limit unnoticed. Counting it may put usage above the
    /// limit; the caller logs that, and later reserves are refused until
    /// usage falls back. An id never seen is only recorded as committed: with
    /// no counts there is nothing to add.
    pub fn commit(&mut self, id: &str, defaults: &Counts, now_ms: i64) -> Committed {
        self.prune(now_ms);
        if self.committed.contains_key(id) {
            return Committed::AlreadyCommitted;
        }
        let outcome = if let Some(r) = self.reservations.remove(id) {
            self.usage.add(&r.counts);
            Committed::Reservation { regions: r.regions }
        } else if let Some(l) = self.lapsed.remove(id) {
            let exceeded = self.check(&l.counts, defaults, now_ms);
            self.usage.add(&l.counts);
            Committed::Lapsed {
                regions: l.regions,
                exceeded,
            }
        } else {
            Committed::Unknown
        };
        self.committed.insert(id.to_string(), now_ms);
        outcome
    }

    /// Drops reservation `id` (pending or lapsed). Returns the regions of the
    /// reservation when it was known here.
    pub fn release(&mut self, id: &str, now_ms: i64) -> Option<Vec<String>> {
        self.prune(now_ms);
        if let Some(r) = self.reservations.remove(id) {
            return Some(r.regions);
        }
        self.lapsed.remove(id).map(|l| l.regions)
    }

    /// Gives back usage after a delete, never going below zero.
    pub fn free(&mut self, counts: &Counts, now_ms: i64) {
        self.prune(now_ms);
        self.usage.sub_saturating(counts);
    }

    /// The regions a reservation id is known to span, from this document.
    pub fn regions_of(&self, id: &str) -> Option<&[String]> {
        self.reservations
            .get(id)
            .map(|r| r.regions.as_slice())
            .or_else(|| self.lapsed.get(id).map(|l| l.regions.as_slice()))
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
        doc.reserve(id, &c, &regions(), now + 60_000, &DEFAULTS, now)
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
            doc.commit("a", &DEFAULTS, NOW + 1),
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
    fn commit_twice_is_a_no_op() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        doc.commit("a", &DEFAULTS, NOW);
        assert_eq!(doc.commit("a", &DEFAULTS, NOW), Committed::AlreadyCommitted);
        assert_eq!(doc.usage, projects(1));
    }

    #[test]
    fn expired_reservations_free_quota() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(2), NOW).expect("fits");
        assert!(reserve(&mut doc, "b", projects(1), NOW + 59_999).is_err());
        // At the expiry the reservation no longer counts.
        assert_eq!(doc.reserved(NOW + 60_000), Counts::default());
        assert_eq!(
            reserve(&mut doc, "b", projects(1), NOW + 60_000),
            Ok(Reserved::New)
        );
        assert!(!doc.reservations.contains_key("a"));
        assert!(doc.lapsed.contains_key("a"));
    }

    #[test]
    fn lapsed_commit_still_counts_and_reports_overrun() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(2), NOW).expect("fits");
        let later = NOW + 61_000;
        reserve(&mut doc, "b", projects(2), later).expect("a lapsed, b fits");
        match doc.commit("a", &DEFAULTS, later) {
            Committed::Lapsed { exceeded, regions } => {
                assert_eq!(regions, vec!["sto1".to_string()]);
                assert_eq!(exceeded.len(), 1);
                assert_eq!(exceeded[0].kind, Kind::Projects);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(doc.usage, projects(2));
        // b still holds its reservation; nothing more fits.
        assert!(reserve(&mut doc, "c", projects(1), later).is_err());
    }

    #[test]
    fn lapsed_commit_that_fits_reports_nothing() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        match doc.commit("a", &DEFAULTS, NOW + 70_000) {
            Committed::Lapsed { exceeded, .. } => assert!(exceeded.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(doc.usage, projects(1));
    }

    #[test]
    fn unknown_commit_records_the_id_only() {
        let mut doc = QuotaDoc::default();
        assert_eq!(doc.commit("zzz", &DEFAULTS, NOW), Committed::Unknown);
        assert_eq!(doc.usage, Counts::default());
        assert_eq!(
            reserve(&mut doc, "zzz", projects(1), NOW),
            Ok(Reserved::AlreadyCommitted)
        );
    }

    #[test]
    fn release_drops_pending_and_lapsed() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        assert_eq!(doc.release("a", NOW), Some(regions()));
        assert_eq!(doc.reserved(NOW), Counts::default());
        assert_eq!(doc.release("a", NOW), None);
        reserve(&mut doc, "b", projects(1), NOW).expect("fits");
        assert_eq!(doc.release("b", NOW + 100_000), Some(regions()));
        assert!(doc.lapsed.is_empty());
        // A released id can be reserved again (it was never committed).
        assert_eq!(
            reserve(&mut doc, "b", projects(1), NOW + 100_000),
            Ok(Reserved::New)
        );
    }

    #[test]
    fn free_saturates_at_zero() {
        let mut doc = QuotaDoc::default();
        reserve(&mut doc, "a", projects(1), NOW).expect("fits");
        doc.commit("a", &DEFAULTS, NOW);
        doc.free(&projects(5), NOW);
        assert_eq!(doc.usage, Counts::default());
    }

    #[test]
    fn committed_ids_are_forgotten_after_a_day() {
        let mut doc = QuotaDoc::default();
        doc.commit("a", &DEFAULTS, NOW);
        doc.prune(NOW + COMMITTED_RETENTION_MS - 1);
        assert!(doc.committed.contains_key("a"));
        doc.prune(NOW + COMMITTED_RETENTION_MS);
        assert!(doc.committed.is_empty());
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
        doc.commit("a", &DEFAULTS, NOW);
        reserve(&mut doc, "b", projects(1), NOW).expect("fits");
        let json = serde_json::to_string(&doc).expect("serializes");
        let back: QuotaDoc = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, doc);
        let empty: QuotaDoc = serde_json::from_str("{}").expect("defaults");
        assert_eq!(empty, QuotaDoc::default());
    }
}
