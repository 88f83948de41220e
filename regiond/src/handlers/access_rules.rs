//! Access rules: traffic a project's machines admit, in this region.

use crate::backend::{AccessRuleChange, ResourceKind};
use nordlys_api::validate::{check_access_rule, check_id};
use nordlys_api::{invalid, names, Violations};
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, CreateAccessRuleRequest, DeleteAccessRuleRequest, GetAccessRuleRequest,
    ListAccessRulesResponse, UpdateAccessRuleRequest,
};
use tonic::{Request, Response, Status};

use super::{parse_into, request_id, settle_name, Caller, Handlers};

const ACCESS_RULE: &[&str] = &["projects", "accessRules"];

pub(super) async fn create(
    h: &Handlers,
    request: Request<CreateAccessRuleRequest>,
) -> Result<Response<AccessRule>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let mut rule = req
        .access_rule
        .ok_or_else(|| invalid("access_rule", "is required"))?;
    let mut v = Violations::new();
    let project = parse_into(&mut v, &req.parent, &["projects"], "parent");
    check_id(&mut v, "access_rule_id", &req.access_rule_id);
    if let Some(project) = project {
        rule.name = settle_name(
            &mut v,
            "access_rule.name",
            &rule.name,
            names::access_rule(project[0], &req.access_rule_id),
        );
    }
    check_access_rule(&mut v, "access_rule", &rule);
    h.check_here(&mut v, "access_rule.region", &rule.region);
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    rule.create_time.get_or_insert_with(nordlys_api::now);
    let name = rule.name.clone();
    let create_time = rule.create_time;
    let rule = h
        .create(
            &caller,
            ResourceKind::AccessRule,
            String::new(),
            &name,
            &request_id,
            create_time.as_ref(),
            move |backend, tenant, request_id| async move {
                backend.create_access_rule(&tenant, &request_id, rule).await
            },
        )
        .await?;
    Ok(Response::new(with_etag(rule)))
}

/// The rule with its etag (AIP-154).
fn with_etag(mut rule: AccessRule) -> AccessRule {
    rule.etag = nordlys_api::update::access_rule_etag(&rule);
    rule
}

pub(super) async fn update(
    h: &Handlers,
    request: Request<UpdateAccessRuleRequest>,
) -> Result<Response<AccessRule>, Status> {
    let caller = Caller::writer(&request)?;
    let (metadata, _, req) = request.into_parts();
    let rule = req
        .access_rule
        .ok_or_else(|| invalid("access_rule", "is required"))?;
    let mut v = Violations::new();
    parse_into(&mut v, &rule.name, ACCESS_RULE, "access_rule.name");
    nordlys_api::update::access_rule_paths(&mut v, &rule, req.update_mask.as_ref());
    let request_id = request_id(&mut v, &req.request_id, &metadata);
    v.into_result()?;
    let tenant = &caller.tenant;
    let change = AccessRuleChange {
        description: Some(rule.description.clone()),
        etag: rule.etag.clone(),
    };
    let updated = h
        .update_once(
            &caller,
            ResourceKind::AccessRule,
            &rule.name,
            &request_id,
            h.backend.get_access_rule(tenant, &rule.name),
            h.backend.update_access_rule(tenant, &rule.name, &change),
        )
        .await?;
    Ok(Response::new(with_etag(updated)))
}

pub(super) async fn get(
    h: &Handlers,
    request: Request<GetAccessRuleRequest>,
) -> Result<Response<AccessRule>, Status> {
    let caller = Caller::of(&request)?;
    let name = &request.get_ref().name;
    names::parse_field(name, ACCESS_RULE, "name")?;
    Ok(Response::new(with_etag(
        h.backend.get_access_rule(&caller.tenant, name).await?,
    )))
}

pub(super) async fn list(
    h: &Handlers,
    request: Request<ListRequest>,
) -> Result<Response<ListAccessRulesResponse>, Status> {
    let caller = Caller::of(&request)?;
    let filter = h.filter(&caller, request.get_ref(), &["projects"])?;
    Ok(Response::new(ListAccessRulesResponse {
        access_rules: h
            .backend
            .list_access_rules(&filter)
            .await?
            .into_iter()
            .map(with_etag)
            .collect(),
        ..Default::default()
    }))
}

pub(super) async fn delete(
    h: &Handlers,
    request: Request<DeleteAccessRuleRequest>,
) -> Result<Response<DeleteResponse>, Status> {
    let (name, etag) = (&request.get_ref().name, &request.get_ref().etag);
    names::parse_field(name, ACCESS_RULE, "name")?;
    let caller = Caller::writer(&request)?;
    h.check_delete_etag(
        etag,
        ResourceKind::AccessRule,
        name,
        h.backend.get_access_rule(&caller.tenant, name),
        nordlys_api::update::access_rule_etag,
    )
    .await?;
    h.delete(&request, ResourceKind::AccessRule, name).await
}
