//! Environments through the gateway: a plan of a new environment changes
//! nothing; apply makes it; applying again changes nothing; a changed spec
//! gives exactly its steps; a network deleted behind the environment's
//! back shows as drift and comes back; a plan over quota is refused before
//! anything is made; a regiond killed mid-apply leaves an apply that the
//! next one finishes without duplicates; another organization can neither
//! plan against nor apply onto it; a template makes two environments with
//! different parameters; deleting an environment leaves nothing of it.

mod http_common;

use std::collections::BTreeMap;

use http_common::Http;
use serde_json::json;

use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient,
    environment_service_client::EnvironmentServiceClient,
    membership_service_client::MembershipServiceClient,
    network_service_client::NetworkServiceClient, plan_step::Action,
    project_service_client::ProjectServiceClient, user_service_client::UserServiceClient,
    ApplyEnvironmentResponse, CreateEnvironmentTemplateRequest, CreateNetworkRequest,
    DeleteEnvironmentRequest, DeleteEnvironmentTemplateRequest, DeleteNetworkRequest, Direction,
    Environment, EnvironmentAccessRule, EnvironmentMember, EnvironmentNetwork,
    EnvironmentParameter, EnvironmentProject, EnvironmentSpec, EnvironmentState,
    EnvironmentTemplate, GetEnvironmentRequest, GetProjectRequest, GetUserRequest,
    ListAccessRulesRequest, ListEnvironmentTemplatesRequest, ListEnvironmentsRequest,
    ListMembershipsRequest, ListNetworksRequest, Network, ProjectRole, Protocol, ResourceCounts,
};
use nordlys_tests::{apply_environment as apply, bearer, Regiond, Stack, StackOpts};
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

fn spec() -> EnvironmentSpec {
    EnvironmentSpec {
        parameters: vec![EnvironmentParameter {
            name: "office".into(),
            default_value: "10.0.0.0/8".into(),
            description: "Where SSH comes from".into(),
        }],
        project: Some(EnvironmentProject {
            project_id: "${environment}-web".into(),
            display_name: "Web shop (${environment})".into(),
            description: String::new(),
            regions: vec!["sto1".into(), "osl1".into()],
            tier: String::new(),
        }),
        networks: vec![EnvironmentNetwork {
            network_id: "backend".into(),
            region: "sto1".into(),
            cidr: "10.20.0.0/24".into(),
            ..Default::default()
        }],
        access_rules: vec![
            EnvironmentAccessRule {
                access_rule_id: "ssh".into(),
                region: "sto1".into(),
                direction: Direction::Ingress as i32,
                protocol: Protocol::Tcp as i32,
                port_range_min: 22,
                port_range_max: 22,
                remote_cidr: "${office}".into(),
                description: "SSH from the office".into(),
            },
            EnvironmentAccessRule {
                access_rule_id: "https".into(),
                region: "osl1".into(),
                direction: Direction::Ingress as i32,
                protocol: Protocol::Tcp as i32,
                port_range_min: 443,
                port_range_max: 443,
                remote_cidr: "0.0.0.0/0".into(),
                description: "HTTPS from anywhere".into(),
            },
        ],
        members: vec![EnvironmentMember {
            user_id: "ada".into(),
            role: ProjectRole::Member as i32,
            create_user: true,
            display_name: "Ada".into(),
            email: "ada@acme.example".into(),
        }],
    }
}

fn environment(org: &str, id: &str, spec: EnvironmentSpec) -> Environment {
    Environment {
        name: format!("{org}/environments/{id}"),
        spec: Some(spec),
        ..Default::default()
    }
}

/// The plan as `(action, resource)` pairs, unchanged steps left out.
fn changes(response: &ApplyEnvironmentResponse) -> Vec<(Action, String)> {
    response
        .plan
        .iter()
        .filter(|s| s.action != Action::Unchanged as i32)
        .map(|s| {
            (
                Action::try_from(s.action).unwrap_or(Action::Unspecified),
                s.resource.clone(),
            )
        })
        .collect()
}

fn failed(response: &ApplyEnvironmentResponse) -> Vec<String> {
    response
        .results
        .iter()
        .filter(|r| r.code != 0)
        .map(|r| format!("step {}: {} {}", r.step, r.code, r.message))
        .collect()
}

async fn networks_of(channel: &Channel, key: &str, project: &str) -> Vec<String> {
    whole_networks_of(channel, key, project)
        .await
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// A project's networks as every region holding them answers.
async fn whole_networks_of(channel: &Channel, key: &str, project: &str) -> Vec<Network> {
    nordlys_tests::whole_list!(NetworkServiceClient::new(channel.clone())
        .list_networks(bearer(
            ListNetworksRequest {
                parent: project.into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListNetworks")
        .into_inner())
    .networks
}

#[tokio::test]
async fn plan_apply_change_drift_and_delete_an_environment() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let env = environment(org, "prod", spec());

    // The plan of a new environment: everything to create, in dependency
    // order, and nothing made.
    let planned = apply(&channel, key, &env, true).await.expect("plan");
    assert!(planned.changes);
    assert!(planned.results.is_empty());
    assert_eq!(
        changes(&planned),
        [
            (Action::Create, "projects/prod-web".to_string()),
            (Action::Create, format!("{org}/users/ada")),
            (Action::Create, "projects/prod-web/members/ada".to_string()),
            (
                Action::Create,
                "projects/prod-web/networks/backend".to_string()
            ),
            (
                Action::Create,
                "projects/prod-web/accessRules/ssh".to_string()
            ),
            (
                Action::Create,
                "projects/prod-web/accessRules/https".to_string()
            ),
        ]
    );
    let missing = ProjectServiceClient::new(channel.clone())
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/prod-web".into(),
            },
            key,
        ))
        .await
        .expect_err("a plan makes nothing");
    assert_eq!(missing.code(), Code::NotFound);

    // Apply: every step done, the environment APPLIED and owning them.
    let applied = apply(&channel, key, &env, false).await.expect("apply");
    assert!(failed(&applied).is_empty(), "{:?}", failed(&applied));
    assert_eq!(applied.results.len(), 6);
    let record = applied.environment.expect("environment");
    assert_eq!(record.state, EnvironmentState::Applied as i32);
    assert_eq!(record.resources.len(), 6, "{:?}", record.resources);
    let project = ProjectServiceClient::new(channel.clone())
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/prod-web".into(),
            },
            key,
        ))
        .await
        .expect("made")
        .into_inner();
    assert_eq!(project.display_name, "Web shop (prod)");
    let rules = applied
        .plan
        .iter()
        .filter(|s| s.kind == "accessRule")
        .count();
    assert_eq!(rules, 2);

    // Again: no changes, nothing run.
    let again = apply(&channel, key, &env, false).await.expect("re-apply");
    assert!(!again.changes, "{:?}", changes(&again));
    assert!(again.results.is_empty());

    // A changed spec: new DNS servers in place, the HTTPS rule dropped, a
    // new network, SSH from another office (replaced: a rule's CIDR
    // cannot change in place).
    let mut changed = spec();
    changed.networks[0].dns_servers = vec!["10.20.0.2".into()];
    changed.access_rules.truncate(1);
    changed.networks.push(EnvironmentNetwork {
        network_id: "frontend".into(),
        region: "osl1".into(),
        cidr: "10.30.0.0/24".into(),
        ..Default::default()
    });
    let mut env2 = environment(org, "prod", changed);
    env2.parameters = BTreeMap::from([("office".to_string(), "192.0.2.0/24".to_string())])
        .into_iter()
        .collect();
    let planned = apply(&channel, key, &env2, true).await.expect("plan");
    assert_eq!(
        changes(&planned),
        [
            (
                Action::Delete,
                "projects/prod-web/accessRules/https".to_string()
            ),
            (
                Action::Delete,
                "projects/prod-web/accessRules/ssh".to_string()
            ),
            (
                Action::Update,
                "projects/prod-web/networks/backend".to_string()
            ),
            (
                Action::Create,
                "projects/prod-web/networks/frontend".to_string()
            ),
            (
                Action::Create,
                "projects/prod-web/accessRules/ssh".to_string()
            ),
        ]
    );
    let applied = apply(&channel, key, &env2, false).await.expect("apply");
    assert!(failed(&applied).is_empty(), "{:?}", failed(&applied));
    assert!(
        !apply(&channel, key, &env2, true)
            .await
            .expect("plan")
            .changes
    );

    // Drift: a network deleted directly comes back, said to be drift.
    NetworkServiceClient::new(channel.clone())
        .delete_network(bearer(
            DeleteNetworkRequest {
                name: "projects/prod-web/networks/frontend".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteNetwork");
    let drift = apply(&channel, key, &env2, true).await.expect("plan");
    let step = drift
        .plan
        .iter()
        .find(|s| s.action != Action::Unchanged as i32)
        .expect("a step");
    assert_eq!(step.resource, "projects/prod-web/networks/frontend");
    assert_eq!(step.action, Action::Create as i32);
    assert_eq!(step.reason, "changed outside the environment");
    let restored = apply(&channel, key, &env2, false).await.expect("apply");
    assert!(failed(&restored).is_empty(), "{:?}", failed(&restored));
    assert_eq!(
        networks_of(&channel, key, "projects/prod-web").await,
        [
            "projects/prod-web/networks/backend",
            "projects/prod-web/networks/frontend"
        ]
    );

    // Another organization: it cannot plan against, apply onto, read or
    // delete it.
    let other = stack.tenant("other").await;
    for validate_only in [true, false] {
        let refused = apply(&channel, &other.key, &env2, validate_only)
            .await
            .expect_err("not theirs");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let mut envs = EnvironmentServiceClient::new(channel.clone());
    let refused = envs
        .get_environment(bearer(
            GetEnvironmentRequest {
                name: env.name.clone(),
            },
            &other.key,
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = envs
        .delete_environment(bearer(
            DeleteEnvironmentRequest {
                name: env.name.clone(),
            },
            &other.key,
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let listed = envs
        .list_environments(bearer(
            ListEnvironmentsRequest {
                parent: org.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListEnvironments")
        .into_inner();
    assert_eq!(listed.environments.len(), 1);

    // Deleting it removes what it made, and frees the quota.
    let deleted = envs
        .delete_environment(bearer(
            DeleteEnvironmentRequest {
                name: env.name.clone(),
            },
            key,
        ))
        .await
        .expect("DeleteEnvironment")
        .into_inner();
    assert!(deleted.results.iter().all(|r| r.code == 0), "{deleted:?}");
    let gone = ProjectServiceClient::new(channel.clone())
        .get_project(bearer(
            GetProjectRequest {
                name: "projects/prod-web".into(),
            },
            key,
        ))
        .await
        .expect_err("the project went");
    assert_eq!(gone.code(), Code::NotFound);
    for region in ["sto1", "osl1"] {
        let mut usage = ResourceCounts::default();
        for _ in 0..50 {
            usage = stack
                .quota(key, org, region)
                .await
                .usage
                .unwrap_or_default();
            if usage == ResourceCounts::default() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(usage, ResourceCounts::default(), "{region}");
    }
    let gone = envs
        .get_environment(bearer(GetEnvironmentRequest { name: env.name }, key))
        .await
        .expect_err("the environment went");
    assert_eq!(gone.code(), Code::NotFound);
    // On OpenStack regions, the clouds hold nothing of it either.
    if std::env::var(nordlys_tests::openstack::BACKEND_ENV).as_deref() == Ok("openstack") {
        for region in ["sto1", "osl1"] {
            let cloud = nordlys_tests::openstack::shared_region(region);
            // Each test stack has its namespace: t{NATS port}.
            let ns = format!("t{}", stack.nats.port());
            let tag = format!("{ns}-project:prod-web");
            let tagged = cloud.openstack(&["project", "list", "--tags", &tag]);
            assert!(
                nordlys_tests::openstack::column(&tagged, "Name").is_empty(),
                "{region}: {tagged}"
            );
            let users = cloud.openstack(&["user", "list", "--domain", &format!("{ns}-acme")]);
            assert!(
                nordlys_tests::openstack::column(&users, "Name").is_empty(),
                "{region}: {users}"
            );
        }
    }
}

#[tokio::test]
async fn a_plan_over_quota_is_refused_before_anything_is_made() {
    let stack = Stack::start().await;
    let tenant = stack
        .tenant_with_limits(
            "tight",
            ResourceCounts {
                projects: 5,
                users: 5,
                networks: 1,
                access_rules: 5,
            },
        )
        .await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let mut two = spec();
    two.networks.push(EnvironmentNetwork {
        network_id: "second".into(),
        region: "sto1".into(),
        cidr: "10.21.0.0/24".into(),
        ..Default::default()
    });
    let env = environment(org, "big", two);
    for validate_only in [true, false] {
        let refused = apply(&channel, key, &env, validate_only)
            .await
            .expect_err("over quota");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        let failure = refused.get_details_quota_failure().expect("QuotaFailure");
        assert_eq!(failure.violations.len(), 1, "{failure:?}");
        assert_eq!(failure.violations[0].subject, format!("{org}/quotas/sto1"));
        assert!(
            failure.violations[0].description.contains("networks"),
            "{failure:?}"
        );
    }
    let usage = stack
        .quota(key, org, "sto1")
        .await
        .usage
        .unwrap_or_default();
    assert_eq!(usage, ResourceCounts::default(), "nothing was made");
}

#[tokio::test]
async fn an_apply_cut_short_by_a_killed_regiond_is_finished_by_the_next() {
    // The regions settle what a dead daemon left within seconds.
    let settle = vec![
        ("NORDLYS_SETTLE_GRACE_MS".to_string(), "2000".to_string()),
        ("NORDLYS_SETTLE_INTERVAL_MS".to_string(), "500".to_string()),
    ];
    let mut stack = Stack::start_with(StackOpts {
        regiond_env: settle.clone(),
        ..Default::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let env = environment(org, "crash", spec());
    // osl1's daemon dies right after it makes its first resource (the
    // project), before it answers: the apply stops at a step osl1 must do.
    stack.osl1.kill();
    let mut crashing: Vec<(&str, &str)> = settle
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    crashing.push(("NORDLYS_TEST_CRASH_AFTER", "created"));
    stack.osl1 = Regiond::start_env(&stack.nats, "osl1", &["--backend", "kv"], &crashing);
    stack
        .wait_for_regions(|r| nordlys_tests::instances(r, "osl1") == 1)
        .await;
    let cut = apply(&channel, key, &env, false).await.expect("apply");
    assert!(!stack.osl1.is_running(), "osl1's daemon died at the hook");
    let record = cut.environment.clone().expect("environment");
    assert_eq!(record.state, EnvironmentState::Incomplete as i32, "{cut:?}");
    assert!(
        record.resources.contains(&"projects/crash-web".to_string()),
        "{record:?}"
    );
    let env_settle: Vec<(&str, &str)> = settle
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    stack.osl1 = Regiond::start_env(&stack.nats, "osl1", &["--backend", "kv"], &env_settle);
    stack
        .wait_for_regions(|r| nordlys_tests::instances(r, "osl1") == 1)
        .await;
    let finished = apply(&channel, key, &env, false)
        .await
        .expect("apply again");
    assert!(
        failed(&finished).is_empty(),
        "{:?}\n{finished:?}",
        failed(&finished)
    );
    assert_eq!(
        finished.environment.expect("environment").state,
        EnvironmentState::Applied as i32
    );
    assert!(
        !apply(&channel, key, &env, true)
            .await
            .expect("plan")
            .changes
    );
    // Once each: one project and one user in each region, one network,
    // a rule in each region.
    let want = |region: &str| match region {
        "sto1" => (1, 1, 1, 1),
        _ => (1, 1, 0, 1),
    };
    for region in ["sto1", "osl1"] {
        let mut usage = ResourceCounts::default();
        for _ in 0..100 {
            usage = stack
                .quota(key, org, region)
                .await
                .usage
                .unwrap_or_default();
            if (
                usage.projects,
                usage.users,
                usage.networks,
                usage.access_rules,
            ) == want(region)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            (
                usage.projects,
                usage.users,
                usage.networks,
                usage.access_rules
            ),
            want(region),
            "{region}"
        );
    }
    assert_eq!(
        networks_of(&channel, key, "projects/crash-web").await,
        ["projects/crash-web/networks/backend"]
    );
}

#[tokio::test]
async fn a_template_makes_environments_from_its_parameters() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let mut envs = EnvironmentServiceClient::new(channel.clone());
    let mut template_spec = spec();
    template_spec.networks[0].cidr = "${cidr}".into();
    template_spec.parameters.push(EnvironmentParameter {
        name: "cidr".into(),
        ..Default::default()
    });
    template_spec.members.clear();
    let template = envs
        .create_environment_template(bearer(
            CreateEnvironmentTemplateRequest {
                parent: org.clone(),
                template: Some(EnvironmentTemplate {
                    description: "A web shop".into(),
                    spec: Some(template_spec),
                    ..Default::default()
                }),
                template_id: "webshop".into(),
            },
            key,
        ))
        .await
        .expect("CreateEnvironmentTemplate")
        .into_inner();
    assert_eq!(template.name, format!("{org}/environmentTemplates/webshop"));
    for (id, cidr) in [("staging", "10.50.0.0/24"), ("production", "10.60.0.0/24")] {
        let env = Environment {
            name: format!("{org}/environments/{id}"),
            template: template.name.clone(),
            parameters: [("cidr".to_string(), cidr.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let applied = apply(&channel, key, &env, false).await.expect("apply");
        assert!(failed(&applied).is_empty(), "{:?}", failed(&applied));
        let networks = whole_networks_of(&channel, key, &format!("projects/{id}-web")).await;
        assert_eq!(networks.len(), 1);
        assert_eq!(networks[0].cidr, cidr);
    }
    // A parameter the template needs and was not given: INVALID_ARGUMENT
    // naming it.
    let refused = apply(
        &channel,
        key,
        &Environment {
            name: format!("{org}/environments/broken"),
            template: template.name.clone(),
            ..Default::default()
        },
        true,
    )
    .await
    .expect_err("cidr missing");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["environment.parameters[cidr]"]);
    // A shared template: operators make it, every organization uses it,
    // only operators remove it.
    let mut shared_spec = spec();
    shared_spec.members.clear();
    shared_spec.access_rules.clear();
    shared_spec.networks[0].cidr = "10.80.0.0/24".into();
    let refused = envs
        .create_environment_template(bearer(
            CreateEnvironmentTemplateRequest {
                parent: String::new(),
                template: Some(EnvironmentTemplate {
                    spec: Some(shared_spec.clone()),
                    ..Default::default()
                }),
                template_id: "basic".into(),
            },
            key,
        ))
        .await
        .expect_err("customers make no shared templates");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let shared = envs
        .create_environment_template(bearer(
            CreateEnvironmentTemplateRequest {
                parent: String::new(),
                template: Some(EnvironmentTemplate {
                    description: "One project, one network".into(),
                    spec: Some(shared_spec),
                    ..Default::default()
                }),
                template_id: "basic".into(),
            },
            nordlys_tests::OPERATOR_KEY,
        ))
        .await
        .expect("a shared template")
        .into_inner();
    assert_eq!(shared.name, "environmentTemplates/basic");
    let listed: Vec<String> = envs
        .list_environment_templates(bearer(
            ListEnvironmentTemplatesRequest {
                parent: org.clone(),
            },
            key,
        ))
        .await
        .expect("ListEnvironmentTemplates")
        .into_inner()
        .templates
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        listed,
        [
            format!("{org}/environmentTemplates/webshop"),
            "environmentTemplates/basic".to_string()
        ]
    );
    let from_shared = apply(
        &channel,
        key,
        &Environment {
            name: format!("{org}/environments/lab"),
            template: shared.name.clone(),
            ..Default::default()
        },
        false,
    )
    .await
    .expect("apply from the shared template");
    assert!(
        failed(&from_shared).is_empty(),
        "{:?}",
        failed(&from_shared)
    );
    let refused = envs
        .delete_environment_template(bearer(
            DeleteEnvironmentTemplateRequest {
                name: shared.name.clone(),
            },
            key,
        ))
        .await
        .expect_err("customers remove no shared templates");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Another organization cannot use it.
    let other = stack.tenant("other").await;
    let refused = apply(
        &channel,
        &other.key,
        &Environment {
            name: format!("{}/environments/copy", other.organization),
            template: template.name.clone(),
            parameters: [("cidr".to_string(), "10.70.0.0/24".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
        true,
    )
    .await
    .expect_err("not their template");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

/// The same over JSON/HTTP, as README shows it with curl: a plan, an
/// apply, the environment read back, and its deletion.
#[tokio::test]
async fn an_apply_without_a_deadline_outlasts_the_default_one() {
    // One call's default deadline is 1 s here, and every list of the
    // regions takes 0.6 s: the plan of an existing environment (a list of
    // each kind) needs longer than one call. Without a deadline of the
    // caller's the apply gets the longest; each call it makes stays within
    // the default.
    // The gateway's deadlines, whatever the regions' backend: a cloud's own
    // calls take seconds under test load, which would leave nothing to
    // measure against a deadline of one second.
    if std::env::var("NORDLYS_TEST_BACKEND").is_ok() {
        println!("the gateway's deadlines are tested on kv regions");
        return;
    }
    let (default_ms, list_ms) = (1000, 600);
    let stack = Stack::start_with(StackOpts {
        gateway_env: vec![("NORDLYS_DEFAULT_TIMEOUT_MS".into(), default_ms.to_string())],
        regiond_env: vec![("NORDLYS_TEST_SLOW_LIST_MS".into(), list_ms.to_string())],
        ..Default::default()
    })
    .await;
    let one_call = std::time::Duration::from_millis(default_ms);
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let env = environment(org, "slow", spec());
    let applied = apply(&channel, key, &env, false).await.expect("apply");
    assert!(failed(&applied).is_empty(), "{:?}", failed(&applied));
    let started = std::time::Instant::now();
    let again = apply(&channel, key, &env, false)
        .await
        .expect("apply again over gRPC");
    let took = started.elapsed();
    assert!(!again.changes, "{again:?}");
    assert_eq!(
        again.environment.expect("environment").state,
        EnvironmentState::Applied as i32
    );
    assert!(took > one_call, "{took:?}");

    let http = Http::new(&stack.gateway.http_url()).with_key(key);
    let body = json!({"environment": {"spec": {
        "project": {"projectId": "lag", "regions": ["sto1", "osl1"]},
        "networks": [{"networkId": "backend", "region": "sto1", "cidr": "10.20.0.0/24"}]
    }}});
    let path = "/v1/organizations/acme/environments/lag:apply";
    http.post(path, body.clone()).await.expect(200);
    let started = std::time::Instant::now();
    let answer = http.post(path, body.clone()).await.expect(200).json();
    let took = started.elapsed();
    assert_eq!(answer["changes"], false, "{answer}");
    assert!(took > one_call, "{took:?}");
    // A caller's own deadline still holds.
    http.send(
        "POST",
        path,
        body.to_string(),
        &[("X-Request-Timeout", "0.9")],
    )
    .await
    .expect_error(504, 4);
    http.send("DELETE", "/v1/organizations/acme/environments/lag", "", &[])
        .await
        .expect(200);
}

#[tokio::test]
async fn environments_over_http() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let http = Http::new(&stack.gateway.http_url()).with_key(&tenant.key);
    let body = json!({
        "environment": {
            "parameters": {"office": "192.0.2.0/24"},
            "spec": {
                "parameters": [{"name": "office", "defaultValue": "10.0.0.0/8"}],
                "project": {"projectId": "shop", "displayName": "Shop", "regions": ["sto1", "osl1"]},
                "networks": [{"networkId": "backend", "region": "sto1", "cidr": "10.20.0.0/24"}],
                "accessRules": [{"accessRuleId": "ssh", "region": "sto1", "direction": "INGRESS",
                                 "protocol": "TCP", "portRangeMin": 22, "portRangeMax": 22,
                                 "remoteCidr": "${office}"}]
            }
        },
        "validateOnly": true
    });
    let path = "/v1/organizations/acme/environments/shop:apply";
    let plan = http.post(path, body.clone()).await.expect(200).json();
    assert_eq!(plan["changes"], true, "{plan}");
    assert_eq!(plan["plan"][0]["action"], "ACTION_CREATE", "{plan}");
    assert_eq!(plan["plan"][0]["resource"], "projects/shop", "{plan}");
    let mut apply = body.clone();
    apply["validateOnly"] = json!(false);
    let applied = http.post(path, apply.clone()).await.expect(200).json();
    assert_eq!(
        applied["environment"]["state"], "ENVIRONMENT_STATE_APPLIED",
        "{applied}"
    );
    let again = http.post(path, apply).await.expect(200).json();
    assert_eq!(again["changes"], false, "{again}");
    // What it manages says so.
    let project = http.get("/v1/projects/shop").await.expect(200).json();
    assert_eq!(
        project["managedBy"], "organizations/acme/environments/shop",
        "{project}"
    );
    let networks = http
        .get("/v1/projects/shop/networks")
        .await
        .expect(200)
        .json();
    assert_eq!(
        networks["networks"][0]["managedBy"], "organizations/acme/environments/shop",
        "{networks}"
    );
    let got = http
        .get("/v1/organizations/acme/environments/shop")
        .await
        .expect(200)
        .json();
    assert_eq!(got["resources"].as_array().map(Vec::len), Some(3), "{got}");
    let listed = http
        .get("/v1/organizations/acme/environments")
        .await
        .expect(200)
        .json();
    assert_eq!(
        listed["environments"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    // A bad spec: 400 with the field named.
    let mut bad = body;
    bad["environment"]["spec"]["networks"][0]["cidr"] = json!("10.20.0.0/33");
    let error = http.post(path, bad).await.expect_error(400, 3);
    assert!(
        error
            .to_string()
            .contains("environment.spec.networks[0].cidr"),
        "{error}"
    );
    http.send(
        "DELETE",
        "/v1/organizations/acme/environments/shop",
        "",
        &[],
    )
    .await
    .expect(200);
    http.get("/v1/projects/shop").await.expect_error(404, 5);
}

/// The `managed_by` of every resource in `response`'s list, by name.
fn managed<T>(items: &[T], name: fn(&T) -> &str, by: fn(&T) -> &str) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|i| (name(i).to_string(), by(i).to_string()))
        .collect()
}

/// GetProject `name`, read with `key`.
async fn get_project(
    channel: &Channel,
    key: &str,
    name: &str,
) -> nordlys_proto::pb::nordlys::v1::Project {
    ProjectServiceClient::new(channel.clone())
        .get_project(bearer(GetProjectRequest { name: name.into() }, key))
        .await
        .expect("GetProject")
        .into_inner()
}

#[tokio::test]
async fn what_an_environment_manages_says_so_and_no_other_environment_takes_it() {
    let stack = Stack::start().await;
    let tenant = stack.tenant("acme").await;
    let (key, org) = (&tenant.key, &tenant.organization);
    let channel = stack.channel().await;
    let env = environment(org, "prod", spec());
    let applied = apply(&channel, key, &env, false).await.expect("apply");
    assert!(failed(&applied).is_empty(), "{:?}", failed(&applied));
    let by = env.name.clone();

    // Each kind, read alone and listed, names the environment.
    let project = get_project(&channel, key, "projects/prod-web").await;
    assert_eq!(project.managed_by, by);
    let user = UserServiceClient::new(channel.clone())
        .get_user(bearer(
            GetUserRequest {
                name: format!("{org}/users/ada"),
            },
            key,
        ))
        .await
        .expect("GetUser")
        .into_inner();
    assert_eq!(user.managed_by, by);
    let members = nordlys_tests::whole_list!(MembershipServiceClient::new(channel.clone())
        .list_memberships(bearer(
            ListMembershipsRequest {
                parent: "projects/prod-web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListMemberships")
        .into_inner());
    assert_eq!(
        managed(&members.memberships, |m| &m.name, |m| &m.managed_by),
        BTreeMap::from([("projects/prod-web/members/ada".to_string(), by.clone())])
    );
    let rules = nordlys_tests::whole_list!(AccessRuleServiceClient::new(channel.clone())
        .list_access_rules(bearer(
            ListAccessRulesRequest {
                parent: "projects/prod-web".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("ListAccessRules")
        .into_inner());
    assert_eq!(rules.access_rules.len(), 2);
    assert!(
        rules.access_rules.iter().all(|r| r.managed_by == by),
        "{:?}",
        rules.access_rules
    );

    // One made directly in its project is not the environment's, even
    // when its creator claims otherwise (the field is output only).
    let mut networks = NetworkServiceClient::new(channel.clone());
    let direct = networks
        .create_network(bearer(
            CreateNetworkRequest {
                parent: "projects/prod-web".into(),
                network: Some(Network {
                    region: "sto1".into(),
                    cidr: "10.99.0.0/24".into(),
                    managed_by: by.clone(),
                    ..Default::default()
                }),
                network_id: "direct".into(),
                request_id: String::new(),
            },
            key,
        ))
        .await
        .expect("CreateNetwork")
        .into_inner();
    assert_eq!(direct.managed_by, "");
    let listed = whole_networks_of(&channel, key, "projects/prod-web").await;
    assert_eq!(
        managed(&listed, |n| &n.name, |n| &n.managed_by),
        BTreeMap::from([
            ("projects/prod-web/networks/backend".to_string(), by.clone()),
            (
                "projects/prod-web/networks/direct".to_string(),
                String::new()
            ),
        ])
    );
    // The environment leaves it alone.
    let again = apply(&channel, key, &env, true).await.expect("plan");
    assert!(!again.changes, "{:?}", changes(&again));

    // Another environment naming the same project is refused, naming the
    // environment that manages it.
    let mut rival = spec();
    if let Some(p) = rival.project.as_mut() {
        p.project_id = "prod-web".into();
    }
    let refused = apply(&channel, key, &environment(org, "rival", rival), true)
        .await
        .expect_err("managed by prod");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(&format!("managed by {by}")),
        "{refused:?}"
    );

    // Another organization naming the same project id learns nothing of
    // this one, and marks nothing of it.
    let other = stack.tenant("other").await;
    let mut squat = spec();
    if let Some(p) = squat.project.as_mut() {
        p.project_id = "prod-web".into();
    }
    let squat = environment(&other.organization, "squat", squat);
    let tried = apply(&channel, &other.key, &squat, false).await;
    let said = format!("{tried:?}");
    assert!(!said.contains(org.as_str()), "{said}");
    if let Ok(tried) = &tried {
        assert!(!failed(tried).is_empty(), "the id is taken: {said}");
    }
    let project = get_project(&channel, key, "projects/prod-web").await;
    assert_eq!(project.managed_by, by, "still this organization's");
    let operator = get_project(&channel, nordlys_tests::OPERATOR_KEY, "projects/prod-web").await;
    assert_eq!(operator.managed_by, by);
    // An operator applying it for the other organization is refused: the
    // project is this organization's.
    let refused = apply(&channel, nordlys_tests::OPERATOR_KEY, &squat, true)
        .await
        .expect_err("another organization's project");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(org.as_str()), "{refused:?}");

    // Deleted with the environment, the marks go: a project made anew
    // under the same id is nobody's.
    networks
        .delete_network(bearer(
            DeleteNetworkRequest {
                name: direct.name.clone(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("DeleteNetwork");
    let deleted = EnvironmentServiceClient::new(channel.clone())
        .delete_environment(bearer(
            DeleteEnvironmentRequest {
                name: env.name.clone(),
            },
            key,
        ))
        .await
        .expect("DeleteEnvironment")
        .into_inner();
    assert!(deleted.results.iter().all(|r| r.code == 0), "{deleted:?}");
    let anew = stack
        .create_project(key, "prod-web", &["sto1"])
        .await
        .expect("made anew");
    assert_eq!(anew.managed_by, "");
}
