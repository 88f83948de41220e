//! Quota tiers: an organization's tier shows in its quotas; a customer asks
//! for another one (granted at once when it is the next one up and nothing
//! changed lately, else pending until an operator approves); an operator
//! sets one with UpdateQuota; each granted tier reaches every region, with a
//! status per region. Over gRPC and HTTP.

mod http_common;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    quota_service_client::QuotaServiceClient, region_status::State, tier_change,
    ApproveTierChangeRequest, GetProjectQuotaRequest, GetQuotaRequest, Quota, RegionStatus,
    RequestTierChangeRequest, UpdateQuotaRequest,
};
use nordlys_tests::{bearer, Stack, StackOpts, OPERATOR_KEY};
use serde_json::json;
use tonic::Code;

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
