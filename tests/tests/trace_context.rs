//! The caller's W3C trace context (`traceparent`, `tracestate`) reaches the
//! regional daemons with every internal call, from gRPC and from HTTP; a
//! malformed one is dropped. Seen on the wire: a plain NATS subscriber gets
//! a copy of each request the region's queue group serves (route `nats`).

mod http_common;

use std::time::Duration;

use futures::StreamExt;
use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, GetProjectRequest,
};
use nordlys_tests::{bearer, Stack, StackOpts};

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

#[tokio::test]
async fn trace_context_reaches_the_regions_from_grpc_and_http() {
    let stack = Stack::start_with(StackOpts {
        route: "nats".to_owned(),
        sto1_instances: 1,
        ..StackOpts::default()
    })
    .await;
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
