//! The quota service on its own, over NATS: compare-and-set across two
//! instances, persistence across a restart, reservation expiry and
//! idempotency, API keys, and tenancy. Identities are asserted in metadata
//! the way the gateway does.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use nordlys_proto::pb::nordlys::quota::v1::{
    AuthenticateRequest, CommitRequest, Principal, RegionCounts, ReleaseRequest, ReserveRequest,
    ReserveResponse,
};
use nordlys_proto::pb::nordlys::v1::{
    ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, CreateMemberRequest,
    CreateOrganizationRequest, DeleteApiKeyRequest, DeleteApiKeyResponse, DeleteMemberRequest,
    DeleteMemberResponse, GetOrganizationRequest, GetQuotaRequest, ListApiKeysRequest,
    ListApiKeysResponse, ListMembersRequest, ListMembersResponse, ListOrganizationsRequest,
    ListOrganizationsResponse, ListQuotasRequest, ListQuotasResponse, Member, Organization,
    OrganizationRole, Quota, ResourceCounts, UpdateQuotaRequest,
};
use nordlys_tests::{NatsServer, Quota as QuotaProcess};
use nordlys_transport::{Identity, NatsChannel, Role};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const PREFIX: &str = "nordlys.quota.v1.QuotaController";

/// A NATS client of the quota service.
#[derive(Clone)]
struct Client {
    channel: NatsChannel,
}

impl Client {
    async fn connect(nats: &NatsServer) -> Client {
        let client = async_nats::connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", nats.url()));
        Client {
            channel: NatsChannel::new(client, Duration::from_secs(30)),
        }
    }

    async fn call<Req, Resp>(
        &self,
        method: &str,
        caller: Option<&Identity>,
        message: Req,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut request = tonic::Request::new(message);
        if let Some(caller) = caller {
            caller.write(request.metadata_mut())?;
        }
        self.channel
            .unary(format!("{PREFIX}.{method}"), request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn create_org(&self, id: &str) {
        let _: Organization = self
            .call(
                "CreateOrganization",
                Some(&Identity::operator()),
                CreateOrganizationRequest {
                    organization: Some(Organization {
                        display_name: format!("Org {id}"),
                        ..Default::default()
                    }),
                    organization_id: id.to_owned(),
                },
            )
            .await
            .unwrap_or_else(|s| panic!("CreateOrganization {id}: {s:?}"));
    }

    async fn set_limit(&self, org: &str, region: &str, projects: i64) {
        let _: Quota = self
            .call(
                "UpdateQuota",
                Some(&Identity::operator()),
                UpdateQuotaRequest {
                    quota: Some(Quota {
                        name: format!("organizations/{org}/quotas/{region}"),
                        limits: Some(ResourceCounts {
                            projects,
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
            .unwrap_or_else(|s| panic!("UpdateQuota {org}/{region}: {s:?}"));
    }

    async fn quota(&self, org: &str, region: &str) -> Quota {
        self.call(
            "GetQuota",
            Some(&Identity::operator()),
            GetQuotaRequest {
                name: format!("organizations/{org}/quotas/{region}"),
            },
        )
        .await
        .unwrap_or_else(|s| panic!("GetQuota {org}/{region}: {s:?}"))
    }

    async fn reserve(
        &self,
        caller: &Identity,
        org: &str,
        id: &str,
        items: &[(&str, i64)],
        ttl_seconds: u32,
    ) -> Result<ReserveResponse, Status> {
        self.call(
            "Reserve",
            Some(caller),
            ReserveRequest {
                reservation_id: id.to_owned(),
                organization: format!("organizations/{org}"),
                items: items
                    .iter()
                    .map(|(region, projects)| RegionCounts {
                        region: (*region).to_owned(),
                        counts: Some(ResourceCounts {
                            projects: *projects,
                            ..Default::default()
                        }),
                    })
                    .collect(),
                ttl_seconds,
            },
        )
        .await
    }

    async fn commit(
        &self,
        caller: &Identity,
        org: &str,
        id: &str,
        regions: &[&str],
    ) -> Result<(), Status> {
        self.call::<_, nordlys_proto::pb::nordlys::quota::v1::CommitResponse>(
            "Commit",
            Some(caller),
            CommitRequest {
                reservation_id: id.to_owned(),
                organization: format!("organizations/{org}"),
                regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                created: Vec::new(),
            },
        )
        .await
        .map(drop)
    }

    async fn add_member(
        &self,
        caller: &Identity,
        org: &str,
        principal: &str,
        role: OrganizationRole,
    ) -> Result<Member, Status> {
        self.call(
            "CreateMember",
            Some(caller),
            CreateMemberRequest {
                parent: format!("organizations/{org}"),
                member: Some(Member {
                    role: role as i32,
                    ..Default::default()
                }),
                member_id: principal.to_owned(),
            },
        )
        .await
    }

    async fn create_key(
        &self,
        caller: &Identity,
        org: &str,
        principal: &str,
    ) -> Result<CreateApiKeyResponse, Status> {
        self.call(
            "CreateApiKey",
            Some(caller),
            CreateApiKeyRequest {
                parent: format!("organizations/{org}"),
                api_key: Some(ApiKey {
                    member: format!("organizations/{org}/members/{principal}"),
                    display_name: format!("key of {principal}"),
                    ..Default::default()
                }),
            },
        )
        .await
    }

    async fn authenticate(&self, secret: &str) -> Result<Principal, Status> {
        self.call(
            "Authenticate",
            None,
            AuthenticateRequest {
                secret: secret.to_owned(),
            },
        )
        .await
    }
}

fn member_of(org: &str, role: Role) -> Identity {
    Identity {
        organization: format!("organizations/{org}"),
        member: format!("organizations/{org}/members/someone@{org}.example"),
        role,
    }
}

fn projects(q: &Option<ResourceCounts>) -> i64 {
    q.as_ref().map_or(0, |c| c.projects)
}

/// The ids of the quota instances answering `$SRV.PING.nordlys-quota`.
async fn quota_instances(nats: &NatsServer) -> BTreeSet<String> {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply("$SRV.PING.nordlys-quota", inbox, "".into())
        .await
        .expect("ping");
    let mut ids = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).expect("ping json");
        ids.insert(v["id"].as_str().unwrap_or_default().to_owned());
    }
    ids
}

/// How many requests each instance answered on `endpoint`, from `$SRV.STATS`.
async fn served(nats: &NatsServer, ids: &BTreeSet<String>, endpoint: &str) -> Vec<u64> {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut counts = Vec::new();
    for id in ids {
        let reply = client
            .request(format!("$SRV.STATS.nordlys-quota.{id}"), "".into())
            .await
            .expect("stats");
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).expect("stats json");
        let n = v["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == endpoint)
            .and_then(|e| e["num_requests"].as_u64())
            .unwrap_or(0);
        counts.push(n);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_over_allocate() {
    let nats = NatsServer::start();
    let q1 = QuotaProcess::start(&nats);
    let q2 = QuotaProcess::start(&nats);
    let expected: BTreeSet<String> = [q1.id().to_owned(), q2.id().to_owned()].into();
    assert_eq!(
        quota_instances(&nats).await,
        expected,
        "both instances serve"
    );

    let client = Client::connect(&nats).await;
    client.create_org("race").await;
    client.set_limit("race", "sto1", 50).await;
    let caller = member_of("race", Role::Member);

    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r-race-{i}");
            client
                .reserve(&caller, "race", &id, &[("sto1", 1)], 0)
                .await?;
            client.commit(&caller, "race", &id, &["sto1"]).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let details = status.get_error_details();
                let failure = details.quota_failure().expect("QuotaFailure detail");
                assert_eq!(failure.violations.len(), 1);
                assert_eq!(
                    failure.violations[0].subject,
                    "organizations/race/quotas/sto1"
                );
                assert!(failure.violations[0].description.contains("projects"));
            }
        }
    }
    assert_eq!(ok, 50, "exactly the limit succeeds");
    let quota = client.quota("race", "sto1").await;
    assert_eq!(projects(&quota.usage), 50);
    assert_eq!(projects(&quota.reserved), 0);
    assert_eq!(projects(&quota.limits), 50);
    let served = served(&nats, &expected, "Reserve").await;
    assert_eq!(served.iter().sum::<u64>(), 200, "{served:?}");
    assert!(
        served.iter().all(|n| *n > 0),
        "both instances reserved: {served:?}"
    );
}

/// One sample's value from the Prometheus text at `addr`'s /metrics.
async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: quota\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("response");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_document_are_grouped_and_exact() {
    let nats = NatsServer::start();
    let quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("grouped").await;
    client.set_limit("grouped", "sto1", 120).await;
    client.set_limit("grouped", "osl1", 120).await;
    let caller = member_of("grouped", Role::Member);

    // 300 two-region creates at once against one organization: every
    // reserve and commit lands on the same two documents.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = client.clone();
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r-grouped-{i}");
            client
                .reserve(&caller, "grouped", &id, &[("sto1", 1), ("osl1", 1)], 0)
                .await?;
            // Half commit twice: the second changes nothing.
            client
                .commit(&caller, "grouped", &id, &["sto1", "osl1"])
                .await?;
            if i % 2 == 0 {
                client
                    .commit(&caller, "grouped", &id, &["sto1", "osl1"])
                    .await?;
            }
            Ok::<_, Status>(())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert_eq!(ok, 120, "exactly the limit succeeds");
    for region in ["sto1", "osl1"] {
        let q = client.quota("grouped", region).await;
        assert_eq!(projects(&q.usage), 120, "{region}");
        assert_eq!(projects(&q.reserved), 0, "{region}");
    }

    // And they were grouped: fewer document writes than operations.
    let addr = quota.metrics_addr();
    let operations = metric(addr, "nordlys_quota_group_commit_operations_sum").await;
    let groups = metric(addr, "nordlys_quota_group_commit_operations_count").await;
    assert!(
        operations >= 600.0,
        "{operations} operations in {groups} groups"
    );
    assert!(
        groups < operations * 0.8,
        "{operations} operations in {groups} groups"
    );
}

#[tokio::test]
async fn usage_and_keys_survive_a_restart() {
    let nats = NatsServer::start();
    let mut quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    let op = Identity::operator();
    client.create_org("keep").await;
    client
        .add_member(&op, "keep", "ada@keep.example", OrganizationRole::Owner)
        .await
        .expect("owner");
    let key = client
        .create_key(&op, "keep", "ada@keep.example")
        .await
        .expect("key");
    let caller = member_of("keep", Role::Member);
    for i in 0..3 {
        let id = format!("r-keep-{i}");
        client
            .reserve(&caller, "keep", &id, &[("sto1", 1)], 0)
            .await
            .expect("reserve");
        client
            .commit(&caller, "keep", &id, &["sto1"])
            .await
            .expect("commit");
    }

    quota.kill();
    quota.restart();

    let q = client.quota("keep", "sto1").await;
    assert_eq!(projects(&q.usage), 3, "usage kept across the restart");
    let principal = client.authenticate(&key.secret).await.expect("key kept");
    assert_eq!(
        principal.member,
        "organizations/keep/members/ada@keep.example"
    );
    // A committed id is still recognised after the restart.
    let again = client
        .reserve(&caller, "keep", "r-keep-0", &[("sto1", 1)], 0)
        .await
        .expect("reserve again");
    assert!(again.already_committed);
}

#[tokio::test]
async fn expired_reservations_free_quota() {
    let nats = NatsServer::start();
    let _quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("lapse").await;
    client.set_limit("lapse", "sto1", 1).await;
    let caller = member_of("lapse", Role::Member);

    client
        .reserve(&caller, "lapse", "r-1", &[("sto1", 1)], 1)
        .await
        .expect("first fits");
    let refused = client
        .reserve(&caller, "lapse", "r-2", &[("sto1", 1)], 1)
        .await
        .expect_err("the first holds the only slot");
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // A gateway that never commits or releases: the reservation lapses.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(projects(&client.quota("lapse", "sto1").await.reserved), 0);
    client
        .reserve(&caller, "lapse", "r-2", &[("sto1", 1)], 0)
        .await
        .expect("the slot is free again");
    let q = client.quota("lapse", "sto1").await;
    assert_eq!(projects(&q.reserved), 1);
}

#[tokio::test]
async fn a_reservation_id_reserves_once_and_all_or_nothing() {
    let nats = NatsServer::start();
    let _quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    client.create_org("idem").await;
    client.set_limit("idem", "sto1", 5).await;
    client.set_limit("idem", "osl1", 0).await;
    let caller = member_of("idem", Role::Member);

    for _ in 0..3 {
        let r = client
            .reserve(&caller, "idem", "r-same", &[("sto1", 2)], 0)
            .await
            .expect("reserve");
        assert!(!r.already_committed);
    }
    assert_eq!(projects(&client.quota("idem", "sto1").await.reserved), 2);
    client
        .commit(&caller, "idem", "r-same", &["sto1"])
        .await
        .expect("commit");
    client
        .commit(&caller, "idem", "r-same", &["sto1"])
        .await
        .expect("a second commit is a no-op");
    let again = client
        .reserve(&caller, "idem", "r-same", &[("sto1", 2)], 0)
        .await
        .expect("reserve after commit");
    assert!(again.already_committed);
    let q = client.quota("idem", "sto1").await;
    assert_eq!((projects(&q.usage), projects(&q.reserved)), (2, 0));

    // osl1 has no room: nothing is held in sto1 either.
    let refused = client
        .reserve(&caller, "idem", "r-both", &[("sto1", 1), ("osl1", 1)], 0)
        .await
        .expect_err("osl1 is full");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let details = refused.get_error_details();
    let subjects: Vec<&str> = details
        .quota_failure()
        .expect("QuotaFailure")
        .violations
        .iter()
        .map(|v| v.subject.as_str())
        .collect();
    assert_eq!(subjects, vec!["organizations/idem/quotas/osl1"]);
    assert_eq!(projects(&client.quota("idem", "sto1").await.reserved), 0);

    // Commit in one region releases the others.
    client.set_limit("idem", "osl1", 5).await;
    client
        .reserve(&caller, "idem", "r-split", &[("sto1", 1), ("osl1", 1)], 0)
        .await
        .expect("both fit");
    client
        .commit(&caller, "idem", "r-split", &["osl1"])
        .await
        .expect("commit osl1 only");
    let sto1 = client.quota("idem", "sto1").await;
    let osl1 = client.quota("idem", "osl1").await;
    assert_eq!((projects(&sto1.usage), projects(&sto1.reserved)), (2, 0));
    assert_eq!((projects(&osl1.usage), projects(&osl1.reserved)), (1, 0));

    // Release with no regions drops every part.
    client
        .reserve(&caller, "idem", "r-drop", &[("sto1", 1), ("osl1", 1)], 0)
        .await
        .expect("both fit");
    let _: nordlys_proto::pb::nordlys::quota::v1::ReleaseResponse = client
        .call(
            "Release",
            Some(&caller),
            ReleaseRequest {
                reservation_id: "r-drop".into(),
                organization: "organizations/idem".into(),
                regions: vec![],
            },
        )
        .await
        .expect("release");
    assert_eq!(projects(&client.quota("idem", "sto1").await.reserved), 0);
    assert_eq!(projects(&client.quota("idem", "osl1").await.reserved), 0);

    // Bad input is refused with field violations.
    let bad = client
        .reserve(&caller, "idem", "", &[("STO1", -1)], 99_999)
        .await
        .expect_err("bad input");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let details = bad.get_error_details();
    let fields: BTreeSet<&str> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "reservation_id",
            "items[0].region",
            "items[0].counts.projects",
            "ttl_seconds"
        ])
    );
}

#[tokio::test]
async fn api_keys_authenticate_until_deleted() {
    let nats = NatsServer::start();
    let _quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    let op = Identity::operator();
    client.create_org("acme").await;
    client
        .add_member(&op, "acme", "alice@acme.example", OrganizationRole::Owner)
        .await
        .expect("alice");
    let alice = member_of("acme", Role::Owner);
    client
        .add_member(&alice, "acme", "bob@acme.example", OrganizationRole::Member)
        .await
        .expect("bob");

    let created = client
        .create_key(&alice, "acme", "alice@acme.example")
        .await
        .expect("key");
    assert!(created.secret.starts_with("nlk_"));
    let key = created.api_key.expect("api key");
    let p = client
        .authenticate(&created.secret)
        .await
        .expect("valid key");
    assert_eq!(p.organization, "organizations/acme");
    assert_eq!(p.member, "organizations/acme/members/alice@acme.example");
    assert_eq!(p.role, OrganizationRole::Owner as i32);
    assert_eq!(p.api_key, key.name);

    // Wrong, malformed and empty secrets all look alike.
    let mut wrong = created.secret.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    for bad in [wrong.as_str(), "nlk_nope", "", "Bearer x"] {
        let e = client.authenticate(bad).await.expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
        assert_eq!(e.message(), "invalid API key");
    }

    // The role is read at each authentication.
    client
        .add_member(
            &alice,
            "acme",
            "alice@acme.example",
            OrganizationRole::Admin,
        )
        .await
        .expect("demote");
    let p = client
        .authenticate(&created.secret)
        .await
        .expect("valid key");
    assert_eq!(p.role, OrganizationRole::Admin as i32);

    // Listing shows the key, never a secret.
    let listed: ListApiKeysResponse = client
        .call(
            "ListApiKeys",
            Some(&alice),
            ListApiKeysRequest {
                parent: "organizations/acme".into(),
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.api_keys, vec![key.clone()]);

    // Removing a member kills its keys, also if it is added again.
    let bob_key = client
        .create_key(&alice, "acme", "bob@acme.example")
        .await
        .expect("bob's key");
    client.authenticate(&bob_key.secret).await.expect("bob in");
    let _: DeleteMemberResponse = client
        .call(
            "DeleteMember",
            Some(&alice),
            DeleteMemberRequest {
                name: "organizations/acme/members/bob@acme.example".into(),
            },
        )
        .await
        .expect("delete bob");
    client
        .add_member(&alice, "acme", "bob@acme.example", OrganizationRole::Member)
        .await
        .expect("bob again");
    let e = client
        .authenticate(&bob_key.secret)
        .await
        .expect_err("dead");
    assert_eq!(e.code(), Code::Unauthenticated);

    let _: DeleteApiKeyResponse = client
        .call(
            "DeleteApiKey",
            Some(&alice),
            DeleteApiKeyRequest {
                name: key.name.clone(),
            },
        )
        .await
        .expect("delete key");
    let e = client
        .authenticate(&created.secret)
        .await
        .expect_err("deleted");
    assert_eq!(e.code(), Code::Unauthenticated);

    // Roles: an admin cannot make owners, a member cannot manage members,
    // only operators create organizations, and every call but Authenticate
    // needs an identity.
    let admin = member_of("acme", Role::Admin);
    let e = client
        .add_member(&admin, "acme", "eve@acme.example", OrganizationRole::Owner)
        .await
        .expect_err("admins do not make owners");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = client
        .add_member(
            &member_of("acme", Role::Member),
            "acme",
            "eve@acme.example",
            OrganizationRole::Viewer,
        )
        .await
        .expect_err("members do not manage members");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = client
        .call::<_, Organization>(
            "CreateOrganization",
            Some(&alice),
            CreateOrganizationRequest {
                organization: None,
                organization_id: "mine".into(),
            },
        )
        .await
        .expect_err("operators only");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = client
        .call::<_, Organization>(
            "CreateOrganization",
            None,
            CreateOrganizationRequest {
                organization: None,
                organization_id: "mine".into(),
            },
        )
        .await
        .expect_err("no identity");
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn organizations_are_walled_off() {
    let nats = NatsServer::start();
    let _quota = QuotaProcess::start(&nats);
    let client = Client::connect(&nats).await;
    let op = Identity::operator();
    for org in ["org-a", "org-b"] {
        client.create_org(org).await;
        client
            .add_member(
                &op,
                org,
                &format!("owner@{org}.example"),
                OrganizationRole::Owner,
            )
            .await
            .expect("owner");
    }
    client.set_limit("org-a", "sto1", 7).await;
    let b = member_of("org-b", Role::Owner);

    let denied = |r: Result<(), Status>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
    };
    denied(
        client
            .call::<_, Quota>(
                "GetQuota",
                Some(&b),
                GetQuotaRequest {
                    name: "organizations/org-a/quotas/sto1".into(),
                },
            )
            .await
            .map(drop),
        "GetQuota of A",
    );
    denied(
        client
            .call::<_, ListQuotasResponse>(
                "ListQuotas",
                Some(&b),
                ListQuotasRequest {
                    parent: "organizations/org-a".into(),
                },
            )
            .await
            .map(drop),
        "ListQuotas of A",
    );
    denied(
        client
            .call::<_, ListMembersResponse>(
                "ListMembers",
                Some(&b),
                ListMembersRequest {
                    parent: "organizations/org-a".into(),
                },
            )
            .await
            .map(drop),
        "ListMembers of A",
    );
    denied(
        client
            .call::<_, Organization>(
                "GetOrganization",
                Some(&b),
                GetOrganizationRequest {
                    name: "organizations/org-a".into(),
                },
            )
            .await
            .map(drop),
        "GetOrganization of A",
    );
    // The same answer for an organization that does not exist: probing
    // reveals nothing.
    denied(
        client
            .call::<_, Organization>(
                "GetOrganization",
                Some(&b),
                GetOrganizationRequest {
                    name: "organizations/no-such".into(),
                },
            )
            .await
            .map(drop),
        "GetOrganization of a missing org",
    );
    denied(
        client
            .reserve(&b, "org-a", "r-steal", &[("sto1", 1)], 0)
            .await
            .map(drop),
        "Reserve in A",
    );
    denied(
        client
            .add_member(&b, "org-a", "mallory@b.example", OrganizationRole::Owner)
            .await
            .map(drop),
        "CreateMember in A",
    );
    denied(
        client
            .create_key(&b, "org-a", "owner@org-a.example")
            .await
            .map(drop),
        "CreateApiKey in A",
    );
    // A viewer reads but does not reserve.
    let viewer = member_of("org-a", Role::Viewer);
    denied(
        client
            .reserve(&viewer, "org-a", "r-view", &[("sto1", 1)], 0)
            .await
            .map(drop),
        "Reserve as viewer",
    );
    let q: Quota = client
        .call(
            "GetQuota",
            Some(&viewer),
            GetQuotaRequest {
                name: "organizations/org-a/quotas/sto1".into(),
            },
        )
        .await
        .expect("viewer reads its quota");
    assert_eq!(projects(&q.limits), 7);

    // B lists only itself; the operator lists both, page by page.
    let listed: ListOrganizationsResponse = client
        .call(
            "ListOrganizations",
            Some(&b),
            ListOrganizationsRequest::default(),
        )
        .await
        .expect("list");
    let names: Vec<&str> = listed
        .organizations
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, vec!["organizations/org-b"]);
    let first: ListOrganizationsResponse = client
        .call(
            "ListOrganizations",
            Some(&op),
            ListOrganizationsRequest {
                page_size: 1,
                page_token: String::new(),
            },
        )
        .await
        .expect("page 1");
    assert_eq!(first.organizations[0].name, "organizations/org-a");
    assert!(!first.next_page_token.is_empty());
    let second: ListOrganizationsResponse = client
        .call(
            "ListOrganizations",
            Some(&op),
            ListOrganizationsRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
            },
        )
        .await
        .expect("page 2");
    assert_eq!(second.organizations[0].name, "organizations/org-b");
    assert!(second.next_page_token.is_empty());
    // A token is bound to its caller's query.
    let e = client
        .call::<_, ListOrganizationsResponse>(
            "ListOrganizations",
            Some(&b),
            ListOrganizationsRequest {
                page_size: 1,
                page_token: first.next_page_token,
            },
        )
        .await
        .expect_err("another caller's token");
    assert_eq!(e.code(), Code::InvalidArgument);
}
