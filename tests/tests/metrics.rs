//! `/metrics` of every daemon, scraped over real sockets and read with a
//! Prometheus text parser: the public calls of the gateway by protocol and
//! code, its attempts to regions by route, regiond's calls by route, the
//! quota service's calls and reservations; histograms that add up; and
//! `$SRV.STATS` still counting what the NATS endpoints answered.

mod http_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_common::Http;
use nordlys_proto::pb::nordlys::quota::v1 as q;
use nordlys_proto::pb::nordlys::v1::project_service_client::ProjectServiceClient;
use nordlys_proto::pb::nordlys::v1::{
    CreateOrganizationRequest, GetProjectRequest, Organization, ResourceCounts, UpdateQuotaRequest,
};
use nordlys_tests::{bearer, instances, Gateway, GatewayOpts, NatsServer, Quota, Stack, StackOpts};
use nordlys_transport::{Identity, Role};
use prometheus_parse::{Sample, Scrape, Value};
use tonic::Code;

/// One scrape: every sample, by series name.
#[derive(Debug)]
struct Metrics {
    content_type: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// The sum of the counter or untyped samples of `name` whose labels
    /// include `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name && has(s, want))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// Like [`Metrics::sum`], over samples whose `code` is not OK.
    fn errors(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name && has(s, want) && s.labels.get("code") != Some("OK"))
            .map(|s| match s.value {
                Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// Checks every histogram: buckets cumulative, `+Inf` equal to
    /// `_count`, `_sum` present; and, when `counter` is given, `_count`
    /// equal to the sum of `counter` over codes with the same labels.
    /// Returns how many histograms were checked.
    fn check_histograms(&self, histogram: &str, counter: &str) -> usize {
        let mut checked = 0;
        for sample in self.samples.iter().filter(|s| s.metric == histogram) {
            let Value::Histogram(buckets) = &sample.value else {
                panic!("{histogram} is not a histogram: {sample:?}");
            };
            let mut buckets = buckets.clone();
            buckets.sort_by(|a, b| a.less_than.total_cmp(&b.less_than));
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "{histogram}{{{}}} buckets are not cumulative: {buckets:?}",
                sample.labels
            );
            let last = buckets.last().expect("at least one bucket");
            assert!(last.less_than.is_infinite(), "no +Inf bucket: {buckets:?}");
            assert_eq!(
                buckets.len(),
                nordlys_metrics_buckets() + 1,
                "every bucket of the shared layout, and +Inf"
            );
            let want: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = self.sum(&format!("{histogram}_count"), &want);
            assert_eq!(
                last.count, count,
                "{histogram}{{{}}}: +Inf bucket against _count",
                sample.labels
            );
            assert!(
                self.samples
                    .iter()
                    .any(|s| s.metric == format!("{histogram}_sum") && has(s, &want)),
                "{histogram}{{{}}} has no _sum",
                sample.labels
            );
            let calls = self.sum(counter, &want);
            assert_eq!(
                count, calls,
                "{histogram}{{{}}}: observations against {counter} over every code",
                sample.labels
            );
            checked += 1;
        }
        checked
    }
}

/// The number of finite buckets every latency histogram has (0.5 ms to
/// 10 s), as docs/observability.md lists them.
fn nordlys_metrics_buckets() -> usize {
    14
}

fn has(sample: &Sample, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

/// `GET /metrics` of `addr`, parsed.
async fn scrape(addr: SocketAddr) -> Metrics {
    let reply = Http::new(&format!("http://{addr}"))
        .get("/metrics")
        .await
        .expect(200);
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = reply.text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    Metrics {
        content_type,
        samples: scrape.samples,
    }
}

/// Retries `check` for a few seconds: a NATS reply can reach the caller a
/// moment before the daemon that sent it has counted it.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `(num_requests, num_errors)` of one micro service instance, all
/// endpoints together, from `$SRV.STATS`.
async fn stats(client: &async_nats::Client, service: &str, id: &str) -> (f64, f64) {
    let reply = client
        .request(format!("$SRV.STATS.{service}.{id}"), "".into())
        .await
        .expect("$SRV.STATS answers");
    let stats: serde_json::Value = serde_json::from_slice(&reply.payload).expect("stats JSON");
    let endpoints = stats["endpoints"].as_array().cloned().unwrap_or_default();
    let total = |field: &str| -> f64 {
        endpoints
            .iter()
            .filter_map(|e| e[field].as_u64())
            .map(|n| n as f64)
            .sum()
    };
    (total("num_requests"), total("num_errors"))
}

const PROJECTS: &str = "nordlys.v1.ProjectService";

#[tokio::test]
async fn every_daemon_serves_prometheus_text_that_counts_its_calls() {
    let stack = Stack::start_with(StackOpts {
        sto1_instances: 1,
        ..StackOpts::default()
    })
    .await;
    // A second gateway pinned to NATS: regiond's NATS endpoints serve too.
    let over_nats = Gateway::start(
        &stack.nats,
        &GatewayOpts {
            args: vec!["--route".into(), "nats".into()],
            ..GatewayOpts::default()
        },
    );
    over_nats
        .wait_for_regions(|r| instances(r, "sto1") == 1 && instances(r, "osl1") == 1)
        .await;
    let tenant = stack
        .tenant_with_limits(
            "metered",
            ResourceCounts {
                projects: 1,
                users: 10,
                networks: 10,
                access_rules: 10,
            },
        )
        .await;
    let key = tenant.key.as_str();

    // gRPC: a create, one refused by the quota, a get, gets of nothing.
    stack
        .create_project(key, "web", &["sto1"])
        .await
        .expect("CreateProject");
    let refused = stack
        .create_project(key, "more", &["sto1"])
        .await
        .expect_err("over the project limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let get = |name: &str| bearer(GetProjectRequest { name: name.into() }, key);
    let mut grpc = ProjectServiceClient::new(stack.channel().await);
    grpc.get_project(get("projects/web"))
        .await
        .expect("GetProject");
    const MISSING_GRPC: f64 = 3.0;
    for _ in 0..MISSING_GRPC as usize {
        let status = grpc
            .get_project(get("projects/nothing"))
            .await
            .expect_err("no such project");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // HTTP: the same calls, transcoded.
    let http = Http::new(&stack.gateway.http_url()).with_key(key);
    http.get("/v1/projects/web").await.expect(200);
    const MISSING_HTTP: f64 = 2.0;
    for _ in 0..MISSING_HTTP as usize {
        http.get("/v1/projects/nothing").await.expect(404);
    }
    // Over NATS, through the second gateway.
    let mut nats_route = ProjectServiceClient::new(over_nats.channel().await);
    nats_route
        .get_project(get("projects/web"))
        .await
        .expect("GetProject over NATS");
    for _ in 0..2 {
        let status = nats_route
            .get_project(get("projects/nothing"))
            .await
            .expect_err("no such project");
        assert_eq!(status.code(), Code::NotFound);
    }

    // The gateway: public calls by protocol and code, exactly ours.
    let gateway = scrape(stack.gateway.http_addr()).await;
    assert!(
        gateway
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        gateway.content_type
    );
    let public = |method: &str, code: &str, protocol: &str| {
        gateway.sum(
            "nordlys_gateway_requests_total",
            &[
                ("service", PROJECTS),
                ("method", method),
                ("code", code),
                ("protocol", protocol),
            ],
        )
    };
    assert_eq!(public("CreateProject", "OK", "grpc"), 1.0);
    assert_eq!(public("CreateProject", "RESOURCE_EXHAUSTED", "grpc"), 1.0);
    assert_eq!(public("GetProject", "OK", "grpc"), 1.0);
    assert_eq!(public("GetProject", "NOT_FOUND", "grpc"), MISSING_GRPC);
    assert_eq!(public("GetProject", "OK", "http"), 1.0);
    assert_eq!(public("GetProject", "NOT_FOUND", "http"), MISSING_HTTP);
    assert!(
        gateway.check_histograms(
            "nordlys_gateway_request_duration_seconds",
            "nordlys_gateway_requests_total"
        ) >= 4,
        "a histogram per service, method and protocol called"
    );
    assert!(
        gateway.check_histograms(
            "nordlys_gateway_region_call_duration_seconds",
            "nordlys_gateway_region_calls_total"
        ) >= 2
    );
    // The gateway in auto mode reached the regions directly.
    assert!(
        gateway.sum(
            "nordlys_gateway_region_calls_total",
            &[
                ("method", "GetProject"),
                ("code", "NOT_FOUND"),
                ("route", "grpc")
            ],
        ) >= 1.0
    );
    assert_eq!(gateway.sum("nordlys_gateway_fallbacks_total", &[]), 0.0);
    let pinned = scrape(over_nats.http_addr()).await;
    assert!(
        pinned.sum(
            "nordlys_gateway_region_calls_total",
            &[
                ("method", "GetProject"),
                ("code", "NOT_FOUND"),
                ("route", "nats")
            ],
        ) >= 1.0
    );
    assert_eq!(
        pinned.sum("nordlys_gateway_region_calls_total", &[("route", "grpc")]),
        0.0,
        "the pinned gateway never went direct"
    );

    // OpenMetrics when asked for.
    let openmetrics = Http::new(&stack.gateway.http_url())
        .send(
            "GET",
            "/metrics",
            "",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await
        .expect(200);
    assert!(openmetrics
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(openmetrics.text().ends_with("# EOF\n"));

    // Each region: what the gateways sent is what regiond served, by
    // route, method and code; and $SRV.STATS counts the NATS part.
    let client = async_nats::connect(stack.nats.url()).await.expect("NATS");
    for regiond in [&stack.sto1_a, &stack.osl1] {
        let region = regiond.region().to_owned();
        let addr = regiond.metrics_addr();
        let id = regiond.id().to_owned();
        let (client, gateway_addr, pinned_addr) = (
            client.clone(),
            stack.gateway.http_addr(),
            over_nats.http_addr(),
        );
        eventually(&format!("regiond {region} against the gateways"), || {
            let (region, id, client) = (region.clone(), id.clone(), client.clone());
            async move {
                let served = scrape(addr).await;
                let direct = scrape(gateway_addr).await;
                let pinned = scrape(pinned_addr).await;
                for (route, code) in [
                    ("grpc", "OK"),
                    ("grpc", "NOT_FOUND"),
                    ("nats", "OK"),
                    ("nats", "NOT_FOUND"),
                ] {
                    let want = [
                        ("method", "GetProject"),
                        ("code", code),
                        ("route", route),
                    ];
                    let there = served.sum(
                        "nordlys_regiond_requests_total",
                        &[
                            ("service", "nordlys.regiond.v1.RegiondService"),
                            ("method", "GetProject"),
                            ("code", code),
                            ("route", route),
                        ],
                    );
                    let mut sent = [("region", region.as_str())].to_vec();
                    sent.extend(want);
                    let sent = direct.sum("nordlys_gateway_region_calls_total", &sent)
                        + pinned.sum("nordlys_gateway_region_calls_total", &sent);
                    if there != sent {
                        return Err(format!(
                            "{route} GetProject {code}: regiond served {there}, the gateways sent {sent}"
                        ));
                    }
                }
                // $SRV.STATS against the NATS route's series, read between
                // two scrapes that agree (no call slipped in between).
                let before = served.sum("nordlys_regiond_requests_total", &[("route", "nats")]);
                let errors = served.errors("nordlys_regiond_requests_total", &[("route", "nats")]);
                let (requests, failed) = stats(&client, "nordlys-regiond", &id).await;
                let after = scrape(addr)
                    .await
                    .sum("nordlys_regiond_requests_total", &[("route", "nats")]);
                if before != after {
                    return Err("calls came in during the check".into());
                }
                if (requests, failed) != (before, errors) {
                    return Err(format!(
                        "$SRV.STATS says {requests} requests, {failed} errors; /metrics {before}, {errors}"
                    ));
                }
                Ok(())
            }
        })
        .await;
        let served = scrape(addr).await;
        assert!(served.content_type.starts_with("text/plain; version=0.0.4"));
        served.check_histograms(
            "nordlys_regiond_request_duration_seconds",
            "nordlys_regiond_requests_total",
        );
    }
    // The project lives in sto1: both routes reached sto1's regiond.
    let sto1 = scrape(stack.sto1_a.metrics_addr()).await;
    for route in ["grpc", "nats"] {
        assert!(
            sto1.sum(
                "nordlys_regiond_requests_total",
                &[("method", "GetProject"), ("code", "OK"), ("route", route)],
            ) >= 1.0,
            "sto1 served GetProject over {route}"
        );
    }

    // The quota service: calls by method and code, reservations by
    // outcome, and $SRV.STATS in agreement.
    let quota_addr = stack.quota.metrics_addr();
    let quota_id = stack.quota.id().to_owned();
    eventually("quota", || {
        let (client, id) = (client.clone(), quota_id.clone());
        async move {
            let quota = scrape(quota_addr).await;
            let outcome = |o: &str| quota.sum("nordlys_quota_reservations_total", &[("outcome", o)]);
            if outcome("reserved") < 1.0 || outcome("refused") < 1.0 || outcome("committed") < 1.0
            {
                return Err(format!(
                    "reservations: reserved {}, refused {}, committed {}",
                    outcome("reserved"),
                    outcome("refused"),
                    outcome("committed")
                ));
            }
            let reserve = |code: &str| {
                quota.sum(
                    "nordlys_quota_requests_total",
                    &[
                        ("service", "nordlys.quota.v1.QuotaController"),
                        ("method", "Reserve"),
                        ("code", code),
                        ("route", "nats"),
                    ],
                )
            };
            if reserve("OK") < 1.0 || reserve("RESOURCE_EXHAUSTED") < 1.0 {
                return Err(format!(
                    "Reserve OK {}, RESOURCE_EXHAUSTED {}",
                    reserve("OK"),
                    reserve("RESOURCE_EXHAUSTED")
                ));
            }
            let before = quota.sum("nordlys_quota_requests_total", &[]);
            let errors = quota.errors("nordlys_quota_requests_total", &[]);
            let (requests, failed) = stats(&client, "nordlys-quota", &id).await;
            let after = scrape(quota_addr)
                .await
                .sum("nordlys_quota_requests_total", &[]);
            if before != after {
                return Err("calls came in during the check".into());
            }
            if (requests, failed) != (before, errors) {
                return Err(format!(
                    "$SRV.STATS says {requests} requests, {failed} errors; /metrics {before}, {errors}"
                ));
            }
            quota.check_histograms(
                "nordlys_quota_request_duration_seconds",
                "nordlys_quota_requests_total",
            );
            Ok(())
        }
    })
    .await;
}

/// A NATS client of the quota service, asserting identities in metadata
/// as the gateway and the regions do.
#[derive(Clone)]
struct QuotaClient(nordlys_transport::NatsChannel);

impl QuotaClient {
    async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: &str,
        caller: &Identity,
        message: Req,
    ) -> Result<Resp, tonic::Status> {
        let mut request = tonic::Request::new(message);
        caller.write(request.metadata_mut())?;
        self.0
            .unary(
                format!("nordlys.quota.v1.QuotaController.{method}"),
                request,
            )
            .await
            .map(tonic::Response::into_inner)
    }

    async fn reserve(
        &self,
        caller: &Identity,
        id: &str,
        ttl_seconds: u32,
    ) -> Result<(), tonic::Status> {
        self.call::<_, q::ReserveResponse>(
            "Reserve",
            caller,
            q::ReserveRequest {
                reservation_id: id.to_owned(),
                organization: ORG.to_owned(),
                items: vec![q::RegionCounts {
                    region: "sto1".to_owned(),
                    counts: Some(ResourceCounts {
                        projects: 1,
                        ..Default::default()
                    }),
                }],
                ttl_seconds,
            },
        )
        .await
        .map(drop)
    }

    async fn commit(&self, caller: &Identity, id: &str) -> Result<(), tonic::Status> {
        self.call::<_, q::CommitResponse>(
            "Commit",
            caller,
            q::CommitRequest {
                reservation_id: id.to_owned(),
                organization: ORG.to_owned(),
                regions: vec!["sto1".to_owned()],
                created: Vec::new(),
            },
        )
        .await
        .map(drop)
    }

    async fn release(&self, caller: &Identity, id: &str) -> Result<(), tonic::Status> {
        self.call::<_, q::ReleaseResponse>(
            "Release",
            caller,
            q::ReleaseRequest {
                reservation_id: id.to_owned(),
                organization: ORG.to_owned(),
                regions: vec!["sto1".to_owned()],
            },
        )
        .await
        .map(drop)
    }
}

const ORG: &str = "organizations/race";

#[tokio::test]
async fn quota_counts_reservations_by_outcome_and_store_conflicts() {
    let nats = NatsServer::start();
    let quotas = [Quota::start(&nats), Quota::start(&nats)];
    let client = QuotaClient(nordlys_transport::NatsChannel::new(
        async_nats::connect(nats.url()).await.expect("NATS"),
        Duration::from_secs(30),
    ));
    let operator = Identity::operator();
    let _: Organization = client
        .call(
            "CreateOrganization",
            &operator,
            CreateOrganizationRequest {
                organization: Some(Organization {
                    display_name: "Race".into(),
                    ..Default::default()
                }),
                organization_id: "race".into(),
            },
        )
        .await
        .expect("CreateOrganization");
    const LIMIT: i64 = 20;
    let _: nordlys_proto::pb::nordlys::v1::Quota = client
        .call(
            "UpdateQuota",
            &operator,
            UpdateQuotaRequest {
                quota: Some(nordlys_proto::pb::nordlys::v1::Quota {
                    name: format!("{ORG}/quotas/sto1"),
                    limits: Some(ResourceCounts {
                        projects: LIMIT,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["limits.projects".to_owned()],
                }),
            },
        )
        .await
        .expect("UpdateQuota");
    let member = Identity {
        organization: ORG.to_owned(),
        member: format!("{ORG}/members/someone@race.example"),
        role: Role::Member,
    };

    // Two instances reserve and commit on one document at once: only the
    // limit gets through, and the instances meet each other's writes.
    const TRIES: usize = 80;
    let tasks: Vec<_> = (0..TRIES)
        .map(|i| {
            let (client, member) = (client.clone(), member.clone());
            tokio::spawn(async move {
                let id = format!("r-race-{i}");
                client.reserve(&member, &id, 0).await?;
                client.commit(&member, &id).await
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => granted += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert_eq!(granted, LIMIT);
    // Room for the rest: one released, one left to lapse, then committed.
    let _: nordlys_proto::pb::nordlys::v1::Quota = client
        .call(
            "UpdateQuota",
            &operator,
            UpdateQuotaRequest {
                quota: Some(nordlys_proto::pb::nordlys::v1::Quota {
                    name: format!("{ORG}/quotas/sto1"),
                    limits: Some(ResourceCounts {
                        projects: LIMIT + 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["limits.projects".to_owned()],
                }),
            },
        )
        .await
        .expect("UpdateQuota");
    client
        .reserve(&member, "r-given-back", 0)
        .await
        .expect("fits");
    client
        .release(&member, "r-given-back")
        .await
        .expect("Release");
    client.reserve(&member, "r-late", 1).await.expect("fits");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .commit(&member, "r-late")
        .await
        .expect("a late commit is answered");

    let scrapes = [
        scrape(quotas[0].metrics_addr()).await,
        scrape(quotas[1].metrics_addr()).await,
    ];
    let sum = |name: &str, want: &[(&str, &str)]| -> f64 {
        scrapes.iter().map(|m| m.sum(name, want)).sum()
    };
    let outcome = |o: &str| sum("nordlys_quota_reservations_total", &[("outcome", o)]);
    let reserves = TRIES as f64 + 2.0;
    let refused = (TRIES as i64 - LIMIT) as f64;
    assert_eq!(outcome("reserved"), reserves - refused, "granted reserves");
    assert_eq!(outcome("refused"), refused);
    assert_eq!(outcome("committed"), LIMIT as f64);
    assert_eq!(outcome("released"), 1.0);
    assert_eq!(outcome("lapsed"), 1.0, "the commit after the TTL");
    let calls = |method: &str, code: &str| {
        sum(
            "nordlys_quota_requests_total",
            &[("method", method), ("code", code), ("route", "nats")],
        )
    };
    assert_eq!(calls("Reserve", "OK"), reserves - refused);
    assert_eq!(calls("Reserve", "RESOURCE_EXHAUSTED"), refused);
    assert_eq!(calls("Commit", "OK"), LIMIT as f64 + 1.0);
    assert_eq!(calls("Release", "OK"), 1.0);
    for m in &scrapes {
        m.check_histograms(
            "nordlys_quota_request_duration_seconds",
            "nordlys_quota_requests_total",
        );
    }

    // The instances meet each other's writes: each groups what queued on
    // the document into one compare-and-set, so a burst or two of writes
    // (reserve, then release) may pass without a race; a few more do not.
    let _: nordlys_proto::pb::nordlys::v1::Quota = client
        .call(
            "UpdateQuota",
            &operator,
            UpdateQuotaRequest {
                quota: Some(nordlys_proto::pb::nordlys::v1::Quota {
                    name: format!("{ORG}/quotas/sto1"),
                    limits: Some(ResourceCounts {
                        projects: 100_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["limits.projects".to_owned()],
                }),
            },
        )
        .await
        .expect("UpdateQuota");
    let mut conflicts = 0.0;
    for burst in 0..20 {
        let tasks: Vec<_> = (0..TRIES)
            .map(|i| {
                let (client, member) = (client.clone(), member.clone());
                tokio::spawn(async move {
                    let id = format!("r-burst-{burst}-{i}");
                    client.reserve(&member, &id, 0).await?;
                    client.release(&member, &id).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("reserve and release");
        }
        conflicts = 0.0;
        for quota in &quotas {
            conflicts += scrape(quota.metrics_addr())
                .await
                .sum("nordlys_quota_store_conflicts_total", &[]);
        }
        if conflicts >= 1.0 {
            println!(
                "compare-and-set conflicts after {} burst(s): {conflicts}",
                burst + 1
            );
            break;
        }
    }
    assert!(
        conflicts >= 1.0,
        "20 bursts of {TRIES} writes over two instances met no conflict"
    );
    let mut contention = 0.0;
    for quota in &quotas {
        contention += scrape(quota.metrics_addr())
            .await
            .sum("nordlys_quota_store_contention_failures_total", &[]);
    }
    assert_eq!(contention, 0.0);
}
