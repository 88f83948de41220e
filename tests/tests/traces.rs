//! OpenTelemetry traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, one user
//! call is one connected trace from the gateway through NATS or direct
//! gRPC into the regions and the quota service (and, on OpenStack regions,
//! out to Keystone and Neutron); without it nothing is exported. The spans
//! arrive at an OTLP receiver inside the test, on loopback.

mod http_common;
mod otlp_common;

use std::collections::HashSet;
use std::time::Duration;

use http_common::Http;
use nordlys_proto::pb::nordlys::v1::{
    network_service_client::NetworkServiceClient, project_service_client::ProjectServiceClient,
    CreateNetworkRequest, CreateProjectRequest, GetProjectRequest, Network, Project,
};
use nordlys_tests::{bearer, Stack, StackOpts};
use otlp_common::{dump, Collector, Span, CLIENT, SERVER};

const GATEWAY: &str = "nordlys-gateway";
const REGIOND: &str = "nordlys-regiond";
const QUOTA: &str = "nordlys-quota";
/// The span id of the caller's traceparent.
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(20);

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CALLER_SPAN}-01")
}

fn with_trace<T>(message: T, key: &str, trace_id: &str) -> tonic::Request<T> {
    let mut request = bearer(message, key);
    request
        .metadata_mut()
        .insert("traceparent", traceparent(trace_id).parse().expect("ascii"));
    request
}

fn create_project(id: &str, regions: &[&str]) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            display_name: format!("Project {id}"),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        project_id: id.to_owned(),
        request_id: format!("req-{id}"),
    }
}

/// Every daemon of a stack pointed at `collector`.
fn traced_stack(route: &str, collector: &Collector) -> StackOpts {
    StackOpts {
        route: route.to_owned(),
        sto1_instances: 1,
        gateway_env: collector.env(),
        regiond_env: collector.env(),
        quota_env: collector.env(),
        ..StackOpts::default()
    }
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

fn is_regiond_call(span: &Span) -> bool {
    span.service == GATEWAY
        && span.kind == CLIENT
        && (span.attr("rpc.service") == Some("nordlys.regiond.v1.RegiondService")
            || span
                .attr("messaging.destination.name")
                .is_some_and(|s| s.contains(".RegiondService.")))
}

fn is_quota_call(span: &Span) -> bool {
    span.service == GATEWAY
        && span.kind == CLIENT
        && span
            .attr("messaging.destination.name")
            .is_some_and(|s| s.starts_with("nordlys.quota.v1.QuotaController."))
}

/// The trace has the gateway's server span, a call to each region with
/// regiond's server span under it, and quota's server spans under every
/// call to quota.
fn complete(spans: &[Span], regions: usize) -> bool {
    let calls: Vec<&Span> = spans.iter().filter(|s| is_regiond_call(s)).collect();
    let quota_calls: Vec<&Span> = spans.iter().filter(|s| is_quota_call(s)).collect();
    spans
        .iter()
        .any(|s| s.service == GATEWAY && s.kind == SERVER)
        && calls.len() >= regions
        && calls
            .iter()
            .all(|c| children(spans, c).iter().any(|s| s.service == REGIOND))
        && !quota_calls.is_empty()
        && quota_calls
            .iter()
            .all(|c| children(spans, c).iter().any(|s| s.service == QUOTA))
}

/// Whether every span's parent is the caller's span or a span of the
/// trace (spans arrive in batches, parents often after their children).
fn connected(spans: &[Span]) -> bool {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .all(|s| s.parent_span_id == CALLER_SPAN || ids.contains(s.parent_span_id.as_str()))
}

/// Every span's parent is the caller's span or a span of the trace.
fn assert_connected(spans: &[Span]) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for span in spans {
        assert!(
            span.parent_span_id == CALLER_SPAN || ids.contains(span.parent_span_id.as_str()),
            "span {:?} of {} hangs off an unknown parent {}:\n{}",
            span.name,
            span.service,
            span.parent_span_id,
            dump(spans)
        );
    }
}

/// The gateway's SERVER span of `/nordlys.v1.ProjectService/{method}`.
fn gateway_server<'a>(spans: &'a [Span], method: &str) -> &'a Span {
    let name = format!("nordlys.v1.ProjectService/{method}");
    let span = spans
        .iter()
        .find(|s| s.service == GATEWAY && s.kind == SERVER && s.name == name)
        .unwrap_or_else(|| panic!("no gateway server span {name}:\n{}", dump(spans)));
    assert_eq!(span.parent_span_id, CALLER_SPAN, "{}", dump(spans));
    assert_eq!(span.attr("rpc.system"), Some("grpc"));
    assert_eq!(span.attr("rpc.service"), Some("nordlys.v1.ProjectService"));
    assert_eq!(span.attr("rpc.method"), Some(method));
    span
}

async fn one_trace_per_call(route: &str, trace_id: &str) {
    let collector = Collector::start().await;
    let stack = Stack::start_with(traced_stack(route, &collector)).await;
    let tenant = stack.tenant("acme").await;
    ProjectServiceClient::new(stack.channel().await)
        .create_project(with_trace(
            create_project("web", &["sto1", "osl1"]),
            &tenant.key,
            trace_id,
        ))
        .await
        .expect("CreateProject");

    let spans = collector
        .wait_trace(trace_id, WAIT, |spans| {
            complete(spans, 2) && connected(spans)
        })
        .await;
    assert!(complete(&spans, 2), "incomplete trace:\n{}", dump(&spans));
    assert_connected(&spans);

    let server = gateway_server(&spans, "CreateProject");
    assert_eq!(server.attr("rpc.grpc.status_code"), Some("0"));
    assert_ne!(server.status, 2);

    // One call per region, each a child of the gateway's server span, with
    // regiond's server span under it.
    let calls: Vec<&Span> = spans.iter().filter(|s| is_regiond_call(s)).collect();
    assert_eq!(calls.len(), 2, "one attempt per region:\n{}", dump(&spans));
    let mut regions = HashSet::new();
    for call in &calls {
        assert_eq!(call.parent_span_id, server.span_id, "{}", dump(&spans));
        assert_eq!(call.attr("rpc.grpc.status_code"), Some("0"));
        let served: Vec<&Span> = children(&spans, call)
            .into_iter()
            .filter(|s| s.service == REGIOND && s.kind == SERVER)
            .collect();
        assert_eq!(served.len(), 1, "{}", dump(&spans));
        let served = served[0];
        match route {
            "grpc" => {
                assert_eq!(call.name, "nordlys.regiond.v1.RegiondService/CreateProject");
                assert_eq!(call.attr("rpc.system"), Some("grpc"));
                assert_eq!(call.attr("rpc.method"), Some("CreateProject"));
                assert_eq!(served.name, call.name);
                assert_eq!(served.attr("rpc.system"), Some("grpc"));
                assert_eq!(
                    served.attr("rpc.service"),
                    Some("nordlys.regiond.v1.RegiondService")
                );
                assert_eq!(served.attr("rpc.method"), Some("CreateProject"));
                assert_eq!(served.attr("rpc.grpc.status_code"), Some("0"));
            }
            _ => {
                let subject = call
                    .attr("messaging.destination.name")
                    .expect("a subject")
                    .to_owned();
                let region = subject.split('.').nth(2).unwrap_or_default().to_owned();
                assert_eq!(
                    subject,
                    format!("nordlys.v1.{region}.RegiondService.CreateProject")
                );
                regions.insert(region);
                assert_eq!(call.name, format!("send {subject}"));
                assert_eq!(call.attr("messaging.system"), Some("nats"));
                assert_eq!(call.attr("messaging.operation.type"), Some("send"));
                assert_eq!(served.name, format!("process {subject}"));
                assert_eq!(served.attr("messaging.system"), Some("nats"));
                assert_eq!(
                    served.attr("messaging.destination.name"),
                    Some(subject.as_str())
                );
                assert_eq!(served.attr("messaging.operation.type"), Some("process"));
                assert_eq!(
                    served.attr("messaging.consumer.group.name"),
                    Some(nordlys_transport::QUEUE_GROUP)
                );
            }
        }
    }
    if route == "nats" {
        assert_eq!(
            regions,
            HashSet::from(["sto1".to_owned(), "osl1".to_owned()])
        );
    }

    // The quota service's work hangs off the gateway's calls to it.
    let quota_calls: Vec<&Span> = spans.iter().filter(|s| is_quota_call(s)).collect();
    let methods: HashSet<&str> = quota_calls
        .iter()
        .filter_map(|c| c.attr("messaging.destination.name"))
        .collect();
    assert!(
        methods.contains("nordlys.quota.v1.QuotaController.Reserve"),
        "{methods:?}"
    );
    for call in quota_calls {
        assert_eq!(call.parent_span_id, server.span_id, "{}", dump(&spans));
        let served = children(&spans, call);
        assert!(
            served.iter().any(|s| s.service == QUOTA
                && s.kind == SERVER
                && s.attr("messaging.consumer.group.name") == Some("q")),
            "{}",
            dump(&spans)
        );
    }
}

#[tokio::test]
async fn a_create_in_two_regions_is_one_trace_over_direct_grpc() {
    one_trace_per_call("grpc", "5bd66ef5095369c7b0d1f8f4bd33716a").await;
}

#[tokio::test]
async fn a_create_in_two_regions_is_one_trace_over_nats() {
    one_trace_per_call("nats", "6e0c63257de34c92bf9efcd03927272e").await;
}

#[tokio::test]
async fn the_http_port_and_failed_calls_have_their_attributes() {
    let collector = Collector::start().await;
    let stack = Stack::start_with(traced_stack("auto", &collector)).await;
    let tenant = stack.tenant("acme").await;
    stack
        .create_project(&tenant.key, "web", &["sto1"])
        .await
        .expect("CreateProject");

    // HTTP: the route template names the span.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    Http::new(&stack.gateway.http_url())
        .with_key(&tenant.key)
        .send(
            "GET",
            "/v1/projects/web",
            bytes::Bytes::new(),
            &[("traceparent", &traceparent(trace_id))],
        )
        .await
        .expect(200);
    let done = |spans: &[Span]| {
        spans
            .iter()
            .any(|s| s.service == GATEWAY && s.kind == SERVER)
            && spans.iter().any(|s| s.service == REGIOND)
            && connected(spans)
    };
    let spans = collector.wait_trace(trace_id, WAIT, done).await;
    assert_connected(&spans);
    let server = spans
        .iter()
        .find(|s| s.service == GATEWAY && s.kind == SERVER)
        .unwrap_or_else(|| panic!("no HTTP server span:\n{}", dump(&spans)));
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(server.name, "GET /v1/{name=projects/*}");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("url.path"), Some("/v1/projects/web"));
    assert_eq!(server.attr("http.route"), Some("/v1/{name=projects/*}"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert!(
        spans
            .iter()
            .any(|s| s.kind == CLIENT && s.parent_span_id == server.span_id),
        "{}",
        dump(&spans)
    );

    // A gRPC error answered trailers-only: its code, and no error status
    // for a caller's mistake.
    let trace_id = "7d3efb1b173fecfa5bb8bd1b5e8e2b8c";
    let missing = ProjectServiceClient::new(stack.channel().await)
        .get_project(with_trace(
            GetProjectRequest {
                name: "projects/nope".into(),
            },
            &tenant.key,
            trace_id,
        ))
        .await
        .expect_err("no such project");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let spans = collector
        .wait_trace(trace_id, WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.service == GATEWAY && s.kind == SERVER)
        })
        .await;
    let server = gateway_server(&spans, "GetProject");
    assert_eq!(server.attr("rpc.grpc.status_code"), Some("5"));
    assert_ne!(server.status, 2, "NOT_FOUND is not a server error");
}

/// The standard variables: OTEL_SERVICE_NAME renames a daemon's service,
/// OTEL_SDK_DISABLED turns its export off even with an endpoint set.
#[tokio::test]
async fn otel_service_name_and_sdk_disabled_are_honoured() {
    let collector = Collector::start().await;
    let mut opts = traced_stack("auto", &collector);
    opts.gateway_env
        .push(("OTEL_SERVICE_NAME".into(), "edge-gateway".into()));
    opts.regiond_env
        .push(("OTEL_SDK_DISABLED".into(), "true".into()));
    let stack = Stack::start_with(opts).await;
    let tenant = stack.tenant("acme").await;
    let trace_id = "6a1b2c3d4e5f60718293a4b5c6d7e8f9";
    ProjectServiceClient::new(stack.channel().await)
        .create_project(with_trace(
            create_project("web", &["sto1", "osl1"]),
            &tenant.key,
            trace_id,
        ))
        .await
        .expect("CreateProject");
    let spans = collector
        .wait_trace(trace_id, WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.service == "edge-gateway" && s.kind == SERVER)
                && spans.iter().any(|s| s.service == QUOTA)
        })
        .await;
    assert!(
        spans
            .iter()
            .any(|s| s.service == "edge-gateway" && s.kind == SERVER),
        "{}",
        dump(&spans)
    );
    assert!(
        spans.iter().all(|s| s.service != GATEWAY),
        "{}",
        dump(&spans)
    );
    // Quota's spans arrived: wait a few of regiond's export delays more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spans = collector.spans();
    assert!(
        spans.iter().all(|s| s.service != REGIOND),
        "regiond exported with the SDK disabled:\n{}",
        dump(&spans)
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    // Receivers on the OTLP default port (localhost:4317, either family):
    // where a daemon that exported without being asked would send.
    let v4 = Collector::start_on("127.0.0.1:4317")
        .await
        .expect("the OTLP default port 127.0.0.1:4317 must be free for this test");
    let v6 = Collector::start_on("[::1]:4317").await.ok();
    // Everything but the endpoint (set, but empty).
    let env: Vec<(String, String)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), String::new()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ("OTEL_SERVICE_NAME".into(), "should-not-appear".into()),
    ];
    let stack = Stack::start_with(StackOpts {
        route: "auto".to_owned(),
        sto1_instances: 1,
        gateway_env: env.clone(),
        regiond_env: env.clone(),
        quota_env: env,
        ..StackOpts::default()
    })
    .await;
    let tenant = stack.tenant("acme").await;
    ProjectServiceClient::new(stack.channel().await)
        .create_project(with_trace(
            create_project("web", &["sto1", "osl1"]),
            &tenant.key,
            "5bd66ef5095369c7b0d1f8f4bd33716a",
        ))
        .await
        .expect("CreateProject");
    // Many schedule delays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut spans = v4.spans();
    spans.extend(v6.map(|c| c.spans()).unwrap_or_default());
    assert!(spans.is_empty(), "spans exported:\n{}", dump(&spans));
}

/// One OpenStack region `sto1` behind regiond, quota and a gateway (on
/// `route`), every daemon given `env`. Fields drop in order: the gateway
/// first, the cloud last.
struct OpenStackSto1 {
    gateway: nordlys_tests::Gateway,
    _regiond: nordlys_tests::Regiond,
    _quota: nordlys_tests::Quota,
    _config: tempfile::TempDir,
    _nats: nordlys_tests::NatsServer,
    region: nordlys_tests::openstack::OpenStackRegion,
}

impl OpenStackSto1 {
    async fn start(env: &[(String, String)], route: &str) -> OpenStackSto1 {
        use nordlys_tests::openstack::{self, OpenStackRegion};
        let region = OpenStackRegion::start("sto1");
        let nats = nordlys_tests::NatsServer::start();
        let quota = nordlys_tests::Quota::start_env(&nats, &[] as &[&str], env);
        let config = openstack::regiond_config("");
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let regiond = openstack::regiond(&nats, &region, config.path(), &env_refs);
        // osl1 stays absent: one region is enough here.
        let gateway_opts = nordlys_tests::GatewayOpts {
            args: vec!["--route".to_owned(), route.to_owned()],
            ..Default::default()
        };
        let gateway = nordlys_tests::Gateway::start_at(&nats.url(), &gateway_opts, env);
        gateway
            .wait_for_regions(|r| nordlys_tests::instances(r, "sto1") == 1)
            .await;
        OpenStackSto1 {
            gateway,
            _regiond: regiond,
            _quota: quota,
            _config: config,
            _nats: nats,
            region,
        }
    }

    /// A project (Keystone) and a network in it (Neutron), the calls sent
    /// with the caller's traceparents of `trace_id` and `network_trace_id`.
    async fn project_and_network(&self, trace_id: &str, network_trace_id: &str) {
        let tenant = self.gateway.tenant("acme").await;
        ProjectServiceClient::new(self.gateway.channel().await)
            .create_project(with_trace(
                create_project("web", &["sto1"]),
                &tenant.key,
                trace_id,
            ))
            .await
            .expect("CreateProject");
        NetworkServiceClient::new(self.gateway.channel().await)
            .create_network(with_trace(
                CreateNetworkRequest {
                    parent: "projects/web".into(),
                    network: Some(Network {
                        region: "sto1".into(),
                        cidr: "10.20.0.0/24".into(),
                        ..Default::default()
                    }),
                    network_id: "backend".into(),
                    request_id: String::new(),
                },
                &tenant.key,
                network_trace_id,
            ))
            .await
            .expect("CreateNetwork");
    }
}

/// On a real OpenStack region, over `route`: one CreateProject is one
/// trace, linked span by span from the caller to the cloud: the gateway's
/// server span, its client span to the region, regiond's server span under
/// that, and regiond's Keystone and Neutron requests as CLIENT spans under
/// it, which the servers received as their traceparent.
async fn a_create_is_one_trace_down_to_keystone_and_neutron(route: &str, trace_id: &str) {
    let collector = Collector::start().await;
    let cloud = OpenStackSto1::start(&collector.env(), route).await;
    let region = &cloud.region;
    // The network's call gets a trace of its own: this one is the
    // project's alone.
    let network_trace = "0123456789abcdef0123456789abcdef";
    cloud.project_and_network(trace_id, network_trace).await;

    let keystone = region.auth_url();
    let neutron = region.neutron_url();
    let is_to = |s: &Span, base: &str| {
        s.service == REGIOND
            && s.kind == CLIENT
            && s.attr("url.full").is_some_and(|u| u.starts_with(base))
    };
    let spans = collector
        .wait_trace(trace_id, WAIT, |spans| {
            complete(spans, 1)
                && spans.iter().any(|s| is_to(s, &keystone))
                && spans.iter().any(|s| is_to(s, &neutron))
                && connected(spans)
        })
        .await;
    assert_connected(&spans);
    let server = gateway_server(&spans, "CreateProject");
    let calls: Vec<&Span> = spans.iter().filter(|s| is_regiond_call(s)).collect();
    assert_eq!(calls.len(), 1, "one attempt, one region:\n{}", dump(&spans));
    let call = calls[0];
    assert_eq!(call.parent_span_id, server.span_id, "{}", dump(&spans));
    match route {
        "grpc" => assert_eq!(call.attr("rpc.system"), Some("grpc")),
        _ => assert_eq!(call.attr("messaging.system"), Some("nats")),
    }
    let served: Vec<&Span> = children(&spans, call)
        .into_iter()
        .filter(|s| s.service == REGIOND && s.kind == SERVER)
        .collect();
    assert_eq!(served.len(), 1, "{}", dump(&spans));
    let served = served[0];
    let mut seen = (false, false);
    for span in spans
        .iter()
        .filter(|s| s.service == REGIOND && s.kind == CLIENT)
    {
        let url = span.attr("url.full").unwrap_or_default();
        if !(url.starts_with(&keystone) || url.starts_with(&neutron)) {
            continue;
        }
        seen.0 |= url.starts_with(&keystone);
        seen.1 |= url.starts_with(&neutron);
        // Directly under regiond's server span of this call.
        assert_eq!(
            span.parent_span_id,
            served.span_id,
            "{span:?}\n{}",
            dump(&spans)
        );
        assert!(span.attr("http.request.method").is_some(), "{span:?}");
        assert_eq!(span.attr("server.address"), Some("127.0.0.1"));
        assert!(span.attr("http.response.status_code").is_some(), "{span:?}");
        assert_eq!(
            span.name,
            span.attr("http.request.method").unwrap_or_default()
        );
    }
    assert_eq!(
        seen,
        (true, true),
        "Keystone and Neutron spans:\n{}",
        dump(&spans)
    );
    // No span of the network's call strayed into this trace.
    assert!(
        spans.iter().all(|s| s.service != GATEWAY
            || s.kind != SERVER
            || s.name == "nordlys.v1.ProjectService/CreateProject"),
        "{}",
        dump(&spans)
    );

    // What the servers received: the trace id, and as parent one of these
    // CLIENT spans.
    let clients: HashSet<&str> = spans
        .iter()
        .filter(|s| s.kind == CLIENT && s.service == REGIOND)
        .map(|s| s.span_id.as_str())
        .collect();
    for server in ["keystone", "neutron"] {
        let received: Vec<(String, String, String)> = region
            .received_traceparents(server)
            .into_iter()
            .filter(|(_, _, tp)| tp.contains(trace_id))
            .collect();
        assert!(
            !received.is_empty(),
            "{server} received no traceparent of the trace"
        );
        for (method, path, tp) in received {
            let parent = tp.split('-').nth(2).unwrap_or_default();
            assert!(
                clients.contains(parent),
                "{server} {method} {path}: {tp} names no client span of the trace"
            );
        }
    }
}

#[tokio::test]
async fn a_create_is_one_trace_down_to_keystone_and_neutron_over_nats() {
    if !nordlys_tests::openstack::available("openstack trace over nats") {
        return;
    }
    a_create_is_one_trace_down_to_keystone_and_neutron("nats", "3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b")
        .await;
}

#[tokio::test]
async fn a_create_is_one_trace_down_to_keystone_and_neutron_over_direct_grpc() {
    if !nordlys_tests::openstack::available("openstack trace over grpc") {
        return;
    }
    a_create_is_one_trace_down_to_keystone_and_neutron("grpc", "7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f")
        .await;
}

/// Without export, the caller's traceparent reaches Keystone and Neutron
/// unchanged.
#[tokio::test]
async fn without_export_keystone_and_neutron_receive_the_callers_traceparent() {
    if !nordlys_tests::openstack::available(
        "without_export_keystone_and_neutron_receive_the_callers_traceparent",
    ) {
        return;
    }
    let cloud = OpenStackSto1::start(&[], "nats").await;
    let trace_id = "9a8b7c6d5e4f30211203f4e5d6c7b8a9";
    cloud.project_and_network(trace_id, trace_id).await;
    let sent = traceparent(trace_id);
    for server in ["keystone", "neutron"] {
        let received = cloud.region.received_traceparents(server);
        let ours: Vec<&(String, String, String)> = received
            .iter()
            .filter(|(_, _, tp)| tp.contains(trace_id))
            .collect();
        assert!(
            !ours.is_empty(),
            "{server} received no traceparent of the call: {received:?}"
        );
        for (method, path, tp) in ours {
            assert_eq!(tp, &sent, "{server} {method} {path}");
        }
    }
}
