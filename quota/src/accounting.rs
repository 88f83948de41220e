//! Reserve, Commit, Release and Free: the quota arithmetic of
//! [`reservation`](crate::reservation) applied region by region, each region
//! one compare-and-set on its `quota.<org>.<region>` document.

use std::collections::{BTreeMap, BTreeSet};

use nordlys_api::{names, validate, Violations};
use nordlys_proto::pb::nordlys::quota::v1 as q;
use nordlys_transport::Role;
use tonic::{Request, Status};

use crate::admin::counts_from;
use crate::auth::{identity, require_role};
use crate::metrics::{Outcome, METRICS};
use crate::reservation::{Committed, Counts, Exceeded, Kind, QuotaDoc, Reserved};
use crate::status::quota_exceeded;
use crate::store::{self, Write};
use crate::{now_ms, Controller};

/// The longest reservation a caller may ask for: a create that takes longer
/// than this is better retried than allowed to hold quota.
const MAX_TTL_SECONDS: u32 = 3600;

/// A reservation or operation id: 1 to 64 of letters, digits, `.`, `_`,
/// `:`, `-` (what `nordlys_api::ids::reservation` makes, and any request id).
fn check_op_id(v: &mut Violations, field: &str, id: &str) {
    v.check(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')),
        field,
        "is required: 1 to 64 letters, digits, '.', '_', ':' or '-'",
    );
}

fn check_reservation_id(v: &mut Violations, id: &str) {
    check_op_id(v, "reservation_id", id);
}

/// Counts not negative, kind by kind, under `field`.
fn check_counts(v: &mut Violations, field: &str, counts: &Counts) {
    for k in Kind::ALL {
        v.check(
            counts.get(k) >= 0,
            &format!("{field}.counts.{}", k.as_str()),
            "must not be negative",
        );
    }
}

/// One give-back of [`check_changes`]: operation id, region, counts.
type Change = (String, String, Counts);

/// Checks `changes` (operation ids, regions, counts not negative).
fn check_changes(v: &mut Violations, changes: &[q::UsageChange]) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let field = format!("changes[{i}]");
        check_op_id(v, &format!("{field}.operation_id"), &change.operation_id);
        if !validate::is_region(&change.region) {
            v.add(
                format!("{field}.region"),
                "must be a region id: 1 to 32 lowercase letters, digits and hyphens",
            );
        }
        let counts = change.counts.as_ref().map(counts_from).unwrap_or_default();
        check_counts(v, &field, &counts);
        out.push((change.operation_id.clone(), change.region.clone(), counts));
    }
    out
}

/// UNAVAILABLE when a document holds as many applied ids as it may: the ops
/// bucket has not taken the older ones for a while.
fn full() -> Status {
    Status::unavailable("too many operations await their move to the ops bucket; retry")
}

fn check_organization<'a>(v: &mut Violations, name: &'a str) -> &'a str {
    match names::parse(name, &["organizations"]) {
        Some(ids) => ids[0],
        None => {
            v.add(
                "organization",
                "must be a resource name of the form organizations/{id}",
            );
            ""
        }
    }
}

/// Checks `items` (a list named `name`: regions once each, counts not
/// negative) and returns them as (region, counts).
fn check_items(v: &mut Violations, name: &str, items: &[q::RegionCounts]) -> Vec<(String, Counts)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("{name}[{i}]");
        if !validate::is_region(&item.region) {
            v.add(
                format!("{field}.region"),
                "must be a region id: 1 to 32 lowercase letters, digits and hyphens",
            );
        } else if !seen.insert(item.region.clone()) {
            v.add(format!("{field}.region"), "appears more than once");
        }
        let counts = item.counts.as_ref().map(counts_from).unwrap_or_default();
        check_counts(v, &field, &counts);
        out.push((item.region.clone(), counts));
    }
    out
}

/// Checks a list of regions; duplicates are dropped, order kept.
fn check_regions(v: &mut Violations, regions: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        if !validate::is_region(r) {
            v.add(
                format!("regions[{i}]"),
                "must be a region id: 1 to 32 lowercase letters, digits and hyphens",
            );
        } else if seen.insert(r.clone()) {
            out.push(r.clone());
        }
    }
    out
}

/// What a reserve or commit of `id` needs from the ops bucket: whether `id`
/// was applied, unless the document holds it pending or applied.
fn unknown_unless_pending(id: &str) -> impl Fn(Option<&QuotaDoc>) -> Vec<String> + Send + 'static {
    let id = id.to_string();
    move |doc: Option<&QuotaDoc>| match doc {
        Some(d) if d.reservations.contains_key(&id) || d.knows_applied(&id) => Vec::new(),
        _ => vec![id.clone()],
    }
}

impl Controller {
    pub(crate) async fn reserve_quota(
        &self,
        request: Request<q::ReserveRequest>,
    ) -> Result<q::ReserveResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        check_reservation_id(&mut v, &r.reservation_id);
        let org = check_organization(&mut v, &r.organization);
        if r.items.is_empty() {
            v.add("items", "at least one region is required");
        }
        let items = check_items(&mut v, "items", &r.items);
        v.check(
            r.ttl_seconds <= MAX_TTL_SECONDS,
            "ttl_seconds",
            format!("must be at most {MAX_TTL_SECONDS} (0 for the default)"),
        );
        v.into_result()?;
        require_role(
            &caller,
            org,
            Role::Member,
            &format!("reserve quota in {}", r.organization),
        )?;
        let tier = self.org_exists_for_quota(org).await?;

        let id = r.reservation_id.as_str();
        let ttl_ms = if r.ttl_seconds == 0 {
            i64::try_from(self.config.reservation_ttl().as_millis()).unwrap_or(i64::MAX)
        } else {
            i64::from(r.ttl_seconds) * 1000
        };
        let regions: Vec<String> = items.iter().map(|(region, _)| region.clone()).collect();
        let defaults = self.config.default_limits;

        // Region by region; the first refusal turns the rest into checks
        // only (to report every violation), and what this call reserved is
        // given back: all or nothing.
        let mut newly_reserved: Vec<&str> = Vec::new();
        let mut exceeded: Vec<(String, Vec<Exceeded>)> = Vec::new();
        let mut already_committed = false;
        let mut failure: Option<Status> = None;
        for (region, counts) in &items {
            let key = store::quota_key(org, region);
            let now = now_ms();
            if !exceeded.is_empty() {
                match self.store.get::<QuotaDoc>(&key).await {
                    Ok(doc) => {
                        let mut doc = doc.map(|d| d.value).unwrap_or_default();
                        doc.prune(now);
                        let logged = if doc.reservations.contains_key(id) {
                            BTreeSet::new()
                        } else {
                            self.logged_among(org, region, Some(&doc), [id]).await?
                        };
                        if doc.was_applied(id, &logged) {
                            already_committed = true;
                            break;
                        }
                        let over = doc.check(counts, &defaults, now);
                        if !over.is_empty() {
                            exceeded.push((region.clone(), over));
                        }
                        continue;
                    }
                    Err(e) => {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
            let (rid, counts, spanned, expires) =
                (id.to_string(), *counts, regions.clone(), now + ttl_ms);
            let outcome = self
                .group
                .modify(
                    org,
                    region,
                    unknown_unless_pending(id),
                    move |current: Option<QuotaDoc>, logged| {
                        let mut doc = current.unwrap_or_default();
                        let result =
                            doc.reserve(&rid, &counts, &spanned, expires, &defaults, now, logged);
                        let write = match result {
                            Ok(Reserved::New | Reserved::AlreadyPending) => Write::Put(doc),
                            Ok(Reserved::AlreadyCommitted) => Write::Settled,
                            Err(_) => Write::Keep,
                        };
                        Ok((write, result))
                    },
                )
                .await;
            match outcome {
                Ok(Ok(Reserved::New)) => newly_reserved.push(region),
                Ok(Ok(Reserved::AlreadyPending)) => {}
                Ok(Ok(Reserved::AlreadyCommitted)) => {
                    already_committed = true;
                    break;
                }
                Ok(Err(over)) => exceeded.push((region.clone(), over)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }

        let success = failure.is_none() && exceeded.is_empty() && !already_committed;
        if !success {
            for region in newly_reserved {
                if let Err(e) = self.release_in(org, region, id).await {
                    // It lapses at its TTL anyway.
                    tracing::warn!(organization = %org, region = %region, reservation = %id, error = %e, "could not undo a partial reservation");
                }
            }
        }
        if let Some(status) = failure {
            return Err(status);
        }
        if already_committed {
            tracing::debug!(organization = %org, reservation = %id, "reservation was already committed");
            return Ok(q::ReserveResponse {
                already_committed: true,
                tier,
            });
        }
        if !exceeded.is_empty() {
            METRICS.reservation(Outcome::refused);
            tracing::info!(organization = %org, reservation = %id, "quota exceeded");
            return Err(quota_exceeded(org, &exceeded));
        }
        METRICS.reservation(Outcome::reserved);
        Ok(q::ReserveResponse {
            already_committed: false,
            tier,
        })
    }

    pub(crate) async fn commit_quota(
        &self,
        request: Request<q::CommitRequest>,
    ) -> Result<q::CommitResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        check_reservation_id(&mut v, &r.reservation_id);
        let org = check_organization(&mut v, &r.organization);
        let regions = check_regions(&mut v, &r.regions);
        let created = check_items(&mut v, "created", &r.created);
        v.into_result()?;
        require_role(
            &caller,
            org,
            Role::Member,
            &format!("commit quota in {}", r.organization),
        )?;
        let id = r.reservation_id.as_str();
        let defaults = self.config.default_limits;

        // With `created`, exactly those regions, each counting what it made;
        // without, the listed regions, counting what was reserved.
        let targets: Vec<(String, Option<Counts>)> = if created.is_empty() {
            regions.iter().map(|r| (r.clone(), None)).collect()
        } else {
            created.iter().map(|(r, c)| (r.clone(), Some(*c))).collect()
        };
        let mut spanned: BTreeSet<String> = BTreeSet::new();
        let mut all_known = !targets.is_empty();
        // Whether a region no longer held the reservation (for the metrics).
        let mut lapsed = false;
        for (region, counts) in &targets {
            let now = now_ms();
            let (rid, counts) = (id.to_string(), *counts);
            let (outcome, spill) = self
                .group
                .modify(
                    org,
                    region,
                    unknown_unless_pending(id),
                    move |current: Option<QuotaDoc>, logged| {
                        let mut doc = current.unwrap_or_default();
                        let outcome = doc
                            .commit(&rid, counts.as_ref(), &defaults, now, logged)
                            .map_err(|_| full())?;
                        let spill = doc.needs_spill();
                        let write = match outcome {
                            Committed::AlreadyCommitted => Write::Settled,
                            _ => Write::Put(doc),
                        };
                        Ok((write, (outcome, spill)))
                    },
                )
                .await?;
            if spill {
                self.spill(org, region).await;
            }
            match outcome {
                Committed::Reservation { regions } => spanned.extend(regions),
                Committed::AlreadyCommitted => {}
                Committed::Created { exceeded } => {
                    lapsed = true;
                    if exceeded.is_empty() {
                        tracing::info!(organization = %org, region = %region, reservation = %id, created = ?counts, "commit of an unknown reservation: counted what was created");
                    } else {
                        tracing::warn!(organization = %org, region = %region, reservation = %id, created = ?counts, over = ?exceeded, "commit of an unknown reservation counted what was created, which puts usage over the limit");
                    }
                }
                Committed::Unknown => {
                    lapsed = true;
                    all_known = false;
                    tracing::warn!(organization = %org, region = %region, reservation = %id, "commit of an unknown reservation without created counts: recorded, nothing counted");
                }
            }
        }
        let outcome = if lapsed {
            Outcome::lapsed
        } else {
            Outcome::committed
        };
        if !created.is_empty() {
            METRICS.reservation(outcome);
            // The reservation's other regions belong to their own daemons,
            // which commit or release them.
            return Ok(q::CommitResponse {});
        }
        // Release the reservation's other regions, which did not get the
        // resource. When no committed region knew the reservation, look for
        // it in all of the organization's regions.
        let others: Vec<String> = if spanned.is_empty() && !all_known {
            self.regions_holding(org, id).await?
        } else {
            spanned.into_iter().collect()
        };
        for region in others.iter().filter(|r| !regions.contains(r)) {
            self.release_in(org, region, id).await?;
        }
        METRICS.reservation(outcome);
        Ok(q::CommitResponse {})
    }

    pub(crate) async fn release_quota(
        &self,
        request: Request<q::ReleaseRequest>,
    ) -> Result<q::ReleaseResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        check_reservation_id(&mut v, &r.reservation_id);
        let org = check_organization(&mut v, &r.organization);
        let regions = check_regions(&mut v, &r.regions);
        v.into_result()?;
        require_role(
            &caller,
            org,
            Role::Member,
            &format!("release quota in {}", r.organization),
        )?;
        let id = r.reservation_id.as_str();
        let regions = if regions.is_empty() {
            self.regions_holding(org, id).await?
        } else {
            regions
        };
        for region in &regions {
            self.release_in(org, region, id).await?;
        }
        METRICS.reservation(Outcome::released);
        Ok(q::ReleaseResponse {})
    }

    pub(crate) async fn free_quota(
        &self,
        request: Request<q::FreeRequest>,
    ) -> Result<q::FreeResponse, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let org = check_organization(&mut v, &r.organization);
        let items = check_items(&mut v, "items", &r.items);
        let changes = check_changes(&mut v, &r.changes);
        v.into_result()?;
        require_role(
            &caller,
            org,
            Role::Member,
            &format!("free quota in {}", r.organization),
        )?;
        for (region, counts) in &items {
            let (now, counts) = (now_ms(), *counts);
            self.group
                .modify(
                    org,
                    region,
                    |_: Option<&QuotaDoc>| Vec::new(),
                    move |current: Option<QuotaDoc>, _| {
                        // Nothing was ever used in a region without a document.
                        let Some(mut doc) = current else {
                            return Ok((Write::Keep, ()));
                        };
                        doc.free(&counts, now);
                        Ok((Write::Put(doc), ()))
                    },
                )
                .await?;
        }
        // Changes: one compare-and-set per region, each change at most once.
        let mut by_region: BTreeMap<&str, Vec<(&str, Counts)>> = BTreeMap::new();
        for (op, region, counts) in &changes {
            by_region
                .entry(region.as_str())
                .or_default()
                .push((op.as_str(), *counts));
        }
        for (region, list) in &by_region {
            let now = now_ms();
            let list: Vec<(String, Counts)> = list
                .iter()
                .map(|(op, counts)| (op.to_string(), *counts))
                .collect();
            let ops: Vec<String> = list.iter().map(|(op, _)| op.clone()).collect();
            let changes = list.len();
            let (applied, spill) = self
                .group
                .modify(
                    org,
                    region,
                    move |current: Option<&QuotaDoc>| match current {
                        Some(doc) => ops
                            .iter()
                            .filter(|op| !doc.knows_applied(op))
                            .cloned()
                            .collect(),
                        None => Vec::new(),
                    },
                    move |current: Option<QuotaDoc>, logged| {
                        // Nothing was ever used in a region without a document.
                        let Some(mut doc) = current else {
                            return Ok((Write::Keep, (0usize, false)));
                        };
                        let mut applied = 0;
                        for (op, counts) in &list {
                            if doc.free_once(op, counts, now, logged).map_err(|_| full())? {
                                applied += 1;
                            }
                        }
                        let spill = doc.needs_spill();
                        let write = if applied > 0 {
                            Write::Put(doc)
                        } else {
                            Write::Settled
                        };
                        Ok((write, (applied, spill)))
                    },
                )
                .await?;
            if spill {
                self.spill(org, region).await;
            }
            tracing::debug!(organization = %org, region = %region, changes, applied, "usage given back");
        }
        Ok(q::FreeResponse {})
    }

    /// Drops reservation `id` in one region (a no-op when it is not there).
    async fn release_in(&self, org: &str, region: &str, id: &str) -> Result<(), Status> {
        let (now, rid) = (now_ms(), id.to_string());
        self.group
            .modify(
                org,
                region,
                |_: Option<&QuotaDoc>| Vec::new(),
                move |current: Option<QuotaDoc>, _| {
                    let Some(mut doc) = current else {
                        return Ok((Write::Keep, ()));
                    };
                    let write = match doc.release(&rid, now) {
                        Some(_) => Write::Put(doc),
                        None => Write::Keep,
                    };
                    Ok((write, ()))
                },
            )
            .await
    }

    /// The regions whose documents hold reservation `id` pending.
    async fn regions_holding(&self, org: &str, id: &str) -> Result<Vec<String>, Status> {
        let prefix = store::quota_prefix(org);
        let docs = self.store.list::<QuotaDoc>(&prefix).await?;
        let mut regions = BTreeSet::new();
        for (key, doc) in &docs {
            if let Some(spanned) = doc.regions_of(id) {
                regions.extend(spanned.iter().cloned());
                if let Some(region) = key.strip_prefix(&prefix) {
                    regions.insert(region.to_string());
                }
            }
        }
        Ok(regions.into_iter().collect())
    }

    /// NOT_FOUND unless the organization exists: quota is only reserved for
    /// organizations, never for a typo. Its quota tier otherwise, which the
    /// regions size what they create with.
    async fn org_exists_for_quota(&self, org: &str) -> Result<String, Status> {
        match self
            .store
            .get::<crate::OrgDoc>(&store::org_key(org))
            .await?
        {
            Some(doc) => Ok(self.tier_of(&doc.value)),
            None => Err(crate::status::not_found(&names::organization(org))),
        }
    }
}
