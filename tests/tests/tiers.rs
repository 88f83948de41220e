//! Quota tiers: an organization's tier shows in its quotas; a customer asks
//! for another one (granted at once when it is the next one up and nothing
//! changed lately, else pending until an operator approves); an operator
//! sets one with UpdateQuota; each granted tier reaches every region, with a
//! status per region. Over gRPC and HTTP.

mod http_common;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    environment_service_client::EnvironmentServiceClient, plan_step::Action,
    quota_service_client::QuotaServiceClient, region_status::State, tier_change,
    ApplyEnvironmentResponse, ApproveTierChangeRequest, DeleteEnvironmentRequest, Environment,
    EnvironmentNetwork, EnvironmentProject, EnvironmentSpec, EnvironmentState,
    GetProjectQuotaRequest, GetQuotaRequest, PlanStep, Quota, RegionStatus,
    RequestTierChangeRequest, UpdateQuotaRequest,
};
use nordlys_tests::{apply_environment, bearer, Stack, StackOpts, OPERATOR_KEY};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

fn ready_in(statuses: &[RegionStatus]) -> Vec<&str> {
    statuses
        .iter()
        .filter(|s| s.state == State::Ready as i32)
        .map(|s| s.region.as_str())
        .collect()
}

async fn tiered_stack() -> Stack {
    Stack::start_with(StackOpts {
        quota_env: vec![
            ("NORDLYS_TIERS".into(), "[small, medium, large]".into()),
            ("NORDLYS_DEFAULT_TIER".into(), "small".into()),
        ],
        ..StackOpts::default()
    })
    .await
}

#[tokio::test]
async fn tier_changes_are_granted_or_wait_and_reach_every_region() {
    let stack = tiered_stack().await;
    let tenant = stack.tenant("tiered").await;
    let (key, org) = (&tenant.key, tenant.organization.clone());
    let mut quotas = QuotaServiceClient::new(stack.channel().await);
    let get = |key: &str| {
        bearer(
            GetQuotaRequest {
                name: format!("{org}/quotas/sto1"),
            },
            key,
        )
    };
    let ask = |tier: &str, key: &str| {
        bearer(
            RequestTierChangeRequest {
                organization: org.clone(),
                tier: tier.into(),
            },
            key,
        )
    };

    // Never given a tier: the default.
    let quota = quotas
        .get_quota(get(key))
        .await
        .expect("GetQuota")
        .into_inner();
    assert_eq!(quota.tier, "small");
    assert!(quota.pending_tier_change.is_none());

    // Two steps up waits for an operator, and shows as pending.
    let waiting = quotas
        .request_tier_change(ask("large", key))
        .await
        .expect("asked")
        .into_inner();
    assert_eq!(waiting.state, tier_change::State::Pending as i32);
    assert!(
        waiting.reason.contains("more than one step"),
        "{}",
        waiting.reason
    );
    assert_eq!(waiting.requested_by, tenant.member);
    assert!(waiting.region_status.is_empty(), "nothing applied");
    let quota = quotas
        .get_quota(get(key))
        .await
        .expect("GetQuota")
        .into_inner();
    assert_eq!(quota.tier, "small");
    assert_eq!(
        quota.pending_tier_change.map(|p| p.tier),
        Some("large".into())
    );

    // The next one up, with no change before: granted at once, everywhere.
    let granted = quotas
        .request_tier_change(ask("medium", key))
        .await
        .expect("asked")
        .into_inner();
    assert_eq!(granted.state, tier_change::State::Approved as i32);
    assert_eq!(granted.previous_tier, "small");
    assert!(granted.approve_time.is_some());
    assert_eq!(ready_in(&granted.region_status), ["osl1", "sto1"]);
    let quota = quotas
        .get_quota(get(key))
        .await
        .expect("GetQuota")
        .into_inner();
    assert_eq!(quota.tier, "medium");
    assert!(quota.pending_tier_change.is_none(), "the grant replaced it");

    // Asking again so soon waits, whatever the step.
    let soon = quotas
        .request_tier_change(ask("large", key))
        .await
        .expect("asked")
        .into_inner();
    assert_eq!(soon.state, tier_change::State::Pending as i32);
    assert!(soon.reason.contains("30 days"), "{}", soon.reason);

    // Only an operator approves.
    let denied = quotas
        .approve_tier_change(bearer(
            ApproveTierChangeRequest {
                organization: org.clone(),
            },
            key,
        ))
        .await
        .expect_err("customers cannot approve");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let approved = quotas
        .approve_tier_change(bearer(
            ApproveTierChangeRequest {
                organization: org.clone(),
            },
            OPERATOR_KEY,
        ))
        .await
        .expect("approved")
        .into_inner();
    assert_eq!(approved.state, tier_change::State::Approved as i32);
    assert_eq!(approved.tier, "large");
    assert_eq!(approved.requested_by, tenant.member, "who asked is kept");
    assert_eq!(ready_in(&approved.region_status), ["osl1", "sto1"]);
    assert_eq!(
        quotas
            .get_quota(get(key))
            .await
            .expect("GetQuota")
            .into_inner()
            .tier,
        "large"
    );
    let nothing = quotas
        .approve_tier_change(bearer(
            ApproveTierChangeRequest {
                organization: org.clone(),
            },
            OPERATOR_KEY,
        ))
        .await
        .expect_err("nothing waits");
    assert_eq!(nothing.code(), Code::FailedPrecondition, "{nothing:?}");

    // Bad requests: an unknown tier, the tier it has, another organization.
    let unknown = quotas
        .request_tier_change(ask("huge", key))
        .await
        .expect_err("unknown tier");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(
        unknown.message().contains("small, medium, large"),
        "{unknown:?}"
    );
    let same = quotas
        .request_tier_change(ask("large", key))
        .await
        .expect_err("already large");
    assert_eq!(same.code(), Code::FailedPrecondition, "{same:?}");
    let other = stack.tenant("tiered-other").await;
    let foreign = quotas
        .request_tier_change(ask("medium", &other.key))
        .await
        .expect_err("another organization's tier");
    assert_eq!(foreign.code(), Code::PermissionDenied, "{foreign:?}");

    // An operator sets a tier with UpdateQuota; it is the organization's,
    // applied in every region.
    let set = |tier: &str, key: &str| {
        bearer(
            UpdateQuotaRequest {
                quota: Some(Quota {
                    name: format!("{org}/quotas/osl1"),
                    tier: tier.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["tier".into()],
                }),
            },
            key,
        )
    };
    let refused = quotas
        .update_quota(set("small", key))
        .await
        .expect_err("customers cannot set tiers");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let bad = quotas
        .update_quota(set("huge", OPERATOR_KEY))
        .await
        .expect_err("unknown tier");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let quota = quotas
        .update_quota(set("small", OPERATOR_KEY))
        .await
        .expect("set")
        .into_inner();
    assert_eq!(quota.tier, "small");
    assert_eq!(ready_in(&quota.tier_status), ["osl1", "sto1"]);
    assert_eq!(
        quotas
            .get_quota(get(key))
            .await
            .expect("GetQuota")
            .into_inner()
            .tier,
        "small",
        "the same tier in sto1"
    );

    // Over HTTP: a POST with the custom method; 403 for approving.
    let http = Http::new(&stack.gateway.http_url()).with_key(key);
    // Changed a moment ago by the operator: waits.
    let asked = http
        .post(
            &format!("/v1/{org}/quotas:requestTierChange"),
            json!({"tier": "medium"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(asked["state"], "STATE_PENDING", "{asked}");
    http.post(&format!("/v1/{org}/quotas:approveTierChange"), json!({}))
        .await
        .expect_error(403, 7);
}

#[tokio::test]
async fn a_projects_cloud_quota_is_read_per_region() {
    let stack = tiered_stack().await;
    let tenant = stack.tenant("clouded").await;
    let other = stack.tenant("clouded-other").await;
    stack
        .create_project(&tenant.key, "clouded-web", &["sto1", "osl1"])
        .await
        .expect("CreateProject");
    let mut quotas = QuotaServiceClient::new(stack.channel().await);
    let read = |name: &str, key: &str| {
        bearer(
            GetProjectQuotaRequest {
                name: name.to_string(),
            },
            key,
        )
    };
    let quota = quotas
        .get_project_quota(read("projects/clouded-web/quota", &tenant.key))
        .await
        .expect("GetProjectQuota")
        .into_inner();
    let regions: Vec<&str> = quota.regions.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, ["osl1", "sto1"]);
    // These regions' backends keep no cloud quotas: neither limits nor use.
    assert!(
        quota
            .regions
            .iter()
            .all(|r| r.limits.is_none() && r.usage.is_none()),
        "{quota:?}"
    );
    // Another organization's project is not found; a bad name is named.
    let hidden = quotas
        .get_project_quota(read("projects/clouded-web/quota", &other.key))
        .await
        .expect_err("not theirs");
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let bad = quotas
        .get_project_quota(read("projects/clouded-web", &tenant.key))
        .await
        .expect_err("not a quota name");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // Over HTTP, at the name's path.
    let http = Http::new(&stack.gateway.http_url()).with_key(&tenant.key);
    let body = http
        .get("/v1/projects/clouded-web/quota")
        .await
        .expect(200)
        .json();
    assert_eq!(body["regions"][0]["region"], "osl1", "{body}");
}

/// An environment whose project needs tier `tier`, with one network.
fn tiered_environment(org: &str, id: &str, tier: &str) -> Environment {
    Environment {
        name: format!("{org}/environments/{id}"),
        spec: Some(EnvironmentSpec {
            project: Some(EnvironmentProject {
                project_id: format!("{id}-app"),
                regions: vec!["sto1".into(), "osl1".into()],
                tier: tier.into(),
                ..Default::default()
            }),
            networks: vec![EnvironmentNetwork {
                network_id: "backend".into(),
                region: "sto1".into(),
                cidr: "10.40.0.0/24".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The environment's tier step.
fn tier_step(response: &ApplyEnvironmentResponse) -> &PlanStep {
    response
        .plan
        .iter()
        .find(|s| s.kind == "tier")
        .expect("a tier step")
}

#[tokio::test]
async fn an_environment_raises_the_organizations_tier_to_the_one_it_needs() {
    let stack = tiered_stack().await;
    let tenant = stack.tenant("envtier").await;
    let (key, org) = (&tenant.key, tenant.organization.clone());
    let channel = stack.channel().await;
    let tier_of = |org: String, key: String| {
        let channel = channel.clone();
        async move {
            QuotaServiceClient::new(channel)
                .get_quota(bearer(
                    GetQuotaRequest {
                        name: format!("{org}/quotas/osl1"),
                    },
                    &key,
                ))
                .await
                .expect("GetQuota")
                .into_inner()
        }
    };
    let quota = tier_of(org.clone(), key.clone()).await;
    assert_eq!(quota.tiers, ["small", "medium", "large"], "in order");

    // A tier the operator never configured: refused, naming the field.
    let unknown = apply_environment(
        &channel,
        key,
        &tiered_environment(&org, "web", "huge"),
        true,
    )
    .await
    .expect_err("unknown tier");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    let fields: Vec<String> = unknown
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["environment.spec.project.tier"], "{unknown:?}");

    // Below it: the plan raises it last, after the resources.
    let env = tiered_environment(&org, "web", "medium");
    let planned = apply_environment(&channel, key, &env, true)
        .await
        .expect("plan");
    let step = tier_step(&planned);
    assert_eq!(step.action, Action::Update as i32);
    assert_eq!(step.resource, org);
    assert_eq!(step.fields, ["tier"]);
    assert!(step.reason.contains("has small"), "{}", step.reason);
    assert_eq!(planned.plan.last(), Some(step), "the tier comes last");
    assert_eq!(tier_of(org.clone(), key.clone()).await.tier, "small");

    // Applied by an owner: the next tier up, granted at once.
    let applied = apply_environment(&channel, key, &env, false)
        .await
        .expect("apply");
    assert!(
        applied.results.iter().all(|r| r.code == 0),
        "{:?}",
        applied.results
    );
    let record = applied.environment.expect("environment");
    assert_eq!(record.state, EnvironmentState::Applied as i32);
    assert!(
        !record.resources.contains(&org),
        "the tier is not the environment's: {:?}",
        record.resources
    );
    assert_eq!(tier_of(org.clone(), key.clone()).await.tier, "medium");
    let again = apply_environment(&channel, key, &env, false)
        .await
        .expect("again");
    assert!(!again.changes, "{:?}", again.plan);
    assert_eq!(tier_step(&again).action, Action::Unchanged as i32);

    // At least: a lower tier changes nothing.
    let lower = apply_environment(
        &channel,
        key,
        &tiered_environment(&org, "web", "small"),
        true,
    )
    .await
    .expect("plan");
    assert!(!lower.changes, "{:?}", lower.plan);

    // Changed a moment ago: the next ask waits for an operator. The
    // resources are made; the environment stays incomplete, and its plan
    // says what it waits for.
    let env = tiered_environment(&org, "api", "large");
    let waiting = apply_environment(&channel, key, &env, false)
        .await
        .expect("apply");
    let last = waiting.results.last().expect("results");
    assert_eq!(
        waiting.plan[last.step as usize].kind, "tier",
        "{:?}",
        waiting.results
    );
    assert_eq!(last.code, Code::FailedPrecondition as i32, "{last:?}");
    assert!(last.message.contains("operator"), "{last:?}");
    assert!(
        waiting.results[..waiting.results.len() - 1]
            .iter()
            .all(|r| r.code == 0),
        "{:?}",
        waiting.results
    );
    assert_eq!(
        waiting.environment.expect("environment").state,
        EnvironmentState::Incomplete as i32
    );
    let quota = tier_of(org.clone(), key.clone()).await;
    assert_eq!(quota.tier, "medium");
    assert_eq!(
        quota.pending_tier_change.map(|p| p.tier),
        Some("large".into())
    );
    let replanned = apply_environment(&channel, key, &env, true)
        .await
        .expect("plan");
    assert!(
        tier_step(&replanned)
            .reason
            .contains("waiting for an operator"),
        "{:?}",
        tier_step(&replanned)
    );

    // Granted: the next apply finds nothing to do and completes.
    QuotaServiceClient::new(channel.clone())
        .approve_tier_change(bearer(
            ApproveTierChangeRequest {
                organization: org.clone(),
            },
            OPERATOR_KEY,
        ))
        .await
        .expect("approved");
    let done = apply_environment(&channel, key, &env, false)
        .await
        .expect("apply");
    assert!(!done.changes, "{:?}", done.plan);
    assert_eq!(
        done.environment.expect("environment").state,
        EnvironmentState::Applied as i32
    );

    // An operator's apply sets the tier, more than one step up included.
    let other = stack.tenant("envtier-other").await;
    let env = tiered_environment(&other.organization, "ops", "large");
    let set = apply_environment(&channel, OPERATOR_KEY, &env, false)
        .await
        .expect("apply");
    assert!(set.results.iter().all(|r| r.code == 0), "{:?}", set.results);
    let quota = tier_of(other.organization.clone(), other.key.clone()).await;
    assert_eq!(quota.tier, "large");
    assert!(quota.pending_tier_change.is_none());

    // Deleting an environment leaves the tier as it is.
    EnvironmentServiceClient::new(channel.clone())
        .delete_environment(bearer(
            DeleteEnvironmentRequest {
                name: env.name.clone(),
            },
            OPERATOR_KEY,
        ))
        .await
        .expect("deleted");
    assert_eq!(
        tier_of(other.organization.clone(), other.key.clone())
            .await
            .tier,
        "large"
    );
}
