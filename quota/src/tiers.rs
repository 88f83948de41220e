//! Quota tiers: which named size of cloud quotas an organization has (the
//! regions say what each tier sets in Neutron, Nova and Cinder), how an
//! operator sets it, and how a customer asks for another one.
//!
//! The rule for a customer's request is Adjutant's: granted at once when it
//! is the next tier up and the tier has not changed within the configured
//! window (30 days), otherwise recorded as pending until an operator grants
//! it. The tier, when it last changed and the pending request live in the
//! organization's document, a fixed size whatever the history; the history
//! itself is the CloudEvents the gateway records.

use nordlys_api::{names, Violations};
use nordlys_proto::pb::nordlys::v1 as api;
use nordlys_transport::Role;
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::admin::OrgDoc;
use crate::auth::{identity, require_operator, require_role};
use crate::store::{self, Write};
use crate::{now_ms, Controller};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A tier change asked for and not yet granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTier {
    /// The tier asked for.
    pub tier: String,
    /// Who asked (a member name).
    pub requested_by: String,
    /// When (unix milliseconds).
    pub requested_ms: i64,
    /// The tier the organization had then.
    pub previous: String,
    /// Why it waits.
    pub reason: String,
}

/// What becomes of a customer's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Granted at once, for this reason.
    Grant(String),
    /// Waits for an operator, for this reason.
    Wait(String),
}

/// The configured tiers and the rule, with the clock as a parameter so the
/// window can be tested.
#[derive(Debug, Clone)]
pub struct Rule<'a> {
    /// The tiers, smallest first.
    pub tiers: &'a [String],
    /// The tier of organizations never given one.
    pub default_tier: &'a str,
    /// The window after a change, in days.
    pub window_days: u32,
}

impl Rule<'_> {
    /// The tier in force for `set` (an organization's stored tier).
    pub fn effective<'a>(&'a self, set: &'a str) -> &'a str {
        if set.is_empty() {
            self.default_tier
        } else {
            set
        }
    }

    /// Position of `tier` (-1: below them all, for an empty default).
    fn rank(&self, tier: &str) -> Option<i64> {
        if tier.is_empty() {
            return Some(-1);
        }
        self.tiers
            .iter()
            .position(|t| t == tier)
            .and_then(|i| i64::try_from(i).ok())
    }

    /// Checks `wanted` names a configured tier.
    pub fn check(&self, v: &mut Violations, field: &str, wanted: &str) {
        if self.tiers.is_empty() {
            v.add(field, "no quota tiers are configured");
        } else if self.rank(wanted).is_none_or(|r| r < 0) {
            v.add(field, format!("must be one of {}", self.tiers.join(", ")));
        }
    }

    /// The decision on a request for `wanted` by an organization at
    /// `current` (stored), whose tier last changed at `changed_ms` (0:
    /// never), at `now_ms`. `wanted` is a configured tier other than the
    /// current one.
    pub fn decide(&self, current: &str, wanted: &str, changed_ms: i64, now_ms: i64) -> Decision {
        let from = self.rank(self.effective(current)).unwrap_or(-1);
        let to = self.rank(wanted).unwrap_or(-1);
        if to != from + 1 {
            let direction = if to > from {
                "more than one step up"
            } else {
                "a step down"
            };
            return Decision::Wait(format!(
                "{wanted} is {direction} from {}: an operator decides",
                or_default(self.effective(current))
            ));
        }
        let window = i64::from(self.window_days) * DAY_MS;
        if changed_ms > 0 && now_ms.saturating_sub(changed_ms) < window {
            return Decision::Wait(format!(
                "the tier changed less than {} days ago: an operator decides",
                self.window_days
            ));
        }
        Decision::Grant(format!(
            "the next tier up, and no change in the last {} days",
            self.window_days
        ))
    }
}

fn or_default(tier: &str) -> &str {
    if tier.is_empty() {
        "the default"
    } else {
        tier
    }
}

fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

fn pending_proto(org: &str, p: &PendingTier) -> api::TierChange {
    api::TierChange {
        organization: names::organization(org),
        tier: p.tier.clone(),
        previous_tier: p.previous.clone(),
        state: api::tier_change::State::Pending as i32,
        reason: p.reason.clone(),
        requested_by: p.requested_by.clone(),
        request_time: timestamp(p.requested_ms),
        ..Default::default()
    }
}

impl Controller {
    fn rule(&self) -> Rule<'_> {
        Rule {
            tiers: &self.config.tiers,
            default_tier: &self.config.default_tier,
            window_days: self.config.tier_change_days,
        }
    }

    /// The tier the regions size an organization's projects with: its own,
    /// or the configured default.
    pub(crate) fn tier_of(&self, doc: &OrgDoc) -> String {
        self.rule().effective(&doc.tier).to_string()
    }

    /// Fills a quota's tier fields from its organization's document.
    pub(crate) fn show_tier(&self, quota: &mut api::Quota, org: &str, doc: &OrgDoc) {
        quota.tier = self.tier_of(doc);
        quota.tiers = self.config.tiers.clone();
        quota.pending_tier_change = doc.pending_tier.as_ref().map(|p| pending_proto(org, p));
    }

    /// UpdateQuota with `tier` in its mask (operators; checked by the
    /// caller): the organization's tier, whichever region the name says.
    pub(crate) async fn set_tier(&self, r: api::UpdateQuotaRequest) -> Result<api::Quota, Status> {
        let mut v = Violations::new();
        let quota = r.quota.unwrap_or_default();
        let ids = nordlys_api::names::parse(&quota.name, &["organizations", "quotas"]);
        if ids.is_none() {
            v.add(
                "quota.name",
                "must be organizations/{organization}/quotas/{region}",
            );
        }
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.len() > 1 {
            v.add(
                "update_mask",
                "tier is set alone, not with limits in the same call",
            );
        }
        // An empty tier puts the organization back on the default.
        if !quota.tier.is_empty() {
            self.rule().check(&mut v, "quota.tier", &quota.tier);
        }
        v.into_result()?;
        let ids = ids.unwrap_or_default();
        let (org, region) = (ids[0].to_string(), ids[1].to_string());
        let now = now_ms();
        let tier = quota.tier.clone();
        let doc = self
            .store
            .modify(&store::org_key(&org), |current: Option<OrgDoc>| {
                let Some(mut doc) = current else {
                    return Err(crate::status::not_found(&names::organization(&org)));
                };
                if doc.tier != tier {
                    doc.tier_change_ms = now;
                }
                doc.tier.clone_from(&tier);
                doc.pending_tier = None;
                Ok((Write::Put(doc.clone()), doc))
            })
            .await?;
        tracing::info!(organization = %org, tier = %doc.tier, "quota tier set");
        let regional = self
            .store
            .get::<crate::reservation::QuotaDoc>(&store::quota_key(&org, &region))
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        let mut quota = self.quota_proto(&org, &region, &regional, now);
        self.show_tier(&mut quota, &org, &doc);
        Ok(quota)
    }

    /// RequestTierChange: an owner or admin of the organization asks.
    pub(crate) async fn request_tier(
        &self,
        request: Request<api::RequestTierChangeRequest>,
    ) -> Result<api::TierChange, Status> {
        let caller = identity(&request)?;
        let r = request.into_inner();
        let ids = names::parse_field(&r.organization, &["organizations"], "organization")?;
        let org = ids[0].to_string();
        require_role(
            &caller,
            &org,
            Role::Admin,
            &format!("ask for another quota tier for {}", r.organization),
        )?;
        let mut v = Violations::new();
        self.rule().check(&mut v, "tier", &r.tier);
        v.into_result()?;
        let now = now_ms();
        let rule = self.rule();
        let requested_by = caller.member.clone();
        let change = self
            .store
            .modify(&store::org_key(&org), |current: Option<OrgDoc>| {
                let Some(mut doc) = current else {
                    return Err(crate::status::not_found(&names::organization(&org)));
                };
                let previous = rule.effective(&doc.tier).to_string();
                if previous == r.tier {
                    return Err(Status::failed_precondition(format!(
                        "{} already has the tier {}",
                        r.organization, r.tier
                    )));
                }
                match rule.decide(&doc.tier, &r.tier, doc.tier_change_ms, now) {
                    Decision::Grant(reason) => {
                        doc.tier.clone_from(&r.tier);
                        doc.tier_change_ms = now;
                        doc.pending_tier = None;
                        let change = api::TierChange {
                            organization: r.organization.clone(),
                            tier: r.tier.clone(),
                            previous_tier: previous,
                            state: api::tier_change::State::Approved as i32,
                            reason,
                            requested_by: requested_by.clone(),
                            request_time: timestamp(now),
                            approve_time: timestamp(now),
                            region_status: Vec::new(),
                        };
                        Ok((Write::Put(doc), change))
                    }
                    Decision::Wait(reason) => {
                        let pending = PendingTier {
                            tier: r.tier.clone(),
                            requested_by: requested_by.clone(),
                            requested_ms: now,
                            previous,
                            reason,
                        };
                        let change = pending_proto(&org, &pending);
                        doc.pending_tier = Some(pending);
                        Ok((Write::Put(doc), change))
                    }
                }
            })
            .await?;
        tracing::info!(organization = %org, tier = %change.tier, state = change.state, "quota tier change asked for");
        Ok(change)
    }

    /// ApproveTierChange: an operator grants the pending request.
    pub(crate) async fn approve_tier(
        &self,
        request: Request<api::ApproveTierChangeRequest>,
    ) -> Result<api::TierChange, Status> {
        let caller = identity(&request)?;
        require_operator(&caller, "approve tier changes")?;
        let r = request.into_inner();
        let ids = names::parse_field(&r.organization, &["organizations"], "organization")?;
        let org = ids[0].to_string();
        let now = now_ms();
        let change = self
            .store
            .modify(&store::org_key(&org), |current: Option<OrgDoc>| {
                let Some(mut doc) = current else {
                    return Err(crate::status::not_found(&names::organization(&org)));
                };
                let Some(pending) = doc.pending_tier.take() else {
                    return Err(Status::failed_precondition(format!(
                        "{} has no tier change waiting",
                        r.organization
                    )));
                };
                let mut change = pending_proto(&org, &pending);
                change.state = api::tier_change::State::Approved as i32;
                change.approve_time = timestamp(now);
                doc.tier = pending.tier;
                doc.tier_change_ms = now;
                Ok((Write::Put(doc), change))
            })
            .await?;
        tracing::info!(organization = %org, tier = %change.tier, "quota tier change approved");
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<String> {
        ["small", "medium", "large"].map(String::from).to_vec()
    }

    #[test]
    fn the_next_tier_up_is_granted_outside_the_window_only() {
        let tiers = tiers();
        let rule = Rule {
            tiers: &tiers,
            default_tier: "small",
            window_days: 30,
        };
        let now = 100 * DAY_MS;
        // Never changed: the next one up is granted.
        assert!(matches!(
            rule.decide("", "medium", 0, now),
            Decision::Grant(_)
        ));
        assert!(matches!(
            rule.decide("small", "medium", 0, now),
            Decision::Grant(_)
        ));
        // Changed 29 days ago: waits; 30 days ago: granted.
        assert!(matches!(
            rule.decide("medium", "large", now - 29 * DAY_MS, now),
            Decision::Wait(r) if r.contains("30 days")
        ));
        assert!(matches!(
            rule.decide("medium", "large", now - 30 * DAY_MS, now),
            Decision::Grant(_)
        ));
        // Two steps up, or down: an operator decides.
        assert!(matches!(
            rule.decide("small", "large", 0, now),
            Decision::Wait(r) if r.contains("more than one step")
        ));
        assert!(matches!(
            rule.decide("large", "medium", 0, now),
            Decision::Wait(r) if r.contains("step down")
        ));
    }

    #[test]
    fn an_empty_default_sits_below_the_first_tier() {
        let tiers = tiers();
        let rule = Rule {
            tiers: &tiers,
            default_tier: "",
            window_days: 30,
        };
        assert!(matches!(
            rule.decide("", "small", 0, DAY_MS),
            Decision::Grant(_)
        ));
        assert!(matches!(
            rule.decide("", "medium", 0, DAY_MS),
            Decision::Wait(_)
        ));
        let mut v = Violations::new();
        rule.check(&mut v, "tier", "huge");
        assert!(!v.is_empty(), "an unknown tier is refused");
        let mut v = Violations::new();
        rule.check(&mut v, "tier", "");
        assert!(!v.is_empty(), "an empty tier is refused");
        let mut v = Violations::new();
        rule.check(&mut v, "tier", "large");
        assert!(v.is_empty());
        let none: Vec<String> = Vec::new();
        let off = Rule {
            tiers: &none,
            default_tier: "",
            window_days: 30,
        };
        let mut v = Violations::new();
        off.check(&mut v, "tier", "small");
        assert!(!v.is_empty(), "no tiers configured");
    }
}
