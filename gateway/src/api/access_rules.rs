//! `nordlys.v1.AccessRuleService`.

use nordlys_api::{ids, names, update, validate, Violations};
use nordlys_proto::pb::nordlys::v1::access_rule_service_server::AccessRuleService;
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, CreateAccessRuleRequest, DeleteAccessRuleRequest, DeleteAccessRuleResponse,
    GetAccessRuleRequest, ListAccessRulesRequest, ListAccessRulesResponse, UpdateAccessRuleRequest,
};
use tonic::{Request, Response, Status};

use super::{first_success, spelled_out, Api, ChildUpdate, Fanout, Kind};
use crate::events::Change;
use nordlys_proto::pb::nordlys::v1::event::Data;

#[tonic::async_trait]
impl AccessRuleService for Api {
    async fn create_access_rule(
        &self,
        request: Request<CreateAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        self.require_write(&call, &req.parent)?;
        let project_id = names::parse_field(&req.parent, &["projects"], "parent")?[0].to_string();
        let Some(rule) = req.access_rule.as_mut() else {
            return Err(nordlys_api::invalid("access_rule", "is required"));
        };
        // Output only: what the environments say, never the caller.
        rule.managed_by.clear();
        let mut v = Violations::new();
        validate::check_access_rule(&mut v, "access_rule", rule);
        if validate::is_region(&rule.region) {
            self.state
                .check_region(&mut v, "access_rule.region", &rule.region);
        }
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        let org = self.project_org(&call, &req.parent).await?;
        if req.access_rule_id.is_empty() {
            req.access_rule_id = ids::derive("rule", &org, &req.request_id);
        } else {
            validate::check_id(&mut v, "access_rule_id", &req.access_rule_id);
        }
        v.into_result()?;
        // Every create carries a request id, so any retry or fallback of the
        // internal call is deduplicated by the region.
        if req.request_id.is_empty() {
            req.request_id = format!("gw-{}", nordlys_api::ids::random_hex(32));
        }
        rule.name = names::access_rule(&project_id, &req.access_rule_id);
        // The gateway dates every create, so all regions agree.
        rule.create_time = Some(nordlys_api::now());
        let name = rule.name.clone();
        let region = vec![rule.region.clone()];
        let answers = self
            .create_in_regions::<_, AccessRule, _>(
                &call,
                Fanout {
                    method: "CreateAccessRule",
                    undo: "DeleteAccessRule",
                    organization: &org,
                    resource: &name,
                    request_id: &req.request_id,
                    placement: &region,
                    kind: Some(Kind::AccessRules),
                },
                req.clone(),
                |name| DeleteAccessRuleRequest {
                    name,
                    ..Default::default()
                },
            )
            .await?;
        let rule = first_success(answers)?.0;
        self.changed(
            &call,
            Change::new("access_rule", "created", &org, &rule.name)
                .request_id(&req.request_id)
                .data(Data::AccessRule(rule.clone())),
        );
        Ok(Response::new(self.marked(&call, rule)))
    }

    async fn get_access_rule(
        &self,
        request: Request<GetAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        let (access_rule, _) = self
            .get_by_name(request, "GetAccessRule", &["projects", "accessRules"])
            .await?;
        Ok(Response::new(access_rule))
    }

    async fn list_access_rules(
        &self,
        request: Request<ListAccessRulesRequest>,
    ) -> Result<Response<ListAccessRulesResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let (page, next_page_token) = self
            .list_children(
                (&metadata, &extensions),
                "ListAccessRules",
                &req.parent,
                req.page_size,
                &req.page_token,
                |r: ListAccessRulesResponse| r.access_rules,
            )
            .await?;
        Ok(Response::new(ListAccessRulesResponse {
            access_rules: page.items,
            next_page_token,
            unreachable: page.unreachable,
        }))
    }

    async fn update_access_rule(
        &self,
        request: Request<UpdateAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        let call = self.state.begin(&request).await?;
        let mut req = request.into_inner();
        let Some(rule) = req.access_rule.as_ref() else {
            return Err(nordlys_api::invalid("access_rule", "is required"));
        };
        let name = rule.name.clone();
        let ids = names::parse_field(&name, &["projects", "accessRules"], "access_rule.name")?;
        let project = names::project(ids[0]);
        self.require_write(&call, &name)?;
        let mut v = Violations::new();
        let paths = update::access_rule_paths(&mut v, rule, req.update_mask.as_ref());
        validate::check_request_id(&mut v, "request_id", &req.request_id);
        v.into_result()?;
        let (update_mask, request_id) = spelled_out(&paths, &req.request_id);
        req.update_mask = Some(update_mask);
        req.request_id = request_id.clone();
        let update = ChildUpdate {
            method: "UpdateAccessRule",
            kind: "access_rule",
            project: &project,
            name: &name,
            request_id: &request_id,
            data: Data::AccessRule,
        };
        Ok(Response::new(self.update_child(&call, update, req).await?))
    }

    async fn delete_access_rule(
        &self,
        request: Request<DeleteAccessRuleRequest>,
    ) -> Result<Response<DeleteAccessRuleResponse>, Status> {
        self.delete_by_name(
            request,
            "DeleteAccessRule",
            &["projects", "accessRules"],
            "access_rule",
        )
        .await?;
        Ok(Response::new(DeleteAccessRuleResponse {}))
    }
}
