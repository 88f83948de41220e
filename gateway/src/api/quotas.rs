//! `nordlys.v1.QuotaService`: authenticated here, authorized and kept by
//! the quota service. Limits may name only known regions.

use nordlys_api::{names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{ApplyTierRequest, ApplyTierResponse};
use nordlys_proto::pb::nordlys::v1::quota_service_server::QuotaService;
use nordlys_proto::pb::nordlys::v1::{
    tier_change, ApproveTierChangeRequest, CloudQuota, GetProjectQuotaRequest, GetQuotaRequest,
    ListQuotasRequest, ListQuotasResponse, ProjectQuota, Quota, ReconcileQuotasRequest,
    ReconcileQuotasResponse, RegionStatus, RequestTierChangeRequest, ResourceCounts, TierChange,
    UpdateQuotaRequest,
};
use tonic::{Request, Response, Status};

use super::Api;
use crate::call::Call;
use crate::events::Change;
use crate::scatter::{region_status, sort_by_region};
use nordlys_proto::pb::nordlys::v1::event::Data;

#[tonic::async_trait]
impl QuotaService for Api {
    async fn get_quota(
        &self,
        request: Request<GetQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let target = req.name.clone();
        let answer: Quota = self.forward_call(&call, "GetQuota", &target, req).await?;
        Ok(Response::new(answer))
    }

    async fn list_quotas(
        &self,
        request: Request<ListQuotasRequest>,
    ) -> Result<Response<ListQuotasResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let target = req.parent.clone();
        let answer: ListQuotasResponse =
            self.forward_call(&call, "ListQuotas", &target, req).await?;
        Ok(Response::new(answer))
    }

    async fn update_quota(
        &self,
        request: Request<UpdateQuotaRequest>,
    ) -> Result<Response<Quota>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let name = req
            .quota
            .as_ref()
            .map(|q| q.name.as_str())
            .unwrap_or_default();
        let ids = names::parse_field(name, &["organizations", "quotas"], "quota.name")?;
        let mut v = Violations::new();
        self.state.check_region(&mut v, "quota.name", ids[1]);
        v.into_result()?;
        let target = name.to_string();
        let org = nordlys_api::names::organization(ids[0]);
        let tier = req
            .update_mask
            .as_ref()
            .is_some_and(|m| m.paths.iter().any(|p| p == "tier"));
        if !tier {
            return self
                .forward_change(&call, "UpdateQuota", &target, req, |quota: &Quota| {
                    Change::new("quota", "updated", &org, &quota.name)
                        .data(Data::Quota(quota.clone()))
                })
                .await;
        }
        let mut quota: Quota = self
            .forward_call(&call, "UpdateQuota", &target, req)
            .await?;
        quota.tier_status = self.apply_tier_everywhere(&call, &org, &quota.tier).await;
        self.changed(
            &call,
            Change::new("quota", "tier_changed", &org, &org)
                .data(Data::Quota(quota.clone()))
                .message(format!("tier set to {:?} by an operator", quota.tier)),
        );
        Ok(Response::new(quota))
    }

    async fn request_tier_change(
        &self,
        request: Request<RequestTierChangeRequest>,
    ) -> Result<Response<TierChange>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let target = req.organization.clone();
        let mut change = self
            .forward_tier(&call, "RequestTierChange", &target, req)
            .await?;
        self.changed(
            &call,
            Change::new("quota", "tier_change_requested", &target, &target).message(format!(
                "tier {:?} asked for: {}",
                change.tier, change.reason
            )),
        );
        self.granted(&call, &mut change).await;
        Ok(Response::new(change))
    }

    async fn get_project_quota(
        &self,
        request: Request<GetProjectQuotaRequest>,
    ) -> Result<Response<ProjectQuota>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let project = names::project_of_quota(&req.name, "name")?;
        let answers = self
            .ask_every_region::<_, CloudQuota>(&call, "GetCloudQuota", req.clone(), "")
            .await;
        let mut answer = ProjectQuota {
            name: req.name.clone(),
            ..Default::default()
        };
        let mut refusal = None;
        for (region, result) in answers {
            match result {
                Ok(quota) => answer.regions.push(quota),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) if crate::scatter::is_unreachable(&s) => answer.unreachable.push(region),
                Err(s) => {
                    refusal.get_or_insert(s);
                }
            }
        }
        if answer.regions.is_empty() {
            return Err(refusal.unwrap_or_else(|| {
                if answer.unreachable.is_empty() {
                    Status::not_found(format!("{project} not found"))
                } else {
                    Status::unavailable(format!(
                        "{project} not found in the regions that answered; unreachable: {}",
                        answer.unreachable.join(", ")
                    ))
                }
            }));
        }
        answer.regions.sort_by(|a, b| a.region.cmp(&b.region));
        Ok(Response::new(answer))
    }

    async fn approve_tier_change(
        &self,
        request: Request<ApproveTierChangeRequest>,
    ) -> Result<Response<TierChange>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        let target = req.organization.clone();
        let mut change = self
            .forward_tier(&call, "ApproveTierChange", &target, req)
            .await?;
        self.granted(&call, &mut change).await;
        Ok(Response::new(change))
    }

    /// Operators only: the quota service checks the role, as for
    /// UpdateQuota, and asks the regions itself. Each usage it corrected is
    /// a `quota.reconciled` event in the quota's organization.
    async fn reconcile_quotas(
        &self,
        request: Request<ReconcileQuotasRequest>,
    ) -> Result<Response<ReconcileQuotasResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        if !req.organization.is_empty() {
            names::parse_field(&req.organization, &["organizations"], "organization")?;
        }
        let target = if req.organization.is_empty() {
            "organizations".to_string()
        } else {
            req.organization.clone()
        };
        let answer: ReconcileQuotasResponse = self
            .forward_call(&call, "ReconcileQuotas", &target, req)
            .await?;
        for drift in answer.drifts.iter().filter(|d| d.corrected) {
            let organization = super::organizations::organization_of(&drift.quota);
            let (usage, existing) = (
                drift.usage.unwrap_or_default(),
                drift.existing.unwrap_or_default(),
            );
            // The event's data is a Quota, which holds one usage: the
            // corrected one. The usage before goes in the outcome's note,
            // so the event shows the drift on its own.
            let quota = Quota {
                name: drift.quota.clone(),
                usage: Some(existing),
                ..Default::default()
            };
            self.changed(
                &call,
                Change::new("quota", "reconciled", &organization, &drift.quota)
                    .data(Data::Quota(quota))
                    .message(format!(
                        "usage corrected from {} to {}",
                        counts(&usage),
                        counts(&existing)
                    )),
            );
        }
        Ok(Response::new(answer))
    }
}

impl Api {
    /// A tier change call about `organization`, to the quota service.
    async fn forward_tier<Req: prost::Message + 'static>(
        &self,
        call: &Call,
        method: &str,
        organization: &str,
        req: Req,
    ) -> Result<TierChange, Status> {
        names::parse_field(organization, &["organizations"], "organization")?;
        self.forward_call(call, method, organization, req).await
    }

    /// Applies a tier the quota service granted in every region, with the
    /// outcome in the change, and records it.
    async fn granted(&self, call: &Call, change: &mut TierChange) {
        if change.state != tier_change::State::Approved as i32 {
            return;
        }
        change.region_status = self
            .apply_tier_everywhere(call, &change.organization, &change.tier)
            .await;
        self.changed(
            call,
            Change::new(
                "quota",
                "tier_changed",
                &change.organization,
                &change.organization,
            )
            .message(format!(
                "tier set to {:?} (was {:?}): {}",
                change.tier, change.previous_tier, change.reason
            )),
        );
    }

    /// Asks every known region to size `organization`'s projects with
    /// `tier`; a status per region. A region that did not answer keeps the
    /// tier it had: the same change made again reaches it.
    async fn apply_tier_everywhere(
        &self,
        call: &Call,
        organization: &str,
        tier: &str,
    ) -> Vec<RegionStatus> {
        let req = ApplyTierRequest {
            organization: organization.to_string(),
            tier: tier.to_string(),
        };
        let answers = self
            .ask_every_region::<_, ApplyTierResponse>(call, "ApplyTier", req, "")
            .await;
        let mut statuses: Vec<RegionStatus> = answers
            .iter()
            .map(|(region, answer)| region_status(region, answer))
            .collect();
        sort_by_region(&mut statuses);
        statuses
    }
}

/// `projects=1 users=0 networks=2 access_rules=0`.
fn counts(c: &ResourceCounts) -> String {
    format!(
        "projects={} users={} networks={} access_rules={}",
        c.projects, c.users, c.networks, c.access_rules
    )
}
