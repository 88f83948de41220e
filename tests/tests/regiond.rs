//! regiond on its own, over NATS: the micro service the gateway calls.
//! Calls travel through `NatsChannel` with the identity in metadata, as the
//! gateway sends them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use nordlys_proto::pb::nordlys::regiond::v1::{DeleteResponse, ListRequest};
use nordlys_proto::pb::nordlys::v1::{
    CreateMembershipRequest, CreateNetworkRequest, CreateProjectRequest, DeleteProjectRequest,
    GetProjectRequest, ListProjectsResponse, Membership, Network, Project, ProjectRole,
};
use nordlys_tests::{NatsServer, Process, Regiond, Spec};
use nordlys_transport::{Identity, NatsChannel, Role};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const ACME: &str = "organizations/acme";
const PREFIX: &str = "nordlys.v1.sto1.RegiondService";

fn acme() -> Identity {
    Identity {
        organization: ACME.into(),
        member: format!("{ACME}/members/alice"),
        role: Role::Member,
    }
}

fn call<T>(identity: &Identity, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    identity
        .write(request.metadata_mut())
        .expect("ascii identity");
    request
}

async fn channel(nats: &NatsServer) -> NatsChannel {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    NatsChannel::new(client, Duration::from_secs(5))
}

fn new_project(id: &str, request_id: &str) -> CreateProjectRequest {
    CreateProjectRequest {
        project: Some(Project {
            name: format!("projects/{id}"),
            organization: ACME.into(),
            display_name: format!("Project {id}"),
            regions: vec!["sto1".into()],
            ..Default::default()
        }),
        project_id: id.into(),
        request_id: request_id.into(),
    }
}

async fn create_project(
    ch: &NatsChannel,
    req: CreateProjectRequest,
) -> Result<Project, tonic::Status> {
    ch.unary(format!("{PREFIX}.CreateProject"), call(&acme(), req))
        .await
        .map(|r| r.into_inner())
}

async fn get_project(
    ch: &NatsChannel,
    who: &Identity,
    name: &str,
) -> Result<Project, tonic::Status> {
    ch.unary(
        format!("{PREFIX}.GetProject"),
        call(who, GetProjectRequest { name: name.into() }),
    )
    .await
    .map(|r| r.into_inner())
}

/// Every reply to a `$SRV` discovery request within `wait`.
async fn gather(client: &async_nats::Client, subject: &str, wait: Duration) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        out.push(serde_json::from_slice(&msg.payload).expect("JSON reply"));
    }
    out
}

/// Requests an instance has answered, all endpoints together.
fn requests_of(stats: &Value) -> u64 {
    stats["endpoints"]
        .as_array()
        .map(|eps| eps.iter().filter_map(|e| e["num_requests"].as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test]
async fn creates_gets_and_errors_travel_over_nats() {
    let nats = NatsServer::start();
    let regiond = Regiond::start(&nats, "sto1");
    assert!(
        regiond
            .ready_line()
            .starts_with("nordlys-regiond ready region=sto1 id="),
        "{}",
        regiond.ready_line()
    );
    let ch = channel(&nats).await;

    let created = create_project(&ch, new_project("web", "req-1"))
        .await
        .expect("CreateProject");
    assert_eq!(created.name, "projects/web");
    assert_eq!(created.region_status[0].region, "sto1");
    let got = get_project(&ch, &acme(), "projects/web")
        .await
        .expect("GetProject");
    assert_eq!(got, created);

    // The same create again: the first project.
    let again = create_project(&ch, new_project("web", "req-1"))
        .await
        .expect("replayed");
    assert_eq!(again, created);
    // The same request id for another project: refused, an id names one create.
    let other = create_project(&ch, new_project("other", "req-1"))
        .await
        .expect_err("a request id names one create");
    assert_eq!(other.code(), Code::InvalidArgument);
    let err = create_project(&ch, new_project("web", ""))
        .await
        .expect_err("exists");
    assert_eq!(err.code(), Code::AlreadyExists);

    // Bad input: INVALID_ARGUMENT naming each field, details intact.
    let bad = CreateNetworkRequest {
        parent: "projects/web".into(),
        network: Some(Network {
            name: "projects/web/networks/net-a".into(),
            region: "osl1".into(),
            cidr: "10.0.0.1/24".into(),
            ..Default::default()
        }),
        network_id: "net-a".into(),
        request_id: String::new(),
    };
    let err = ch
        .unary::<_, Network>(format!("{PREFIX}.CreateNetwork"), call(&acme(), bad))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let fields: Vec<&str> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["network.cidr", "network.region"]);

    // A membership of a user not placed here: FAILED_PRECONDITION.
    let grant = CreateMembershipRequest {
        parent: "projects/web".into(),
        membership: Some(Membership {
            name: "projects/web/members/ada".into(),
            user: format!("{ACME}/users/ada"),
            role: ProjectRole::Member as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let err = ch
        .unary::<_, Membership>(format!("{PREFIX}.CreateMembership"), call(&acme(), grant))
        .await
        .expect_err("no such user here");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = err.get_error_details();
    let violation = &details
        .precondition_failure()
        .expect("PreconditionFailure")
        .violations[0];
    assert_eq!(violation.r#type, "USER_NOT_IN_REGION");
    assert_eq!(violation.subject, "organizations/acme/users/ada");

    // Another organization sees nothing; no identity is UNAUTHENTICATED.
    let evil = Identity {
        organization: "organizations/evil".into(),
        member: "organizations/evil/members/eve".into(),
        role: Role::Owner,
    };
    let err = get_project(&ch, &evil, "projects/web")
        .await
        .expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
    let err = ch
        .unary::<_, Project>(
            format!("{PREFIX}.GetProject"),
            tonic::Request::new(GetProjectRequest {
                name: "projects/web".into(),
            }),
        )
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);

    let listed: ListProjectsResponse = ch
        .unary(
            format!("{PREFIX}.ListProjects"),
            call(
                &acme(),
                ListRequest {
                    organization: ACME.into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("ListProjects")
        .into_inner();
    assert_eq!(listed.projects.len(), 1);

    let deleted: DeleteResponse = ch
        .unary(
            format!("{PREFIX}.DeleteProject"),
            call(
                &acme(),
                DeleteProjectRequest {
                    name: "projects/web".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("DeleteProject")
        .into_inner();
    assert_eq!(deleted.freed.map(|f| f.projects), Some(1));
    assert_eq!(deleted.organization, ACME);
}

#[tokio::test]
async fn two_instances_share_the_load_and_announce_themselves() {
    let nats = NatsServer::start();
    let a = Regiond::start_with(&nats, "sto1", &["--backend", "memory"]);
    let b = Regiond::start_with(&nats, "sto1", &["--backend", "memory"]);
    let ch = channel(&nats).await;
    let client = ch.client().clone();

    let infos = gather(
        &client,
        "$SRV.INFO.nordlys-regiond",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(infos.len(), 2, "{infos:?}");
    for info in &infos {
        assert_eq!(info["name"], "nordlys-regiond");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(info["metadata"]["region"], "sto1");
        assert_eq!(info["metadata"]["backend"], "memory");
        // The direct gRPC endpoint each instance serves (a free loopback port).
        let endpoint = info["metadata"]["grpc_endpoint"]
            .as_str()
            .unwrap_or_default();
        assert!(
            endpoint
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback() && a.port() != 0),
            "{endpoint:?}"
        );
        let subjects: Vec<&str> = info["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["subject"].as_str())
            .collect();
        assert_eq!(subjects.len(), regiond_methods(), "{subjects:?}");
        assert!(subjects.contains(&"nordlys.v1.sto1.RegiondService.CreateProject"));
    }
    let mut ids: Vec<&str> = infos.iter().filter_map(|i| i["id"].as_str()).collect();
    ids.sort();
    let mut expected = vec![a.id(), b.id()];
    expected.sort();
    assert_eq!(ids, expected);

    // NATS spreads calls over the queue group: keep calling until both
    // instances have answered some.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for _ in 0..20 {
            let err = get_project(&ch, &acme(), "projects/nope")
                .await
                .expect_err("absent");
            assert_eq!(err.code(), Code::NotFound);
        }
        let stats = gather(
            &client,
            "$SRV.STATS.nordlys-regiond",
            Duration::from_millis(500),
        )
        .await;
        let counts: Vec<(String, u64)> = stats
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap_or_default().to_string(),
                    requests_of(s),
                )
            })
            .collect();
        if counts.len() == 2 && counts.iter().all(|(_, n)| *n > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both instances should serve calls: {counts:?}"
        );
    }
}

#[tokio::test]
async fn a_stopped_region_is_unavailable() {
    let nats = NatsServer::start();
    let mut regiond = Regiond::start(&nats, "sto1");
    let ch = channel(&nats).await;
    create_project(&ch, new_project("web", ""))
        .await
        .expect("CreateProject");

    // SIGTERM drains and exits cleanly.
    let status = regiond.terminate().expect("exited on SIGTERM");
    assert!(status.success(), "{status:?}");

    let err = get_project(&ch, &acme(), "projects/web")
        .await
        .expect_err("nobody serves sto1");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

/// `regiond --backend kv` for `region`.
fn start_kv(nats: &NatsServer, region: &str) -> Process {
    Process::start(Spec::new("regiond", "nordlys-regiond ready").args([
        "--nats-url",
        &nats.url(),
        "--region",
        region,
        "--backend",
        "kv",
        "--insecure-dev",
    ]))
}

#[tokio::test]
async fn kv_instances_share_one_region_and_survive_restarts() {
    let nats = NatsServer::start();
    let mut a = start_kv(&nats, "sto1");
    let _b = start_kv(&nats, "sto1");
    let ch = channel(&nats).await;
    let client = ch.client().clone();

    let infos = gather(
        &client,
        "$SRV.INFO.nordlys-regiond",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(infos.len(), 2, "{infos:?}");
    assert!(infos.iter().all(|i| i["metadata"]["backend"] == "kv"));

    // Whichever instance answers, it sees what the other created.
    let created = create_project(&ch, new_project("web", "req-kv"))
        .await
        .expect("CreateProject");
    for _ in 0..20 {
        let got = get_project(&ch, &acme(), "projects/web")
            .await
            .expect("GetProject on either instance");
        assert_eq!(got, created);
        let again = create_project(&ch, new_project("web", "req-kv"))
            .await
            .expect("replayed on either instance");
        assert_eq!(again, created);
    }
    let stats = gather(
        &client,
        "$SRV.STATS.nordlys-regiond",
        Duration::from_millis(500),
    )
    .await;
    assert!(
        stats.len() == 2 && stats.iter().all(|s| requests_of(s) > 0),
        "both instances should have served: {stats:?}"
    );

    // Kept across a restart.
    a.restart();
    let got = get_project(&ch, &acme(), "projects/web")
        .await
        .expect("still there");
    assert_eq!(got, created);

    let deleted: DeleteResponse = ch
        .unary(
            format!("{PREFIX}.DeleteProject"),
            call(
                &acme(),
                DeleteProjectRequest {
                    name: "projects/web".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("DeleteProject")
        .into_inner();
    assert_eq!(deleted.freed.map(|f| f.projects), Some(1));
    let err = get_project(&ch, &acme(), "projects/web")
        .await
        .expect_err("deleted everywhere");
    assert_eq!(err.code(), Code::NotFound);
}

/// Without NATS credentials a region would take any client of that server
/// for the gateway: regiond, and quota likewise, refuse to start so unless
/// told `--insecure-dev`, and say why.
#[test]
fn without_nats_credentials_the_services_refuse_to_start() {
    let nats = NatsServer::start();
    for (binary, args) in [("regiond", vec!["--region", "sto1"]), ("quota", vec![])] {
        let out = std::process::Command::new(nordlys_tests::bin_path(binary))
            .args(["--nats-url", &nats.url()])
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the service");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary} started: {said}");
        assert!(
            said.contains("no credentials") && said.contains("--insecure-dev"),
            "{binary} did not say why: {said}"
        );
    }
}

/// How many methods `nordlys.regiond.v1.RegiondService` has: one micro
/// endpoint each.
fn regiond_methods() -> usize {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(nordlys_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    set.file
        .iter()
        .filter(|f| f.package() == "nordlys.regiond.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "RegiondService")
        .map(|s| s.method.len())
        .sum()
}
