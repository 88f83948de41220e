//! `nordlys.v1.QuotaService`: authenticated here, authorized and kept by
//! the quota service. Limits may name only known regions.

use nordlys_api::{names, Violations};
use nordlys_proto::pb::nordlys::v1::quota_service_server::QuotaService;
use nordlys_proto::pb::nordlys::v1::{
    GetQuotaRequest, ListQuotasRequest, ListQuotasResponse, Quota, ReconcileQuotasRequest,
    ReconcileQuotasResponse, ResourceCounts, UpdateQuotaRequest,
};
use tonic::{Request, Response, Status};

use super::Api;
use crate::events::Change;
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
        self.forward_change(&call, "UpdateQuota", &target, req, |quota: &Quota| {
            Change::new("quota", "updated", &org, &quota.name).data(Data::Quota(quota.clone()))
        })
        .await
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

/// `projects=1 users=0 networks=2 access_rules=0`.
fn counts(c: &ResourceCounts) -> String {
    format!(
        "projects={} users={} networks={} access_rules={}",
        c.projects, c.users, c.networks, c.access_rules
    )
}
