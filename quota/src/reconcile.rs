//! ReconcileQuotas: compares each (organization, region) quota document's
//! usage with what the region holds, and repairs the difference.
//!
//! A region answers `CountResources` with what exists, the quota changes it
//! has made but not seen acknowledged (creates to commit, removals to give
//! back) and orphans. What usage should be:
//!
//! `existing − Σ pending creates not yet applied + Σ pending removals not yet
//! applied`
//!
//! where "applied" is the applied-operations record ([`crate::ops`]). Work in
//! flight still moves the numbers (a create that began after the count), so
//! a difference is corrected only when seen twice, [`Config::reconcile_confirm`]
//! apart, with the same difference both times; the correction is a
//! compare-and-set on the revision read at the second observation. Any
//! number of instances may run it at once: the second observation of one of
//! them after another's correction sees no difference. Live reservations
//! are not usage and are left alone.
//!
//! [`Config::reconcile_confirm`]: crate::config::Config::reconcile_confirm

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use nordlys_api::names;
use nordlys_proto::pb::nordlys::regiond::v1 as regiond;
use nordlys_proto::pb::nordlys::v1 as api;
use nordlys_transport::{Identity, NatsChannel, Role};
use tonic::{Request, Status};

use crate::admin::{counts_from, counts_proto};
use crate::auth::{identity, require_operator};
use crate::reservation::{Counts, Kind, QuotaDoc};
use crate::store;
use crate::Controller;

/// Times a drift whose document kept moving is checked again in one run.
const ATTEMPTS: usize = 3;

/// A quota change a region has not seen acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The reservation id of a create, or the operation id of a removal.
    pub operation_id: String,
    /// A create (to commit) rather than a removal (to give back).
    pub create: bool,
    /// What it counts.
    pub counts: Counts,
}

/// What usage should be, given what exists and the changes not settled:
/// a create not yet committed is not usage yet, a removal not yet given back
/// still is. Never below zero.
pub fn expected_usage(
    existing: &Counts,
    pending: &[Pending],
    applied: impl Fn(&str) -> bool,
) -> Counts {
    let mut expected = *existing;
    for p in pending.iter().filter(|p| !applied(&p.operation_id)) {
        for k in Kind::ALL {
            let delta = if p.create {
                -p.counts.get(k)
            } else {
                p.counts.get(k)
            };
            expected.set(k, expected.get(k).saturating_add(delta));
        }
    }
    for k in Kind::ALL {
        expected.set(k, expected.get(k).max(0));
    }
    expected
}

/// `expected − usage`, kind by kind: what a correction adds.
pub fn difference(expected: &Counts, usage: &Counts) -> Counts {
    let mut diff = Counts::default();
    for k in Kind::ALL {
        diff.set(k, expected.get(k).saturating_sub(usage.get(k)));
    }
    diff
}

/// One comparison of a document with its region's count.
#[derive(Debug, Clone)]
struct Observation {
    doc: QuotaDoc,
    revision: u64,
    expected: Counts,
    diff: Counts,
    orphans: Vec<String>,
}

/// Why a region could not be compared.
#[derive(Debug)]
enum Missed {
    /// The region did not answer.
    Unreachable(Status),
    /// The document is gone (nothing to compare).
    NoDocument,
}

/// The report of one run.
#[derive(Debug, Default)]
struct Report {
    drifts: Vec<api::QuotaDrift>,
    checked: i32,
    unreachable: BTreeSet<String>,
    orphans: BTreeSet<String>,
}

impl Report {
    fn drift(&mut self, org: &str, region: &str, obs: &Observation, corrected: bool, reason: &str) {
        self.drifts.push(api::QuotaDrift {
            quota: names::quota(org, region),
            usage: Some(counts_proto(&obs.doc.usage)),
            existing: Some(counts_proto(&obs.expected)),
            corrected,
            reason: reason.to_string(),
        });
    }
}

impl Controller {
    pub(crate) async fn reconcile(
        &self,
        request: Request<api::ReconcileQuotasRequest>,
    ) -> Result<api::ReconcileQuotasResponse, Status> {
        let caller = identity(&request)?;
        require_operator(&caller, "reconcile quotas")?;
        let r = request.into_inner();
        let org = if r.organization.is_empty() {
            None
        } else {
            let ids = names::parse_field(&r.organization, &["organizations"], "organization")?;
            let org = ids[0].to_string();
            if self
                .store
                .get::<crate::OrgDoc>(&store::org_key(&org))
                .await?
                .is_none()
            {
                return Err(crate::status::not_found(&r.organization));
            }
            Some(org)
        };
        self.reconcile_run(org.as_deref(), r.validate_only).await
    }

    /// One reconciliation of `org` (every organization when `None`).
    pub async fn reconcile_run(
        &self,
        org: Option<&str>,
        validate_only: bool,
    ) -> Result<api::ReconcileQuotasResponse, Status> {
        // Quota keys only (no documents): documents are read one
        // organization at a time.
        let prefix = match org {
            Some(org) => store::quota_prefix(org),
            None => "quota.".to_string(),
        };
        let mut by_org: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in self.store.keys(&prefix).await? {
            let Some((org, region)) = key
                .strip_prefix("quota.")
                .and_then(|rest| rest.split_once('.'))
            else {
                continue;
            };
            by_org
                .entry(org.to_string())
                .or_default()
                .push(region.to_string());
        }
        let mut report = Report::default();
        for (org, regions) in &by_org {
            self.reconcile_org(org, regions, validate_only, &mut report)
                .await?;
        }
        if org.is_none() {
            // A run over everything also asks each region for what no
            // organization holds any more (cloud resources left behind).
            let regions: BTreeSet<&String> = by_org.values().flatten().collect();
            for region in regions {
                if report.unreachable.contains(region) {
                    continue;
                }
                match self.count_resources(None, region).await {
                    Ok(strays) => report.orphans.extend(strays.orphans),
                    Err(status) => {
                        tracing::warn!(region = %region, error = %status, "region could not list its strays for the reconciler");
                        report.unreachable.insert(region.clone());
                    }
                }
            }
        }
        Ok(api::ReconcileQuotasResponse {
            drifts: report.drifts,
            checked: report.checked,
            unreachable: report.unreachable.into_iter().collect(),
            orphans: report.orphans.into_iter().collect(),
        })
    }

    async fn reconcile_org(
        &self,
        org: &str,
        regions: &[String],
        validate_only: bool,
        report: &mut Report,
    ) -> Result<(), Status> {
        // First observation of every region at once.
        let observed = futures::future::join_all(
            regions
                .iter()
                .filter(|r| !report.unreachable.contains(*r))
                .map(|region| async move { (region, self.observe(org, region).await) }),
        )
        .await;
        let mut drifting: Vec<(&String, Observation)> = Vec::new();
        for (region, outcome) in observed {
            match outcome? {
                Ok(obs) => {
                    report.checked += 1;
                    report.orphans.extend(obs.orphans.iter().cloned());
                    if !obs.diff.is_zero() {
                        drifting.push((region, obs));
                    }
                }
                Err(Missed::Unreachable(status)) => {
                    tracing::warn!(organization = %org, region = %region, error = %status, "region could not count for the reconciler");
                    report.unreachable.insert(region.clone());
                }
                Err(Missed::NoDocument) => {}
            }
        }
        if drifting.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(self.config.reconcile_confirm()).await;
        for (region, first) in drifting {
            self.confirm_and_correct(org, region, first, validate_only, report)
                .await?;
        }
        Ok(())
    }

    /// The second observation of a drift, and the correction when it
    /// confirms the first.
    async fn confirm_and_correct(
        &self,
        org: &str,
        region: &str,
        mut first: Observation,
        validate_only: bool,
        report: &mut Report,
    ) -> Result<(), Status> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.config.reconcile_confirm()).await;
            }
            let second = match self.observe(org, region).await? {
                Ok(obs) => obs,
                Err(Missed::Unreachable(status)) => {
                    tracing::warn!(organization = %org, region = %region, error = %status, "region stopped answering the reconciler");
                    report.unreachable.insert(region.to_string());
                    report.drift(
                        org,
                        region,
                        &first,
                        false,
                        "the region stopped answering before the drift was confirmed",
                    );
                    return Ok(());
                }
                Err(Missed::NoDocument) => return Ok(()),
            };
            if second.diff.is_zero() {
                // Settled on its own: work that was in flight.
                return Ok(());
            }
            if second.diff != first.diff {
                report.drift(org, region, &second, false, "the difference changed between two observations (work in flight); checked again at the next run");
                return Ok(());
            }
            if validate_only {
                report.drift(org, region, &second, false, "validate_only");
                return Ok(());
            }
            let mut doc = second.doc.clone();
            doc.usage = second.expected;
            let key = store::quota_key(org, region);
            if self.store.put_if(&key, &doc, Some(second.revision)).await? {
                let total = self.corrections.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::METRICS.correction();
                tracing::warn!(organization = %org, region = %region, before = ?second.doc.usage, after = ?second.expected, corrections_total = total, "quota usage corrected to what exists");
                report.drift(org, region, &second, true, "");
                return Ok(());
            }
            // The document moved since the second observation: check again
            // from the start, with that observation as the first.
            first = second;
        }
        report.drift(
            org,
            region,
            &first,
            false,
            "usage kept changing during the check; checked again at the next run",
        );
        Ok(())
    }

    /// Asks the region to count and compares with the document. The outer
    /// error is the store's; the inner says why nothing was compared.
    async fn observe(
        &self,
        org: &str,
        region: &str,
    ) -> Result<Result<Observation, Missed>, Status> {
        // The count first, then the document: a change settling in between
        // shows in the document as applied, so it is not counted twice.
        let counted = match self.count_resources(Some(org), region).await {
            Ok(c) => c,
            Err(status) => return Ok(Err(Missed::Unreachable(status))),
        };
        let key = store::quota_key(org, region);
        let Some(versioned) = self.store.get::<QuotaDoc>(&key).await? else {
            return Ok(Err(Missed::NoDocument));
        };
        let doc = versioned.value;
        let pending: Vec<Pending> = counted
            .pending
            .iter()
            .map(|p| Pending {
                operation_id: p.operation_id.clone(),
                create: p.create,
                counts: p.counts.as_ref().map(counts_from).unwrap_or_default(),
            })
            .collect();
        let logged = self
            .logged_among(
                org,
                region,
                Some(&doc),
                pending.iter().map(|p| p.operation_id.as_str()),
            )
            .await?;
        let existing = counted
            .existing
            .as_ref()
            .map(counts_from)
            .unwrap_or_default();
        let expected = expected_usage(&existing, &pending, |id| {
            doc.knows_applied(id) || logged.contains(id)
        });
        let diff = difference(&expected, &doc.usage);
        Ok(Ok(Observation {
            doc,
            revision: versioned.revision,
            expected,
            diff,
            orphans: counted.orphans,
        }))
    }

    /// `CountResources` of `org` in `region` (the region's strays with no
    /// organization), over NATS, as the operator.
    async fn count_resources(
        &self,
        org: Option<&str>,
        region: &str,
    ) -> Result<regiond::CountResourcesResponse, Status> {
        let mut request = Request::new(regiond::CountResourcesRequest {
            organization: org.map(names::organization).unwrap_or_default(),
        });
        let caller = Identity {
            organization: String::new(),
            member: "nordlys-quota".to_string(),
            role: Role::Operator,
        };
        caller.write(request.metadata_mut())?;
        nordlys_transport::metadata::set_timeout(
            request.metadata_mut(),
            self.config.reconcile_timeout(),
        );
        let subject = format!("nordlys.v1.{region}.RegiondService.CountResources");
        self.regions
            .unary(subject, request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                if NatsChannel::is_no_responders(&status) {
                    Status::unavailable(format!("no instance of region {region} answers"))
                } else {
                    status
                }
            })
    }

    /// Runs a reconciliation of every organization every `interval`, until
    /// the task is dropped. Instances started together drift apart by a
    /// random delay, so they rarely observe at the same moment (they would
    /// be safe anyway: corrections are compare-and-set, confirmed twice).
    pub async fn reconcile_periodically(&self, interval: std::time::Duration) {
        loop {
            let jitter = rand::random_range(0..=interval.as_millis() / 10);
            let jitter = std::time::Duration::from_millis(u64::try_from(jitter).unwrap_or(0));
            tokio::time::sleep(interval + jitter).await;
            match self.reconcile_run(None, false).await {
                Ok(r) => {
                    let corrected = r.drifts.iter().filter(|d| d.corrected).count();
                    tracing::info!(checked = r.checked, drifts = r.drifts.len(), corrected, unreachable = ?r.unreachable, orphans = r.orphans.len(), "reconciled quotas");
                }
                Err(status) => tracing::warn!(error = %status, "reconciliation failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projects(n: i64) -> Counts {
        Counts {
            projects: n,
            ..Counts::default()
        }
    }

    fn pending(id: &str, create: bool, n: i64) -> Pending {
        Pending {
            operation_id: id.to_string(),
            create,
            counts: projects(n),
        }
    }

    #[test]
    fn settled_changes_do_not_move_the_expectation() {
        let p = [pending("c1", true, 1), pending("d1", false, 1)];
        // Both applied: what exists is what usage should be.
        assert_eq!(expected_usage(&projects(5), &p, |_| true), projects(5));
    }

    #[test]
    fn unsettled_creates_are_not_usage_yet_and_removals_still_are() {
        let p = [
            pending("c1", true, 1),
            pending("c2", true, 2),
            pending("d1", false, 1),
        ];
        // c1 applied, c2 not: 5 − 2; d1 not applied: + 1.
        let applied = |id: &str| id == "c1";
        assert_eq!(expected_usage(&projects(5), &p, applied), projects(4));
    }

    #[test]
    fn expectation_never_goes_below_zero() {
        let p = [pending("c1", true, 3)];
        assert_eq!(expected_usage(&projects(1), &p, |_| false), projects(0));
    }

    #[test]
    fn difference_is_what_a_correction_adds() {
        let usage = Counts {
            projects: 5,
            users: 1,
            ..Counts::default()
        };
        let expected = Counts {
            projects: 3,
            users: 2,
            ..Counts::default()
        };
        let diff = difference(&expected, &usage);
        assert_eq!(diff.projects, -2);
        assert_eq!(diff.users, 1);
        assert!(difference(&usage, &usage).is_zero());
    }
}
