//! The Nordlys quota and ACL controller.
//!
//! It keeps organizations, their members and API keys, and each
//! organization's quota per region, in one NATS JetStream KV bucket, and
//! serves the `nordlys.quota.v1.QuotaController` API as the NATS micro
//! service `nordlys-quota` (one endpoint per RPC on
//! `nordlys.quota.v1.QuotaController.{Method}`).
//!
//! Every change is a compare-and-set on the KV entry's revision, so several
//! instances can serve at once without ever granting more than a limit, and
//! a restarted instance finds everything where it was.
//!
//! - [`Controller`] implements the tonic-generated `QuotaController` trait,
//!   so the same handlers can be served over gRPC too.
//! - [`reservation`] is the quota arithmetic, free of I/O.
//! - [`store`] is the KV access with the compare-and-set loop; quota
//!   documents' writes are grouped per document (`group_commit`).
//! - [`ops`] remembers applied operation ids, so retries count once, while
//!   every document stays small.
//! - [`reconcile`] compares usage with what the regions hold and repairs
//!   drift.
//! - [`service`] registers the micro service and runs until a signal.
//!
//! ```no_run
//! # async fn run() -> Result<(), nordlys_transport::BoxError> {
//! // Local development: a NATS server only this machine's processes reach.
//! let config = nordlys_quota::config::Config {
//!     insecure_dev: true,
//!     ..Default::default()
//! };
//! nordlys_quota::service::run(config, |id, _metrics| println!("nordlys-quota ready id={id}")).await
//! # }
//! ```

mod accounting;
mod admin;
mod auth;
pub mod config;
mod group_commit;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod reconcile;
pub mod reservation;
pub mod service;
mod status;
pub mod store;
pub mod tiers;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use nordlys_proto::pb::nordlys::quota::v1 as q;
use nordlys_proto::pb::nordlys::quota::v1::quota_controller_server::QuotaController;
use nordlys_proto::pb::nordlys::v1 as api;
use tonic::{Request, Response, Status};

pub use admin::{ApiKeyDoc, MemberDoc, OrgDoc, StoredRole};
use config::Config;
use ops::OpsLog;
use store::Store;

/// The handlers of every `QuotaController` RPC, over one store.
#[derive(Debug, Clone)]
pub struct Controller {
    store: Store,
    ops: OpsLog,
    /// Reserves, commits, releases and give-backs, grouped per document.
    group: group_commit::GroupCommit,
    /// Calls to the regions (CountResources, for the reconciler).
    regions: nordlys_transport::NatsChannel,
    config: Arc<Config>,
    /// Drift corrections made since start.
    corrections: Arc<AtomicU64>,
}

impl Controller {
    /// Handlers over `store` and `ops`, calling regions over `client`, with
    /// `config`'s defaults.
    pub fn new(
        store: Store,
        ops: OpsLog,
        client: async_nats::Client,
        config: Config,
    ) -> Controller {
        let timeout = config.reconcile_timeout();
        Controller {
            group: group_commit::GroupCommit::new(store.clone(), ops.clone()),
            store,
            ops,
            regions: nordlys_transport::NatsChannel::new(client, timeout),
            config: Arc::new(config),
            corrections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Drift corrections this instance made since it started.
    pub fn corrections(&self) -> u64 {
        self.corrections.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The current time in unix milliseconds.
fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl QuotaController for Controller {
    async fn authenticate(&self, request: Request<q::AuthenticateRequest>) -> Rpc<q::Principal> {
        self.authenticate_key(request).await.map(Response::new)
    }

    async fn reserve(&self, request: Request<q::ReserveRequest>) -> Rpc<q::ReserveResponse> {
        self.reserve_quota(request).await.map(Response::new)
    }

    async fn commit(&self, request: Request<q::CommitRequest>) -> Rpc<q::CommitResponse> {
        self.commit_quota(request).await.map(Response::new)
    }

    async fn release(&self, request: Request<q::ReleaseRequest>) -> Rpc<q::ReleaseResponse> {
        self.release_quota(request).await.map(Response::new)
    }

    async fn free(&self, request: Request<q::FreeRequest>) -> Rpc<q::FreeResponse> {
        self.free_quota(request).await.map(Response::new)
    }

    async fn create_organization(
        &self,
        request: Request<api::CreateOrganizationRequest>,
    ) -> Rpc<api::Organization> {
        self.create_org(request).await.map(Response::new)
    }

    async fn get_organization(
        &self,
        request: Request<api::GetOrganizationRequest>,
    ) -> Rpc<api::Organization> {
        self.get_org(request).await.map(Response::new)
    }

    async fn list_organizations(
        &self,
        request: Request<api::ListOrganizationsRequest>,
    ) -> Rpc<api::ListOrganizationsResponse> {
        self.list_orgs(request).await.map(Response::new)
    }

    async fn create_member(&self, request: Request<api::CreateMemberRequest>) -> Rpc<api::Member> {
        self.put_member(request).await.map(Response::new)
    }

    async fn list_members(
        &self,
        request: Request<api::ListMembersRequest>,
    ) -> Rpc<api::ListMembersResponse> {
        self.get_members(request).await.map(Response::new)
    }

    async fn delete_member(
        &self,
        request: Request<api::DeleteMemberRequest>,
    ) -> Rpc<api::DeleteMemberResponse> {
        self.remove_member(request).await.map(Response::new)
    }

    async fn create_api_key(
        &self,
        request: Request<api::CreateApiKeyRequest>,
    ) -> Rpc<api::CreateApiKeyResponse> {
        self.make_api_key(request).await.map(Response::new)
    }

    async fn list_api_keys(
        &self,
        request: Request<api::ListApiKeysRequest>,
    ) -> Rpc<api::ListApiKeysResponse> {
        self.get_api_keys(request).await.map(Response::new)
    }

    async fn delete_api_key(
        &self,
        request: Request<api::DeleteApiKeyRequest>,
    ) -> Rpc<api::DeleteApiKeyResponse> {
        self.remove_api_key(request).await.map(Response::new)
    }

    async fn get_quota(&self, request: Request<api::GetQuotaRequest>) -> Rpc<api::Quota> {
        self.read_quota(request).await.map(Response::new)
    }

    async fn list_quotas(
        &self,
        request: Request<api::ListQuotasRequest>,
    ) -> Rpc<api::ListQuotasResponse> {
        self.read_quotas(request).await.map(Response::new)
    }

    async fn update_quota(&self, request: Request<api::UpdateQuotaRequest>) -> Rpc<api::Quota> {
        self.set_limits(request).await.map(Response::new)
    }

    async fn reconcile_quotas(
        &self,
        request: Request<api::ReconcileQuotasRequest>,
    ) -> Rpc<api::ReconcileQuotasResponse> {
        self.reconcile(request).await.map(Response::new)
    }

    async fn request_tier_change(
        &self,
        request: Request<api::RequestTierChangeRequest>,
    ) -> Rpc<api::TierChange> {
        self.request_tier(request).await.map(Response::new)
    }

    async fn approve_tier_change(
        &self,
        request: Request<api::ApproveTierChangeRequest>,
    ) -> Rpc<api::TierChange> {
        self.approve_tier(request).await.map(Response::new)
    }
}
