//! `nordlys.v1.QuotaService`: authenticated here, authorized and kept by
//! the quota service. Limits may name only known regions.

use nordlys_api::{names, Violations};
use nordlys_proto::pb::nordlys::v1::quota_service_server::QuotaService;
use nordlys_proto::pb::nordlys::v1::{
    GetQuotaRequest, ListQuotasRequest, ListQuotasResponse, Quota, ReconcileQuotasRequest,
    ReconcileQuotasResponse, UpdateQuotaRequest,
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
        let answer: Quota = self
            .state
            .quota
            .call("GetQuota", &call, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_quotas(
        &self,
        request: Request<ListQuotasRequest>,
    ) -> Result<Response<ListQuotasResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let answer: ListQuotasResponse = self
            .state
            .quota
            .call("ListQuotas", &call, request.into_inner())
            .await?;
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
    /// UpdateQuota, and asks the regions itself.
    async fn reconcile_quotas(
        &self,
        request: Request<ReconcileQuotasRequest>,
    ) -> Result<Response<ReconcileQuotasResponse>, Status> {
        let call = self.state.begin(&request).await?;
        let req = request.into_inner();
        if !req.organization.is_empty() {
            names::parse_field(&req.organization, &["organizations"], "organization")?;
        }
        let answer: ReconcileQuotasResponse =
            self.state.quota.call("ReconcileQuotas", &call, req).await?;
        Ok(Response::new(answer))
    }
}
