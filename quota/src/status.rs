//! The one place that decides what callers see of our errors.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, QuotaViolation, StatusExt};

use crate::keys::RandomnessError;
use crate::reservation::Exceeded;
use crate::store::StoreError;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match &e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store error");
                Status::unavailable("the quota store is unavailable; retry")
            }
            // A concurrency conflict the caller may retry (AIP-193).
            StoreError::Contention(_) => {
                tracing::warn!(error = %e, "store contention");
                Status::aborted("too many concurrent changes; retry")
            }
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt document");
                Status::internal("internal error")
            }
        }
    }
}

impl From<RandomnessError> for Status {
    fn from(e: RandomnessError) -> Status {
        tracing::error!(error = %e, "cannot make a key");
        Status::internal("internal error")
    }
}

/// PERMISSION_DENIED that says nothing about whether the resource exists.
pub(crate) fn permission_denied(what: &str) -> Status {
    Status::permission_denied(format!("the caller may not {what}"))
}

/// NOT_FOUND for a resource name.
pub(crate) fn not_found(name: &str) -> Status {
    Status::not_found(format!("{name} not found"))
}

/// RESOURCE_EXHAUSTED with a google.rpc.QuotaFailure: one violation per kind
/// over its limit in each region.
pub(crate) fn quota_exceeded(org: &str, exceeded: &[(String, Vec<Exceeded>)]) -> Status {
    let mut violations = Vec::new();
    let mut summary = Vec::new();
    for (region, list) in exceeded {
        let subject = nordlys_api::names::quota(org, region);
        for e in list {
            let kind = e.kind.as_str();
            let description = format!(
                "{kind}: limit {}, used {}, reserved {}, asked {}",
                e.limit, e.used, e.reserved, e.asked
            );
            summary.push(format!("{region} {kind}"));
            let mut v = QuotaViolation::new(subject.clone(), description);
            v.quota_metric = kind.to_string();
            v.quota_value = e.limit;
            v.quota_dimensions = HashMap::from([
                ("organization".to_string(), org.to_string()),
                ("region".to_string(), region.clone()),
            ]);
            violations.push(v);
        }
    }
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("quota exceeded: {}", summary.join(", ")),
        ErrorDetails::with_quota_failure(violations),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::Kind;

    #[test]
    fn quota_failure_names_each_violation() {
        let e = Exceeded {
            kind: Kind::Projects,
            limit: 2,
            used: 1,
            reserved: 1,
            asked: 1,
        };
        let status = quota_exceeded(
            "acme",
            &[("sto1".into(), vec![e.clone()]), ("osl1".into(), vec![e])],
        );
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let failure = details.quota_failure().expect("quota failure");
        assert_eq!(failure.violations.len(), 2);
        assert_eq!(
            failure.violations[0].subject,
            "organizations/acme/quotas/sto1"
        );
        assert!(failure.violations[1].description.contains("limit 2"));
    }
}
