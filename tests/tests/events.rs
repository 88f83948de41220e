//! Audit events: every change is a CloudEvents event on NATS (binary mode),
//! kept by the NORDLYS_EVENTS stream, followed live with WatchEvents over
//! gRPC, NDJSON and Server-Sent Events, and paged with ListEvents. An
//! organization never sees another's events; a watch resumes with no gap
//! and no duplicate; a NATS outage loses none. A resource filter keeps one
//! project and what is under it; an operator follows every organization;
//! each kind of change, and a viewer's refused write, has its own type. A
//! member's removal names its keys too, a role change is an update, the
//! quota service's refusals are recorded like the gateway's, and a
//! reconciliation records each quota it corrected.

mod http_common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    access_rule_service_client::AccessRuleServiceClient, event::Data,
    event_service_client::EventServiceClient, membership_service_client::MembershipServiceClient,
    network_service_client::NetworkServiceClient,
    organization_service_client::OrganizationServiceClient,
    project_service_client::ProjectServiceClient, quota_service_client::QuotaServiceClient,
    user_service_client::UserServiceClient, AccessRule, ApiKey, CreateAccessRuleRequest,
    CreateApiKeyRequest, CreateMemberRequest, CreateMembershipRequest, CreateNetworkRequest,
    CreateUserRequest, DeleteAccessRuleRequest, DeleteApiKeyRequest, DeleteMemberRequest,
    DeleteMembershipRequest, DeleteNetworkRequest, DeleteProjectRequest, DeleteUserRequest,
    Direction, Event, GetOrganizationRequest, GetQuotaRequest, ListApiKeysRequest,
    ListEventsRequest, ListMembersRequest, ListQuotasRequest, Member, Membership, Network,
    OrganizationRole, Project, ProjectRole, Protocol, Quota, ReconcileQuotasRequest,
    ResourceCounts, UpdateNetworkRequest, UpdateProjectRequest, UpdateQuotaRequest,
    UpdateUserRequest, User, WatchEventsRequest,
};
use nordlys_tests::{bearer, instances, Gateway, GatewayOpts, Stack, StackOpts, OPERATOR_KEY};
use prost::Message;
use tonic::Code;

fn opts() -> StackOpts {
    StackOpts {
        backend: "memory".to_owned(),
        sto1_instances: 1,
        ..StackOpts::default()
    }
}

const CREATED: &str = "io.nordlys.v1.project.created";
const DELETED: &str = "io.nordlys.v1.project.deleted";

/// The next event of a watch, within 10 s.
async fn next(watch: &mut tonic::Streaming<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no event within 10 s")
        .expect("the watch ended")
        .expect("the watch failed")
}

/// Every event of `organization` (or all, operators), through ListEvents
/// pages of `page_size`.
async fn list_all(
    events: &mut EventServiceClient<tonic::transport::Channel>,
    key: &str,
    organization: &str,
    types: &[&str],
    page_size: i32,
) -> Vec<Event> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = events
            .list_events(bearer(
                ListEventsRequest {
                    organization: organization.to_owned(),
                    types: types.iter().map(|t| t.to_string()).collect(),
                    resource: String::new(),
                    page_size,
                    page_token: page_token.clone(),
                },
                key,
            ))
            .await
            .expect("ListEvents")
            .into_inner();
        assert!(page.events.len() <= page_size as usize);
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn changes_are_events_live_on_nats_and_in_the_log() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());

    // A plain NATS subscriber sees the CloudEvents binding itself.
    let nats = async_nats::connect(stack.nats.url()).await.expect("NATS");
    let mut raw = nats
        .subscribe("nordlys.events.acme.>")
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");

    let mut watch = events
        .watch_events(bearer(WatchEventsRequest::default(), &acme.key))
        .await
        .expect("WatchEvents")
        .into_inner();
    let mut create = bearer(
        nordlys_proto::pb::nordlys::v1::CreateProjectRequest {
            project: Some(nordlys_proto::pb::nordlys::v1::Project {
                display_name: "Web".to_owned(),
                regions: vec!["sto1".to_owned(), "osl1".to_owned()],
                ..Default::default()
            }),
            project_id: "web".to_owned(),
            request_id: "req-web".to_owned(),
        },
        &acme.key,
    );
    create.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("ascii"),
    );
    let project = ProjectServiceClient::new(channel.clone())
        .create_project(create)
        .await
        .expect("CreateProject")
        .into_inner();

    let created = next(&mut watch).await;
    assert_eq!(created.r#type, CREATED);
    assert_eq!(created.subject, "projects/web");
    assert_eq!(created.organization, acme.organization);
    assert_eq!(
        created.name,
        format!("{}/events/{}", acme.organization, created.sequence)
    );
    assert_eq!(created.source, "//nordlys/gateway");
    let actor = created.actor.clone().expect("actor");
    assert_eq!(actor.member, acme.member);
    assert_eq!(actor.role, "owner");
    assert!(
        actor
            .api_key
            .starts_with(&format!("{}/apiKeys/", acme.organization)),
        "{actor:?}"
    );
    let origin = created.origin.clone().expect("origin");
    assert_eq!(origin.peer_address, "127.0.0.1");
    assert_eq!(origin.request_id, "req-web");
    assert_eq!(
        origin.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    assert_eq!(created.outcome.clone().expect("outcome").code, 0);
    match &created.data {
        Some(Data::Project(p)) => {
            assert_eq!(p.name, project.name);
            assert_eq!(p.regions, vec!["sto1".to_owned(), "osl1".to_owned()]);
        }
        other => panic!("the event carries {other:?}, not the project"),
    }

    let message = tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .expect("no NATS message")
        .expect("subscription ended");
    assert_eq!(
        message.subject.as_str(),
        format!("nordlys.events.acme.{CREATED}")
    );
    let headers = message.headers.clone().expect("binary mode: headers");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-type").as_deref(), Some(CREATED));
    assert_eq!(header("ce-subject").as_deref(), Some("projects/web"));
    assert_eq!(header("ce-id"), Some(created.id.clone()));
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/protobuf")
    );
    let data = nordlys_proto::pb::nordlys::v1::Project::decode(message.payload.as_ref())
        .expect("the payload is the project in protobuf");
    assert_eq!(data.name, "projects/web");

    ProjectServiceClient::new(channel.clone())
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/web".to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("DeleteProject");
    let deleted = next(&mut watch).await;
    assert_eq!(deleted.r#type, DELETED);
    assert_eq!(deleted.subject, "projects/web");
    assert!(deleted.sequence > created.sequence);
    assert_eq!(deleted.data, None);

    // The log: the tenant's setup (by the operator), then the project's
    // life, in order, the same whatever the page size.
    let log = list_all(&mut events, &acme.key, "", &[], 100).await;
    let types: Vec<&str> = log.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            "io.nordlys.v1.organization.created",
            "io.nordlys.v1.member.created",
            "io.nordlys.v1.quota.updated",
            "io.nordlys.v1.quota.updated",
            "io.nordlys.v1.api_key.created",
            CREATED,
            DELETED,
        ]
    );
    assert_eq!(log[0].actor.clone().expect("actor").role, "operator");
    let paged = list_all(&mut events, &acme.key, "", &[], 2).await;
    assert_eq!(paged, log);
    let only = list_all(&mut events, &acme.key, "", &[CREATED], 10).await;
    assert_eq!(only, vec![log[5].clone()]);
    match &log[4].data {
        Some(Data::ApiKey(key)) => assert!(!key.name.is_empty()),
        other => panic!("api key event carries {other:?}"),
    }

    // A page token belongs to its query.
    let first = events
        .list_events(bearer(
            ListEventsRequest {
                page_size: 1,
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("ListEvents")
        .into_inner();
    let err = events
        .list_events(bearer(
            ListEventsRequest {
                page_size: 1,
                types: vec![CREATED.to_owned()],
                page_token: first.next_page_token,
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect_err("a token of another query");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = events
        .watch_events(bearer(
            WatchEventsRequest {
                types: vec!["io.nordlys.v1.project.>".to_owned()],
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect_err("a wildcard type");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The JSON objects of an NDJSON body.
fn ndjson(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

/// The events of an SSE body: (id, event, data JSON).
fn sse(body: &str) -> Vec<(Option<String>, Option<String>, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut kind, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(
                        serde_json::from_str(v).unwrap_or_else(|e| panic!("bad data {v:?}: {e}")),
                    );
                }
            }
            data.map(|d| (id, kind, d))
        })
        .collect()
}

#[tokio::test]
async fn organizations_never_see_each_others_events() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let globex = stack.tenant("globex").await;
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());

    let mut watch = events
        .watch_events(bearer(WatchEventsRequest::default(), &globex.key))
        .await
        .expect("WatchEvents")
        .into_inner();
    stack
        .create_project(&acme.key, "secret-plans", &["sto1"])
        .await
        .expect("acme's project");
    stack
        .create_project(&globex.key, "own", &["sto1"])
        .await
        .expect("globex's project");
    let seen = next(&mut watch).await;
    assert_eq!(seen.organization, globex.organization);
    assert_eq!(
        seen.subject, "projects/own",
        "acme's project came first, unseen"
    );

    // Asking for another organization's events is refused, and recorded.
    for resume_after in [None, Some(0)] {
        let err = events
            .watch_events(bearer(
                WatchEventsRequest {
                    organization: acme.organization.clone(),
                    resume_after,
                    ..Default::default()
                },
                &globex.key,
            ))
            .await
            .expect_err("another organization's watch");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let err = events
        .list_events(bearer(
            ListEventsRequest {
                organization: acme.organization.clone(),
                ..Default::default()
            },
            &globex.key,
        ))
        .await
        .expect_err("another organization's log");
    assert_eq!(err.code(), Code::PermissionDenied);
    let denied = next(&mut watch).await;
    assert_eq!(denied.r#type, "io.nordlys.v1.authorization.denied");
    assert_eq!(denied.organization, globex.organization);
    assert_eq!(denied.subject, acme.organization);
    assert_eq!(
        denied.outcome.expect("outcome").code,
        Code::PermissionDenied as i32
    );

    // gRPC: the whole log of each, from the start.
    for (tenant, other) in [(&acme, &globex), (&globex, &acme)] {
        let all = list_all(&mut events, &tenant.key, "", &[], 50).await;
        assert!(all.len() >= 6, "{} events", all.len());
        for event in &all {
            assert_eq!(event.organization, tenant.organization, "{event:?}");
            assert!(
                !event.subject.contains(&other.organization[14..])
                    || event.r#type.ends_with("denied")
            );
        }
    }

    // Operators see every organization's, or one's.
    let everything = list_all(&mut events, OPERATOR_KEY, "", &[CREATED], 100).await;
    let owners: HashSet<&str> = everything.iter().map(|e| e.organization.as_str()).collect();
    assert_eq!(
        owners,
        HashSet::from([acme.organization.as_str(), globex.organization.as_str()])
    );
    let one = list_all(
        &mut events,
        OPERATOR_KEY,
        &acme.organization,
        &[CREATED],
        100,
    )
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].subject, "projects/secret-plans");

    // HTTP: NDJSON and SSE from the start of the log, for 2 s.
    let http = Http::new(&stack.gateway.http_url()).with_key(&globex.key);
    let reply = http
        .send(
            "GET",
            "/v1/events:watch?resumeAfter=0",
            "",
            &[("x-request-timeout", "2s")],
        )
        .await
        .expect(200);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let lines = ndjson(&reply.text());
    let (results, errors): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.get("result").is_some());
    assert!(results.len() >= 6, "{lines:?}");
    for line in &results {
        assert_eq!(
            line["result"]["organization"],
            globex.organization.as_str(),
            "{line}"
        );
    }
    assert_eq!(
        errors.len(),
        1,
        "the stream ends with its deadline: {lines:?}"
    );
    assert_eq!(errors[0]["error"]["code"], 4);

    let reply = http
        .send(
            "GET",
            "/v1/events:watch?resumeAfter=0",
            "",
            &[("accept", "text/event-stream"), ("x-request-timeout", "2s")],
        )
        .await
        .expect(200);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let sse_events = sse(&reply.text());
    let mut last = 0u64;
    for (id, kind, data) in &sse_events {
        if kind.as_deref() == Some("error") {
            assert_eq!(data["code"], 4);
            continue;
        }
        assert_eq!(data["organization"], globex.organization.as_str());
        let id: u64 = id.as_deref().expect("id:").parse().expect("numeric id");
        assert_eq!(data["sequence"], id.to_string());
        assert_eq!(kind.as_deref(), data["type"].as_str());
        assert!(id > last, "ids increase");
        last = id;
    }
    assert_eq!(sse_events.len(), results.len() + 1);

    let reply = http
        .send(
            "GET",
            &format!("/v1/events:watch?organization={}", acme.organization),
            "",
            &[("accept", "text/event-stream"), ("x-request-timeout", "2s")],
        )
        .await;
    reply.expect_error(403, 7);
    let reply = http.get("/v1/events?pageSize=1000").await.expect(200);
    for event in reply.json()["events"].as_array().expect("events") {
        assert_eq!(event["organization"], globex.organization.as_str());
    }
}

#[tokio::test]
async fn a_watch_resumes_after_a_gateway_restart_with_no_gap_and_no_duplicate() {
    let mut stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let mut watch = EventServiceClient::new(stack.channel().await)
        .watch_events(bearer(
            WatchEventsRequest {
                types: vec![CREATED.to_owned()],
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("WatchEvents")
        .into_inner();
    for i in 0..5 {
        stack
            .create_project(&acme.key, &format!("prj-{i}"), &["sto1"])
            .await
            .expect("CreateProject");
    }
    let mut last = 0;
    for i in 0..5 {
        let event = next(&mut watch).await;
        assert_eq!(event.subject, format!("projects/prj-{i}"));
        last = event.sequence;
    }

    // The gateway goes; another serves the rest and the resumed watch.
    let mut opts = GatewayOpts::default();
    opts.args.extend(["--route".to_owned(), "auto".to_owned()]);
    let other = Gateway::start_at(&stack.nats.url(), &opts, &[]);
    // A graceful stop ends open watches (UNAVAILABLE: resume elsewhere)
    // rather than waiting for them.
    // Off the runtime: the watch's client must go on reading meanwhile.
    let mut old = std::mem::replace(&mut stack.gateway, other);
    let (status, old) = tokio::task::spawn_blocking(move || (old.terminate(), old))
        .await
        .expect("terminate");
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway did not stop by itself with a watch open: {status:?}\n{}",
        nordlys_tests::log_tail(&old.log_path())
    );
    let other = &stack.gateway;
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch did not end with its gateway");
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the watch ended with {other:?}"),
    }
    let channel = other.channel().await;
    other
        .wait_for_regions(|r| instances(r, "sto1") == 1 && instances(r, "osl1") == 1)
        .await;
    for i in 5..10 {
        other
            .create_project(&acme.key, &format!("prj-{i}"), &["sto1"])
            .await
            .expect("CreateProject");
    }
    let mut resumed = EventServiceClient::new(channel.clone())
        .watch_events(bearer(
            WatchEventsRequest {
                types: vec![CREATED.to_owned()],
                resume_after: Some(last),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("WatchEvents")
        .into_inner();
    for i in 5..10 {
        let event = next(&mut resumed).await;
        assert_eq!(
            event.subject,
            format!("projects/prj-{i}"),
            "no gap, no duplicate"
        );
        assert!(event.sequence > last);
        last = event.sequence;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), resumed.next())
            .await
            .is_err(),
        "nothing more"
    );

    // An EventSource resumes with Last-Event-ID.
    let http = Http::new(&other.http_url()).with_key(&acme.key);
    let reply = http
        .send(
            "GET",
            &format!("/v1/events:watch?types={CREATED}"),
            "",
            &[
                ("accept", "text/event-stream"),
                ("last-event-id", "0"),
                ("x-request-timeout", "2s"),
            ],
        )
        .await
        .expect(200);
    let subjects: Vec<String> = sse(&reply.text())
        .into_iter()
        .filter(|(_, kind, _)| kind.as_deref() == Some(CREATED))
        .map(|(_, _, data)| data["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("projects/prj-{i}")).collect();
    assert_eq!(subjects, expected);
}

#[tokio::test]
async fn a_resume_from_removed_events_is_a_failed_precondition() {
    let stack = Stack::start_with(StackOpts {
        // A tiny log: the oldest events go as new ones come.
        gateway_env: vec![("NORDLYS_EVENTS_MAX_BYTES".to_owned(), "4096".to_owned())],
        ..opts()
    })
    .await;
    let acme = stack.tenant("acme").await;
    for i in 0..30 {
        stack
            .create_project(&acme.key, &format!("prj-{i}"), &["sto1"])
            .await
            .expect("CreateProject");
    }
    let mut events = EventServiceClient::new(stack.channel().await);
    let kept = list_all(&mut events, &acme.key, "", &[], 100).await;
    assert!(!kept.is_empty());
    assert!(kept[0].sequence > 1, "the oldest were removed");
    let err = events
        .watch_events(bearer(
            WatchEventsRequest {
                resume_after: Some(1),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect_err("events after 1 are gone");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // From the oldest kept on works.
    let mut watch = events
        .watch_events(bearer(
            WatchEventsRequest {
                resume_after: Some(kept[0].sequence - 1),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("WatchEvents from the oldest kept")
        .into_inner();
    assert_eq!(next(&mut watch).await.sequence, kept[0].sequence);
}

#[tokio::test]
async fn ten_thousand_changes_with_nats_down_for_two_seconds_all_arrive() {
    const CHANGES: usize = 10_000;
    let mut stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let channel = stack.channel().await;
    let before = list_all(
        &mut EventServiceClient::new(channel.clone()),
        OPERATOR_KEY,
        &acme.organization,
        &["io.nordlys.v1.quota.updated"],
        1000,
    )
    .await
    .len();

    // Each change sets a limit no other sets: its event says which it was.
    let next_value = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_000));
    let done = std::sync::Arc::new(tokio::sync::Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (channel, organization) = (channel.clone(), acme.organization.clone());
        let (next_value, done) = (next_value.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut quotas = QuotaServiceClient::new(channel);
            loop {
                if done.lock().await.len() >= CHANGES {
                    return;
                }
                let value = next_value.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let request = UpdateQuotaRequest {
                    quota: Some(Quota {
                        name: format!("{organization}/quotas/sto1"),
                        limits: Some(ResourceCounts {
                            projects: value as i64,
                            users: 10,
                            networks: 10,
                            access_rules: 10,
                        }),
                        ..Default::default()
                    }),
                    update_mask: None,
                };
                let mut request = bearer(request, OPERATOR_KEY);
                request.set_timeout(Duration::from_secs(2));
                match quotas.update_quota(request).await {
                    Ok(_) => {
                        done.lock().await.insert(value);
                    }
                    // NATS is away: the call fails and made no change.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    // NATS goes away for 2 s in the middle.
    loop {
        if done.lock().await.len() >= CHANGES / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.nats.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.nats.restart();
    for worker in workers {
        worker.await.expect("worker");
    }
    let done = done.lock().await.clone();
    assert!(done.len() >= CHANGES);

    // Every change arrives once: the log holds exactly the values set.
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut events = EventServiceClient::new(stack.channel().await);
        let all = list_all(
            &mut events,
            OPERATOR_KEY,
            &acme.organization,
            &["io.nordlys.v1.quota.updated"],
            1000,
        )
        .await;
        seen.clear();
        let mut ids = HashSet::new();
        for event in &all[before..] {
            assert!(ids.insert(event.id.clone()), "event {} twice", event.id);
            match &event.data {
                Some(Data::Quota(q)) => {
                    seen.insert(q.limits.expect("limits").projects as u64);
                }
                other => panic!("quota event carries {other:?}"),
            }
        }
        if seen.len() >= done.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let missing: Vec<_> = done.difference(&seen).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} changes have no event, e.g. {missing:?}",
        done.difference(&seen).count()
    );
}

/// One series of the gateway's `/metrics`.
async fn metric(http: &Http, series: &str) -> u64 {
    let text = http.get("/metrics").await.expect(200).text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

#[tokio::test]
async fn a_full_outbox_drops_and_counts_and_never_blocks_a_call() {
    let mut stack = Stack::start_with(StackOpts {
        gateway_env: vec![("NORDLYS_EVENTS_OUTBOX".to_owned(), "8".to_owned())],
        ..opts()
    })
    .await;
    let acme = stack.tenant("acme").await;
    let globex = stack.tenant("globex").await;
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let list_of = |organization: &str| {
        bearer(
            nordlys_proto::pb::nordlys::v1::ListProjectsRequest {
                organization: organization.to_owned(),
                ..Default::default()
            },
            &acme.key,
        )
    };
    // The key is fresh in the gateway's cache: refused calls need no NATS.
    projects
        .list_projects(list_of(&acme.organization))
        .await
        .expect("ListProjects");
    let http = Http::new(&stack.gateway.http_url());
    let stored_before = metric(&http, "nordlys_gateway_events_published_total").await;

    stack.nats.stop();
    const REFUSED: u64 = 400;
    let started = std::time::Instant::now();
    for _ in 0..REFUSED {
        let err = projects
            .list_projects(list_of(&globex.organization))
            .await
            .expect_err("another organization");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "recording events made calls wait: {:?}",
        started.elapsed()
    );
    let dropped = metric(&http, "nordlys_gateway_events_dropped_total").await;
    // The outbox holds 8, and the publisher one window of 256 it retries.
    assert!(dropped >= REFUSED - 8 - 256, "{dropped} dropped");
    assert!(dropped < REFUSED, "{dropped} dropped");

    stack.nats.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&http, "nordlys_gateway_events_queued").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = metric(&http, "nordlys_gateway_events_published_total").await - stored_before;
    assert_eq!(
        stored + dropped,
        REFUSED,
        "every refusal is stored or counted as dropped"
    );
    let mut events = EventServiceClient::new(stack.channel().await);
    let denied = list_all(
        &mut events,
        &acme.key,
        "",
        &["io.nordlys.v1.authorization.denied"],
        1000,
    )
    .await;
    assert_eq!(denied.len() as u64, stored);
}

type Events = EventServiceClient<tonic::transport::Channel>;

/// Waits (10 s at most) until the log `key` reads (`organization`'s, or
/// the caller's) holds `count` events of `kind`. The outbox publishes in
/// order, so every event recorded before them is stored too, and a watch
/// started now sees only what comes after.
async fn settled(events: &mut Events, key: &str, organization: &str, kind: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = list_all(events, key, organization, &[kind], 100)
            .await
            .len();
        if n >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {n} of {count} {kind} events stored after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next `n` events of a watch, and then none for 500 ms.
async fn exactly(watch: &mut tonic::Streaming<Event>, n: usize) -> Vec<Event> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(next(watch).await);
    }
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
        panic!(
            "after {:?}, the watch also delivered {more:?}",
            kinds(&seen)
        );
    }
    seen
}

/// Each event's (type, subject).
fn kinds(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.r#type.clone(), e.subject.clone()))
        .collect()
}

/// Owned (type, subject) pairs.
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect()
}

/// A watch of `request` with `key`, open once this returns.
async fn watch(
    events: &mut Events,
    key: &str,
    request: WatchEventsRequest,
) -> tonic::Streaming<Event> {
    events
        .watch_events(bearer(request, key))
        .await
        .expect("WatchEvents")
        .into_inner()
}

fn network_in(parent: &str, id: &str, cidr: &str) -> CreateNetworkRequest {
    CreateNetworkRequest {
        parent: parent.to_owned(),
        network: Some(Network {
            region: "sto1".to_owned(),
            cidr: cidr.to_owned(),
            ..Default::default()
        }),
        network_id: id.to_owned(),
        request_id: String::new(),
    }
}

fn ssh_rule_in(parent: &str, id: &str) -> CreateAccessRuleRequest {
    CreateAccessRuleRequest {
        parent: parent.to_owned(),
        access_rule: Some(AccessRule {
            region: "sto1".to_owned(),
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: 22,
            port_range_max: 22,
            remote_cidr: "192.0.2.0/24".to_owned(),
            description: "SSH from the office".to_owned(),
            ..Default::default()
        }),
        access_rule_id: id.to_owned(),
        request_id: String::new(),
    }
}

fn describe(name: &str, description: &str) -> UpdateProjectRequest {
    UpdateProjectRequest {
        project: Some(Project {
            name: name.to_owned(),
            description: description.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".to_owned()],
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_resource_watch_sees_only_that_project_and_what_is_under_it() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    settled(
        &mut events,
        &acme.key,
        "",
        "io.nordlys.v1.api_key.created",
        1,
    )
    .await;
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut networks = NetworkServiceClient::new(channel.clone());
    let mut rules = AccessRuleServiceClient::new(channel.clone());

    let mut web = watch(
        &mut events,
        &acme.key,
        WatchEventsRequest {
            resource: "projects/web".to_owned(),
            ..Default::default()
        },
    )
    .await;
    // One type and a resource: nats-server filters the type, the gateway
    // the resource.
    let mut web_networks = watch(
        &mut events,
        &acme.key,
        WatchEventsRequest {
            types: vec!["io.nordlys.v1.network.created".to_owned()],
            resource: "projects/web".to_owned(),
            ..Default::default()
        },
    )
    .await;

    // Three projects of the same organization, one whose name starts with
    // the watched one's, their children interleaved.
    for id in ["web", "webshop", "shop"] {
        stack
            .create_project(&acme.key, id, &["sto1"])
            .await
            .unwrap_or_else(|s| panic!("CreateProject {id}: {s:?}"));
    }
    for (i, parent) in ["projects/shop", "projects/web", "projects/webshop"]
        .into_iter()
        .enumerate()
    {
        networks
            .create_network(bearer(
                network_in(parent, "backend", &format!("10.{i}.0.0/24")),
                &acme.key,
            ))
            .await
            .unwrap_or_else(|s| panic!("CreateNetwork in {parent}: {s:?}"));
    }
    for parent in ["projects/web", "projects/shop"] {
        rules
            .create_access_rule(bearer(ssh_rule_in(parent, "ssh"), &acme.key))
            .await
            .unwrap_or_else(|s| panic!("CreateAccessRule in {parent}: {s:?}"));
    }
    for name in ["projects/shop", "projects/webshop", "projects/web"] {
        projects
            .update_project(bearer(describe(name, "Described"), &acme.key))
            .await
            .unwrap_or_else(|s| panic!("UpdateProject {name}: {s:?}"));
    }

    let expected = pairs(&[
        (CREATED, "projects/web"),
        (
            "io.nordlys.v1.network.created",
            "projects/web/networks/backend",
        ),
        (
            "io.nordlys.v1.access_rule.created",
            "projects/web/accessRules/ssh",
        ),
        ("io.nordlys.v1.project.updated", "projects/web"),
    ]);
    let seen = exactly(&mut web, expected.len()).await;
    assert_eq!(kinds(&seen), expected);
    for event in &seen {
        assert_eq!(event.organization, acme.organization);
    }
    let networks_seen = exactly(&mut web_networks, 1).await;
    assert_eq!(networks_seen, vec![seen[1].clone()]);

    // ListEvents filters the same way: the same events, from the log.
    let listed = events
        .list_events(bearer(
            ListEventsRequest {
                resource: "projects/web".to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("ListEvents of projects/web")
        .into_inner();
    assert_eq!(listed.events, seen);
    let one = events
        .list_events(bearer(
            ListEventsRequest {
                resource: "projects/webshop/networks/backend".to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("ListEvents of one network")
        .into_inner();
    assert_eq!(
        kinds(&one.events),
        pairs(&[(
            "io.nordlys.v1.network.created",
            "projects/webshop/networks/backend"
        )])
    );

    let err = events
        .watch_events(bearer(
            WatchEventsRequest {
                resource: "projects/web/".to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect_err("a resource ending with a slash");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("resource"), "{}", err.message());
}

#[tokio::test]
async fn an_operator_watch_follows_every_organization_live() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let globex = stack.tenant("globex").await;
    let mut events = EventServiceClient::new(stack.channel().await);
    settled(
        &mut events,
        OPERATOR_KEY,
        "",
        "io.nordlys.v1.api_key.created",
        2,
    )
    .await;

    let mut everything = watch(&mut events, OPERATOR_KEY, WatchEventsRequest::default()).await;
    // A type filter over every organization is applied by the gateway.
    let mut created = watch(
        &mut events,
        OPERATOR_KEY,
        WatchEventsRequest {
            types: vec![CREATED.to_owned()],
            ..Default::default()
        },
    )
    .await;
    let mut only_globex = watch(
        &mut events,
        OPERATOR_KEY,
        WatchEventsRequest {
            organization: globex.organization.clone(),
            ..Default::default()
        },
    )
    .await;

    stack
        .create_project(&acme.key, "alpha", &["sto1"])
        .await
        .expect("acme's project");
    stack
        .create_project(&globex.key, "gamma", &["sto1"])
        .await
        .expect("globex's project");
    ProjectServiceClient::new(stack.channel().await)
        .delete_project(bearer(
            DeleteProjectRequest {
                name: "projects/gamma".to_owned(),
                ..Default::default()
            },
            &globex.key,
        ))
        .await
        .expect("DeleteProject");
    let limits = ResourceCounts {
        projects: 7,
        users: 7,
        networks: 7,
        access_rules: 7,
    };
    stack.set_limits(&acme.organization, "osl1", limits).await;

    let seen = exactly(&mut everything, 4).await;
    let who: Vec<(&str, &str, &str, String)> = seen
        .iter()
        .map(|e| {
            let actor = e.actor.clone().expect("actor");
            (
                e.organization.as_str(),
                e.r#type.as_str(),
                e.subject.as_str(),
                actor.role,
            )
        })
        .collect();
    let quota = format!("{}/quotas/osl1", acme.organization);
    assert_eq!(
        who,
        vec![
            (
                acme.organization.as_str(),
                CREATED,
                "projects/alpha",
                "owner".to_owned()
            ),
            (
                globex.organization.as_str(),
                CREATED,
                "projects/gamma",
                "owner".to_owned()
            ),
            (
                globex.organization.as_str(),
                DELETED,
                "projects/gamma",
                "owner".to_owned()
            ),
            (
                acme.organization.as_str(),
                "io.nordlys.v1.quota.updated",
                quota.as_str(),
                "operator".to_owned()
            ),
        ]
    );
    assert_eq!(seen[0].actor.clone().expect("actor").member, acme.member);
    assert_eq!(seen[1].actor.clone().expect("actor").member, globex.member);
    match &seen[3].data {
        Some(Data::Quota(q)) => assert_eq!(q.limits, Some(limits)),
        other => panic!("the quota event carries {other:?}"),
    }
    assert!(
        seen.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in the log's order: {seen:?}"
    );
    assert_eq!(exactly(&mut created, 2).await, seen[..2].to_vec());
    assert_eq!(exactly(&mut only_globex, 2).await, seen[1..3].to_vec());
}

#[tokio::test]
async fn every_kind_of_change_and_a_viewers_write_are_events_of_their_type() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let org = acme.organization.clone();
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    settled(
        &mut events,
        &acme.key,
        "",
        "io.nordlys.v1.api_key.created",
        1,
    )
    .await;
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut users = UserServiceClient::new(channel.clone());
    let mut memberships = MembershipServiceClient::new(channel.clone());
    let mut networks = NetworkServiceClient::new(channel.clone());
    let mut rules = AccessRuleServiceClient::new(channel.clone());
    let mut orgs = OrganizationServiceClient::new(channel.clone());

    let nats = async_nats::connect(stack.nats.url()).await.expect("NATS");
    let mut raw = nats
        .subscribe("nordlys.events.acme.>")
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    let mut live = watch(&mut events, &acme.key, WatchEventsRequest::default()).await;

    // Users, projects, networks, rules and memberships: made, changed,
    // removed.
    let user = format!("{org}/users/carol");
    users
        .create_user(bearer(
            CreateUserRequest {
                parent: org.clone(),
                user: Some(User {
                    display_name: "Carol".to_owned(),
                    email: "carol@acme.example".to_owned(),
                    regions: vec!["sto1".to_owned()],
                    ..Default::default()
                }),
                user_id: "carol".to_owned(),
                request_id: String::new(),
            },
            &acme.key,
        ))
        .await
        .expect("CreateUser");
    users
        .update_user(bearer(
            UpdateUserRequest {
                user: Some(User {
                    name: user.clone(),
                    email: "carol@new.example".to_owned(),
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            &acme.key,
        ))
        .await
        .expect("UpdateUser");
    stack
        .create_project(&acme.key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    projects
        .update_project(bearer(describe("projects/web", "The shop"), &acme.key))
        .await
        .expect("UpdateProject");
    let network = "projects/web/networks/backend";
    networks
        .create_network(bearer(
            network_in("projects/web", "backend", "10.20.0.0/24"),
            &acme.key,
        ))
        .await
        .expect("CreateNetwork");
    networks
        .update_network(bearer(
            UpdateNetworkRequest {
                network: Some(Network {
                    name: network.to_owned(),
                    dns_servers: vec!["10.20.0.53".to_owned()],
                    ..Default::default()
                }),
                update_mask: None,
                request_id: String::new(),
            },
            &acme.key,
        ))
        .await
        .expect("UpdateNetwork");
    let rule = "projects/web/accessRules/ssh";
    rules
        .create_access_rule(bearer(ssh_rule_in("projects/web", "ssh"), &acme.key))
        .await
        .expect("CreateAccessRule");
    let membership = "projects/web/members/carol";
    memberships
        .create_membership(bearer(
            CreateMembershipRequest {
                parent: "projects/web".to_owned(),
                membership: Some(Membership {
                    user: user.clone(),
                    role: ProjectRole::Member as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &acme.key,
        ))
        .await
        .expect("CreateMembership");
    memberships
        .delete_membership(bearer(
            DeleteMembershipRequest {
                name: membership.to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("DeleteMembership");
    rules
        .delete_access_rule(bearer(
            DeleteAccessRuleRequest {
                name: rule.to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("DeleteAccessRule");
    networks
        .delete_network(bearer(
            DeleteNetworkRequest {
                name: network.to_owned(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("DeleteNetwork");
    users
        .delete_user(bearer(
            DeleteUserRequest {
                name: user.clone(),
                ..Default::default()
            },
            &acme.key,
        ))
        .await
        .expect("DeleteUser");

    // A viewer joins with a key, tries to write three ways, and leaves.
    let viewer = orgs
        .create_member(bearer(
            CreateMemberRequest {
                parent: org.clone(),
                member: Some(Member {
                    role: OrganizationRole::Viewer as i32,
                    ..Default::default()
                }),
                member_id: "reader@acme.example".to_owned(),
            },
            &acme.key,
        ))
        .await
        .expect("CreateMember")
        .into_inner()
        .name;
    let created_key = orgs
        .create_api_key(bearer(
            CreateApiKeyRequest {
                parent: org.clone(),
                api_key: Some(ApiKey {
                    member: viewer.clone(),
                    display_name: "reader's key".to_owned(),
                    ..Default::default()
                }),
            },
            &acme.key,
        ))
        .await
        .expect("CreateApiKey")
        .into_inner();
    let viewer_key = created_key.api_key.clone().expect("the key").name;
    let refused = stack
        .create_project(&created_key.secret, "viewers-own", &["sto1"])
        .await
        .expect_err("a viewer creates a project");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = networks
        .create_network(bearer(
            network_in("projects/web", "mine", "10.21.0.0/24"),
            &created_key.secret,
        ))
        .await
        .expect_err("a viewer creates a network");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Refused by the quota service, recorded by the gateway.
    let refused = orgs
        .create_member(bearer(
            CreateMemberRequest {
                parent: org.clone(),
                member: Some(Member {
                    role: OrganizationRole::Owner as i32,
                    ..Default::default()
                }),
                member_id: "friend@acme.example".to_owned(),
            },
            &created_key.secret,
        ))
        .await
        .expect_err("a viewer adds a member");
    assert_eq!(refused.code(), Code::PermissionDenied);
    orgs.delete_api_key(bearer(
        DeleteApiKeyRequest {
            name: viewer_key.clone(),
        },
        &acme.key,
    ))
    .await
    .expect("DeleteApiKey");
    orgs.delete_member(bearer(
        DeleteMemberRequest {
            name: viewer.clone(),
        },
        &acme.key,
    ))
    .await
    .expect("DeleteMember");

    let expected = pairs(&[
        ("io.nordlys.v1.user.created", &user),
        ("io.nordlys.v1.user.updated", &user),
        (CREATED, "projects/web"),
        ("io.nordlys.v1.project.updated", "projects/web"),
        ("io.nordlys.v1.network.created", network),
        ("io.nordlys.v1.network.updated", network),
        ("io.nordlys.v1.access_rule.created", rule),
        ("io.nordlys.v1.membership.created", membership),
        ("io.nordlys.v1.membership.deleted", membership),
        ("io.nordlys.v1.access_rule.deleted", rule),
        ("io.nordlys.v1.network.deleted", network),
        ("io.nordlys.v1.user.deleted", &user),
        ("io.nordlys.v1.member.created", &viewer),
        ("io.nordlys.v1.api_key.created", &viewer_key),
        (DENIED, "projects"),
        (DENIED, "projects/web"),
        (DENIED, &org),
        ("io.nordlys.v1.api_key.deleted", &viewer_key),
        ("io.nordlys.v1.member.deleted", &viewer),
    ]);
    let seen = exactly(&mut live, expected.len()).await;
    assert_eq!(kinds(&seen), expected);

    // The data names the resource as the change left it; deletes and
    // refusals carry none.
    for event in &seen {
        assert_eq!(event.organization, org, "{event:?}");
        let what = event
            .r#type
            .strip_prefix("io.nordlys.v1.")
            .expect("a nordlys type");
        let name = match (&event.data, what) {
            (None, kind) if kind.ends_with(".deleted") || kind == "authorization.denied" => {
                continue
            }
            (Some(Data::User(u)), "user.created") => {
                assert_eq!(u.email, "carol@acme.example");
                &u.name
            }
            (Some(Data::User(u)), "user.updated") => {
                assert_eq!(u.email, "carol@new.example", "as the update left it");
                assert_eq!(u.display_name, "Carol");
                &u.name
            }
            (Some(Data::Project(p)), "project.created") => &p.name,
            (Some(Data::Project(p)), "project.updated") => {
                assert_eq!(p.description, "The shop");
                &p.name
            }
            (Some(Data::Network(n)), "network.created") => {
                assert_eq!(n.cidr, "10.20.0.0/24");
                assert!(n.dns_servers.is_empty(), "{n:?}");
                &n.name
            }
            (Some(Data::Network(n)), "network.updated") => {
                assert_eq!(n.dns_servers, ["10.20.0.53"]);
                assert_eq!(n.cidr, "10.20.0.0/24");
                &n.name
            }
            (Some(Data::AccessRule(r)), "access_rule.created") => {
                assert_eq!((r.port_range_min, r.port_range_max), (22, 22));
                assert_eq!(r.remote_cidr, "192.0.2.0/24");
                &r.name
            }
            (Some(Data::Membership(m)), "membership.created") => {
                assert_eq!(m.user, user);
                assert_eq!(m.role, ProjectRole::Member as i32);
                &m.name
            }
            (Some(Data::Member(m)), "member.created") => {
                assert_eq!(m.role, OrganizationRole::Viewer as i32);
                &m.name
            }
            (Some(Data::ApiKey(k)), "api_key.created") => {
                assert_eq!(k.member, viewer);
                &k.name
            }
            (data, kind) => panic!("a {kind} event carries {data:?}"),
        };
        assert_eq!(name, &event.subject, "{event:?}");
        assert_eq!(event.outcome.clone().expect("outcome").code, 0);
    }

    // Refusals: by whom, with which key, and why.
    let denials: Vec<&Event> = seen.iter().filter(|e| e.r#type == DENIED).collect();
    assert_eq!(denials.len(), 3);
    for denied in &denials {
        let actor = denied.actor.clone().expect("actor");
        assert_eq!(actor.member, viewer);
        assert_eq!(actor.role, "viewer");
        assert_eq!(actor.api_key, viewer_key);
        let outcome = denied.outcome.clone().expect("outcome");
        assert_eq!(outcome.code, Code::PermissionDenied as i32);
        assert!(!outcome.message.is_empty(), "{denied:?}");
    }
    for event in seen.iter().filter(|e| e.r#type != DENIED) {
        let actor = event.actor.clone().expect("actor");
        assert_eq!(
            (actor.member.as_str(), actor.role.as_str()),
            (acme.member.as_str(), "owner"),
            "{event:?}"
        );
    }

    // On NATS: each on `nordlys.events.{org}.{type}`, in the binary mode.
    for event in &seen {
        let message = tokio::time::timeout(Duration::from_secs(5), raw.next())
            .await
            .unwrap_or_else(|_| panic!("no NATS message for {}", event.r#type))
            .expect("subscription ended");
        assert_eq!(
            message.subject.as_str(),
            format!("nordlys.events.acme.{}", event.r#type)
        );
        let headers = message.headers.clone().expect("binary mode: headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("ce-type").as_deref(), Some(event.r#type.as_str()));
        assert_eq!(
            header("ce-subject").as_deref(),
            Some(event.subject.as_str())
        );
        assert_eq!(header("ce-id").as_deref(), Some(event.id.as_str()));
        assert_eq!(header("ce-organization").as_deref(), Some(org.as_str()));
        assert_eq!(
            header("ce-outcome"),
            Some(event.outcome.clone().expect("outcome").code.to_string())
        );
        assert_eq!(
            header("content-type").is_some(),
            event.data.is_some(),
            "{:?}",
            event.r#type
        );
    }

    // And each type alone, from the log.
    let only = list_all(
        &mut events,
        &acme.key,
        "",
        &["io.nordlys.v1.membership.deleted"],
        10,
    )
    .await;
    assert_eq!(only, vec![seen[8].clone()]);
}

const DENIED: &str = "io.nordlys.v1.authorization.denied";

fn add_member(
    org: &str,
    id: &str,
    role: OrganizationRole,
    key: &str,
) -> tonic::Request<CreateMemberRequest> {
    bearer(
        CreateMemberRequest {
            parent: org.to_owned(),
            member: Some(Member {
                role: role as i32,
                ..Default::default()
            }),
            member_id: id.to_owned(),
        },
        key,
    )
}

#[tokio::test]
async fn a_members_keys_go_with_it_and_a_role_change_is_an_update() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let org = acme.organization.clone();
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    settled(
        &mut events,
        &acme.key,
        "",
        "io.nordlys.v1.api_key.created",
        1,
    )
    .await;
    let mut orgs = OrganizationServiceClient::new(channel.clone());
    let mut live = watch(&mut events, &acme.key, WatchEventsRequest::default()).await;

    let bob = "bob@acme.example";
    let added = orgs
        .create_member(add_member(&org, bob, OrganizationRole::Viewer, &acme.key))
        .await
        .expect("CreateMember")
        .into_inner();
    let member = added.name.clone();
    // The same member again, with another role: its role changes.
    let promoted = orgs
        .create_member(add_member(&org, bob, OrganizationRole::Admin, &acme.key))
        .await
        .expect("CreateMember of an existing member")
        .into_inner();
    assert_eq!(promoted.create_time, added.create_time, "the same member");
    assert_eq!(promoted.role, OrganizationRole::Admin as i32);
    let mut keys = Vec::new();
    for label in ["laptop", "ci"] {
        let key = orgs
            .create_api_key(bearer(
                CreateApiKeyRequest {
                    parent: org.clone(),
                    api_key: Some(ApiKey {
                        member: member.clone(),
                        display_name: label.to_owned(),
                        ..Default::default()
                    }),
                },
                &acme.key,
            ))
            .await
            .expect("CreateApiKey")
            .into_inner()
            .api_key
            .expect("the key")
            .name;
        keys.push(key);
    }
    orgs.delete_member(bearer(
        DeleteMemberRequest {
            name: member.clone(),
        },
        &acme.key,
    ))
    .await
    .expect("DeleteMember");
    // Added again after its removal: a new member.
    orgs.create_member(add_member(&org, bob, OrganizationRole::Member, &acme.key))
        .await
        .expect("CreateMember after DeleteMember");

    let left = orgs
        .list_api_keys(bearer(
            ListApiKeysRequest {
                parent: org.clone(),
            },
            &acme.key,
        ))
        .await
        .expect("ListApiKeys")
        .into_inner();
    assert!(
        left.api_keys.iter().all(|k| k.member != member),
        "the member's keys went with it: {left:?}"
    );

    // The removed keys follow the member's removal, ordered by name.
    let mut removed = keys.clone();
    removed.sort();
    let mut expected = vec![
        ("io.nordlys.v1.member.created", member.as_str()),
        ("io.nordlys.v1.member.updated", member.as_str()),
        ("io.nordlys.v1.api_key.created", keys[0].as_str()),
        ("io.nordlys.v1.api_key.created", keys[1].as_str()),
        ("io.nordlys.v1.member.deleted", member.as_str()),
    ];
    expected.extend(
        removed
            .iter()
            .map(|k| ("io.nordlys.v1.api_key.deleted", k.as_str())),
    );
    expected.push(("io.nordlys.v1.member.created", member.as_str()));
    let seen = exactly(&mut live, expected.len()).await;
    assert_eq!(kinds(&seen), pairs(&expected));

    for event in &seen {
        assert_eq!(event.organization, org, "{event:?}");
        assert_eq!(event.outcome.clone().expect("outcome").code, 0);
        let actor = event.actor.clone().expect("actor");
        assert_eq!(actor.member, acme.member, "{event:?}");
    }
    let roles: Vec<(String, i32)> = seen
        .iter()
        .filter_map(|e| match &e.data {
            Some(Data::Member(m)) => Some((e.r#type.clone(), m.role)),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (
                "io.nordlys.v1.member.created".to_owned(),
                OrganizationRole::Viewer as i32
            ),
            (
                "io.nordlys.v1.member.updated".to_owned(),
                OrganizationRole::Admin as i32
            ),
            (
                "io.nordlys.v1.member.created".to_owned(),
                OrganizationRole::Member as i32
            ),
        ]
    );
    for deleted in seen
        .iter()
        .filter(|e| e.r#type == "io.nordlys.v1.api_key.deleted")
    {
        assert_eq!(deleted.data, None, "{deleted:?}");
    }
}

#[tokio::test]
async fn refusals_by_the_quota_service_are_events_like_the_gateways() {
    let stack = Stack::start_with(opts()).await;
    let acme = stack.tenant("acme").await;
    let globex = stack.tenant("globex").await;
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    settled(
        &mut events,
        OPERATOR_KEY,
        "",
        "io.nordlys.v1.api_key.created",
        2,
    )
    .await;
    let mut orgs = OrganizationServiceClient::new(channel.clone());
    let mut quotas = QuotaServiceClient::new(channel.clone());
    let mut acme_log = watch(&mut events, &acme.key, WatchEventsRequest::default()).await;
    let mut globex_log = watch(&mut events, &globex.key, WatchEventsRequest::default()).await;
    let theirs = globex.organization.clone();
    let denied = |answer: Result<(), tonic::Status>, what: &str| {
        let status = answer.expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    };

    // Refused by the gateway, as before: a list in another organization.
    denied(
        ProjectServiceClient::new(channel.clone())
            .list_projects(bearer(
                nordlys_proto::pb::nordlys::v1::ListProjectsRequest {
                    organization: theirs.clone(),
                    ..Default::default()
                },
                &acme.key,
            ))
            .await
            .map(|_| ()),
        "ListProjects of another organization",
    );
    // Refused by the quota service.
    denied(
        orgs.get_organization(bearer(
            GetOrganizationRequest {
                name: theirs.clone(),
            },
            &acme.key,
        ))
        .await
        .map(|_| ()),
        "GetOrganization",
    );
    denied(
        orgs.list_members(bearer(
            ListMembersRequest {
                parent: theirs.clone(),
            },
            &acme.key,
        ))
        .await
        .map(|_| ()),
        "ListMembers",
    );
    denied(
        orgs.list_api_keys(bearer(
            ListApiKeysRequest {
                parent: theirs.clone(),
            },
            &acme.key,
        ))
        .await
        .map(|_| ()),
        "ListApiKeys",
    );
    let their_quota = format!("{theirs}/quotas/sto1");
    denied(
        quotas
            .get_quota(bearer(
                GetQuotaRequest {
                    name: their_quota.clone(),
                },
                &acme.key,
            ))
            .await
            .map(|_| ()),
        "GetQuota",
    );
    denied(
        quotas
            .list_quotas(bearer(
                ListQuotasRequest {
                    parent: theirs.clone(),
                },
                &acme.key,
            ))
            .await
            .map(|_| ()),
        "ListQuotas",
    );
    // Operators only, even in the caller's own organization.
    denied(
        quotas
            .reconcile_quotas(bearer(
                ReconcileQuotasRequest {
                    organization: acme.organization.clone(),
                    validate_only: true,
                },
                &acme.key,
            ))
            .await
            .map(|_| ()),
        "ReconcileQuotas",
    );
    // A read that is allowed is no event.
    orgs.list_api_keys(bearer(
        ListApiKeysRequest {
            parent: acme.organization.clone(),
        },
        &acme.key,
    ))
    .await
    .expect("ListApiKeys of its own organization");

    let seen = exactly(&mut acme_log, 7).await;
    assert_eq!(
        kinds(&seen),
        pairs(&[
            (DENIED, &theirs),
            (DENIED, &theirs),
            (DENIED, &theirs),
            (DENIED, &theirs),
            (DENIED, &their_quota),
            (DENIED, &theirs),
            (DENIED, &acme.organization),
        ])
    );
    // Every refusal has the same attributes, whoever refused it.
    let gateways = &seen[0];
    for event in &seen {
        assert_eq!(event.organization, acme.organization, "{event:?}");
        assert_eq!(event.actor, gateways.actor, "{event:?}");
        let origin = event.origin.clone().expect("origin");
        assert_eq!(
            origin.peer_address,
            gateways.origin.clone().expect("origin").peer_address
        );
        let outcome = event.outcome.clone().expect("outcome");
        assert_eq!(outcome.code, Code::PermissionDenied as i32, "{event:?}");
        assert!(!outcome.message.is_empty(), "{event:?}");
        assert_eq!(event.data, None);
    }
    let actor = gateways.actor.clone().expect("actor");
    assert_eq!(
        (actor.member, actor.role),
        (acme.member.clone(), "owner".to_owned())
    );
    // The organization asked about learns nothing.
    exactly(&mut globex_log, 0).await;
}

#[tokio::test]
async fn a_reconciliation_records_each_quota_it_corrects() {
    // The kv backend, so a record can go behind Nordlys's back.
    let stack = Stack::start_with(StackOpts {
        sto1_instances: 1,
        ..StackOpts::default()
    })
    .await;
    let acme = stack.tenant("acme").await;
    let org = acme.organization.clone();
    let channel = stack.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    stack
        .create_project(&acme.key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    NetworkServiceClient::new(channel.clone())
        .create_network(bearer(
            network_in("projects/web", "backend", "10.3.0.0/24"),
            &acme.key,
        ))
        .await
        .expect("CreateNetwork");
    settled(
        &mut events,
        &acme.key,
        "",
        "io.nordlys.v1.network.created",
        1,
    )
    .await;
    let mut live = watch(
        &mut events,
        OPERATOR_KEY,
        WatchEventsRequest {
            organization: org.clone(),
            ..Default::default()
        },
    )
    .await;

    // The network goes behind Nordlys's back.
    let nats = async_nats::connect(stack.nats.url()).await.expect("NATS");
    async_nats::jetstream::new(nats)
        .get_key_value("nordlys-regiond-sto1")
        .await
        .expect("the region's bucket")
        .delete("n.projects/web/networks/backend")
        .await
        .expect("delete the record");

    let mut quotas = QuotaServiceClient::new(channel.clone());
    let reconcile = |validate_only: bool| {
        let mut request = bearer(
            ReconcileQuotasRequest {
                organization: org.clone(),
                validate_only,
            },
            OPERATOR_KEY,
        );
        request.set_timeout(Duration::from_secs(30));
        request
    };
    // Reported only: nothing changed, nothing recorded.
    let reported = quotas
        .reconcile_quotas(reconcile(true))
        .await
        .expect("ReconcileQuotas, report only")
        .into_inner();
    assert_eq!(reported.drifts.len(), 1, "{reported:?}");
    assert!(!reported.drifts[0].corrected);
    let fixed = quotas
        .reconcile_quotas(reconcile(false))
        .await
        .expect("ReconcileQuotas")
        .into_inner();
    assert_eq!(fixed.drifts.len(), 1, "{fixed:?}");
    let drift = fixed.drifts[0].clone();
    assert!(drift.corrected, "{fixed:?}");
    let quota = format!("{org}/quotas/sto1");
    assert_eq!(drift.quota, quota);
    // Nothing left to correct: no further event.
    let again = quotas
        .reconcile_quotas(reconcile(false))
        .await
        .expect("ReconcileQuotas again")
        .into_inner();
    assert!(again.drifts.is_empty(), "{again:?}");

    let seen = exactly(&mut live, 1).await;
    let event = &seen[0];
    assert_eq!(event.r#type, "io.nordlys.v1.quota.reconciled");
    assert_eq!(event.subject, quota);
    assert_eq!(event.organization, org);
    let actor = event.actor.clone().expect("actor");
    assert_eq!(
        (actor.member.as_str(), actor.role.as_str()),
        ("operator", "operator")
    );
    let (before, after) = (
        drift.usage.unwrap_or_default(),
        drift.existing.unwrap_or_default(),
    );
    assert_eq!((before.networks, after.networks), (1, 0));
    match &event.data {
        Some(Data::Quota(q)) => {
            assert_eq!(q.name, quota);
            assert_eq!(q.usage, Some(after), "the usage as corrected");
        }
        other => panic!("a quota.reconciled event carries {other:?}"),
    }
    let outcome = event.outcome.clone().expect("outcome");
    assert_eq!(outcome.code, 0);
    assert_eq!(
        outcome.message,
        format!(
            "usage corrected from projects={} users={} networks=1 access_rules={} \
             to projects={} users={} networks=0 access_rules={}",
            before.projects,
            before.users,
            before.access_rules,
            after.projects,
            after.users,
            after.access_rules
        )
    );
    // The organization's own members see it too.
    let theirs = list_all(
        &mut events,
        &acme.key,
        "",
        &["io.nordlys.v1.quota.reconciled"],
        10,
    )
    .await;
    assert_eq!(theirs, seen);
}
