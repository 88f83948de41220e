//! The caller's W3C trace context (`traceparent`, `tracestate`) continues
//! to the regional daemons with every internal call, from gRPC and from
//! HTTP; a malformed one is dropped. With traces exported the caller's
//! trace id is kept and the parent becomes the gateway's CLIENT span of the
//! call; without, the context passes through unchanged. Seen on the wire:
//! a plain NATS subscriber gets a copy of each request the region's queue
//! group serves (route `nats`).

mod http_common;
mod otlp_common;

use std::time::Duration;

use futures::StreamExt;
use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, GetProjectRequest,
};
use nordlys_tests::{bearer, Stack, StackOpts};
use otlp_common::{Collector, CLIENT};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const FROM_HTTP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The trace headers of the next GetProject request a region is sent.
async fn next_get(requests: &mut async_nats::Subscriber) -> (Option<String>, Option<String>) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = requests.next().await {
            if message.subject.ends_with(".GetProject") {
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                return Some((header("traceparent"), header("tracestate")));
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .expect("no GetProject request seen on NATS within 10 s")
}

/// The trace id and parent span id of a traceparent.
fn ids(traceparent: &str) -> (String, String) {
    let mut fields = traceparent.split('-').skip(1);
    (
        fields.next().unwrap_or_default().to_owned(),
        fields.next().unwrap_or_default().to_owned(),
    )
}

/// A stack on route `nats` with one `sto1`, its daemons given `env`.
async fn stack(env: Vec<(String, String)>) -> Stack {
    Stack::start_with(StackOpts {
        route: "nats".to_owned(),
        sto1_instances: 1,
        gateway_env: env.clone(),
        regiond_env: env.clone(),
        quota_env: env,
        ..StackOpts::default()
    })
    .await
}

#[tokio::test]
async fn without_export_the_trace_context_passes_through_unchanged() {
    let stack = stack(Vec::new()).await;
    let tenant = stack.tenant("acme").await;
    stack
        .create_project(&tenant.key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    let nats = async_nats::connect(stack.nats.url()).await.expect("NATS");
    let mut requests = nats
        .subscribe("nordlys.v1.sto1.RegiondService.>")
        .await
        .expect("subscribe");
    // The gateway publishes on its own connection: wait until the server
    // has our subscription, or the first request could pass it by.
    nordlys_transport::confirm_subscriptions(&nats)
        .await
        .expect("subscription in place");

    // gRPC, with a trace context.
    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let get = |traceparent: &str| {
        let mut request = bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            &tenant.key,
        );
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().expect("ascii"));
        request
            .metadata_mut()
            .insert("tracestate", "nordlys=test".parse().expect("ascii"));
        request
    };
    projects.get_project(get(PARENT)).await.expect("GetProject");
    assert_eq!(
        next_get(&mut requests).await,
        (Some(PARENT.to_owned()), Some("nordlys=test".to_owned()))
    );

    // A malformed traceparent goes no further, nor does its tracestate.
    projects
        .get_project(get("00-not-a-trace-01"))
        .await
        .expect("GetProject with a bad traceparent still answers");
    assert_eq!(next_get(&mut requests).await, (None, None));

    // HTTP: the header becomes metadata, and goes on the same way.
    let http = Http::new(&stack.gateway.http_url()).with_key(&tenant.key);
    http.send(
        "GET",
        "/v1/projects/web",
        bytes::Bytes::new(),
        &[("traceparent", FROM_HTTP)],
    )
    .await
    .expect(200);
    assert_eq!(
        next_get(&mut requests).await,
        (Some(FROM_HTTP.to_owned()), None)
    );
}

#[tokio::test]
async fn with_export_the_callers_trace_continues_through_the_gateways_client_span() {
    let collector = Collector::start().await;
    let stack = stack(collector.env()).await;
    let tenant = stack.tenant("acme").await;
    stack
        .create_project(&tenant.key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    let nats = async_nats::connect(stack.nats.url()).await.expect("NATS");
    let mut requests = nats
        .subscribe("nordlys.v1.sto1.RegiondService.>")
        .await
        .expect("subscribe");
    nordlys_transport::confirm_subscriptions(&nats)
        .await
        .expect("subscription in place");

    let mut projects = ProjectServiceClient::new(stack.channel().await);
    let get = |traceparent: &str| {
        let mut request = bearer(
            GetProjectRequest {
                name: "projects/web".into(),
            },
            &tenant.key,
        );
        request
            .metadata_mut()
            .insert("traceparent", traceparent.parse().expect("ascii"));
        request
            .metadata_mut()
            .insert("tracestate", "nordlys=test".parse().expect("ascii"));
        request
    };
    let (caller_trace, caller_span) = ids(PARENT);

    // The caller's trace id and tracestate go on; the parent is the
    // gateway's CLIENT span of this very request.
    projects.get_project(get(PARENT)).await.expect("GetProject");
    let (sent, state) = next_get(&mut requests).await;
    let sent = sent.expect("a traceparent on the internal call");
    assert_eq!(state.as_deref(), Some("nordlys=test"));
    let (trace_id, parent) = ids(&sent);
    assert_eq!(trace_id, caller_trace);
    assert_ne!(parent, caller_span);
    assert!(sent.ends_with("-01"), "still sampled: {sent}");
    let spans = collector
        .wait_trace(&trace_id, Duration::from_secs(20), |spans| {
            spans.iter().any(|s| s.span_id == parent)
        })
        .await;
    let client = spans
        .iter()
        .find(|s| s.span_id == parent)
        .unwrap_or_else(|| panic!("no span {parent}:\n{}", otlp_common::dump(&spans)));
    assert_eq!(client.service, "nordlys-gateway");
    assert_eq!(client.kind, CLIENT);
    assert_eq!(
        client.attr("messaging.destination.name"),
        Some("nordlys.v1.sto1.RegiondService.GetProject")
    );

    // A malformed traceparent is dropped with its tracestate: the call
    // starts a trace of its own.
    projects
        .get_project(get("00-not-a-trace-01"))
        .await
        .expect("GetProject with a bad traceparent still answers");
    let (sent, state) = next_get(&mut requests).await;
    let sent = sent.expect("a traceparent of a new trace");
    assert_ne!(ids(&sent).0, caller_trace);
    assert_eq!(state, None);

    // HTTP: the same.
    let http = Http::new(&stack.gateway.http_url()).with_key(&tenant.key);
    http.send(
        "GET",
        "/v1/projects/web",
        bytes::Bytes::new(),
        &[("traceparent", FROM_HTTP)],
    )
    .await
    .expect(200);
    let (sent, state) = next_get(&mut requests).await;
    let (trace_id, parent) = ids(&sent.expect("a traceparent from HTTP"));
    assert_eq!(trace_id, ids(FROM_HTTP).0);
    assert_ne!(parent, ids(FROM_HTTP).1);
    assert_eq!(state, None);
}
