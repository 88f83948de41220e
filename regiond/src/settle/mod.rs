//! Quota settlement that survives crashes: the region that makes or removes
//! a resource is the one that knows it happened, so it keeps a durable note
//! of every quota change it owes until the quota service has it.
//!
//! - A counted create writes a `Create` note before asking the backend. The
//!   gateway commits the reservation when the call succeeds; if it never
//!   does (it crashed, the answer was lost), the sweeper finds the note
//!   after a grace period and commits it if the resource exists (that life
//!   of it: same create time), or releases it if not. Commits are
//!   idempotent per reservation and region, so doing both is harmless.
//! - A delete writes a `Remove` note naming every counted resource it will
//!   remove (the resource, and for a project its networks and access rules)
//!   with an operation id per resource, then removes them, then gives the
//!   quota back, then drops the note. A delete cut short anywhere is finished
//!   by a retried delete (which finds the note when the resource is already
//!   gone) or by the sweeper, and the quota service applies each operation
//!   id once, so the quota is freed exactly once.
//! - The request id of a deleted resource is remembered for a day, so a
//!   create repeated with it is refused instead of quietly making it again.
//! - The gateway's undo of a create that another region refused deletes
//!   with the create's request id: nothing was committed, so nothing is
//!   given back, and the request id is forgotten so a retry can create.

pub(crate) mod quota;
pub(crate) mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nordlys_proto::pb::nordlys::quota::v1::UsageChange;
use nordlys_proto::pb::nordlys::regiond::v1::{CountResourcesResponse, PendingChange};
use nordlys_proto::pb::nordlys::v1::ResourceCounts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::backend::{
    all_pages, top_level, Backend, BackendError, CrashHook, Filter, ResourceKind, Tenant,
};
use quota::QuotaClient;
use store::{MemoryStore, Store, StoreError};

/// A quota change this region owes the quota service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Note {
    /// A create whose commit is not known to have happened.
    Create {
        organization: String,
        name: String,
        reservation: String,
        request_id: String,
        /// The create time the call gave the resource: which life of the
        /// name the note is about.
        #[serde(default)]
        create_time: Option<(i64, i32)>,
        /// When it was written, or claimed by a sweeper.
        at_ms: i64,
        /// The sweeper has taken it over: an undo can no longer claim it.
        #[serde(default)]
        settling: bool,
    },
    /// Removals whose quota is not yet given back.
    Remove {
        organization: String,
        name: String,
        /// A create of the removed resource to commit first, when its own
        /// note was still open (so usage never drops below what exists).
        #[serde(default)]
        commit_first: Option<String>,
        changes: Vec<Change>,
        at_ms: i64,
    },
}

/// One removed resource's give-back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Change {
    operation_id: String,
    name: String,
}

impl Note {
    fn at_ms(&self) -> i64 {
        match self {
            Note::Create { at_ms, .. } | Note::Remove { at_ms, .. } => *at_ms,
        }
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(bytes: &[u8]) -> Option<Note> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The kind a resource name is of, from its collections.
pub(crate) fn kind_of(name: &str) -> Option<ResourceKind> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", _] => Some(ResourceKind::Project),
        ["organizations", _, "users", _] => Some(ResourceKind::User),
        ["projects", _, "networks", _] => Some(ResourceKind::Network),
        ["projects", _, "accessRules", _] => Some(ResourceKind::AccessRule),
        ["projects", _, "members", _] => Some(ResourceKind::Membership),
        _ => None,
    }
}

/// One of `kind`, as quota counts it; zero for kinds without a quota.
pub(crate) fn one(kind: ResourceKind) -> ResourceCounts {
    let mut c = ResourceCounts::default();
    match kind {
        ResourceKind::Project => c.projects = 1,
        ResourceKind::User => c.users = 1,
        ResourceKind::Network => c.networks = 1,
        ResourceKind::AccessRule => c.access_rules = 1,
        ResourceKind::Membership => {}
    }
    c
}

fn counted(kind: ResourceKind) -> bool {
    kind != ResourceKind::Membership
}

fn add(sum: &mut ResourceCounts, c: &ResourceCounts) {
    sum.projects += c.projects;
    sum.users += c.users;
    sum.networks += c.networks;
    sum.access_rules += c.access_rules;
}

fn hashed(prefix: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("{prefix}.{}", hex::encode(&digest[..16]))
}

/// Where an applied update's request id is remembered.
fn update_key(kind: ResourceKind, tenant: &Tenant, request_id: &str) -> String {
    hashed("u", &crate::backend::request_key(kind, tenant, request_id))
}

fn create_key(name: &str) -> String {
    hashed("c", name)
}

fn remove_key(name: &str) -> String {
    hashed("d", name)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn stamp(t: Option<&prost_types::Timestamp>) -> Option<(i64, i32)> {
    t.map(|t| (t.seconds, t.nanos))
}

/// What one life of a resource is: who owns it and when it was made.
#[derive(Debug, Clone)]
struct Life {
    organization: String,
    create_time: Option<prost_types::Timestamp>,
    /// See [`Backend::incarnation`](crate::backend::Backend::incarnation).
    incarnation: String,
}

/// A create under way, from [`Settle::begin_create`] to
/// [`Settle::end_create`].
#[derive(Debug)]
pub(crate) struct PendingCreate {
    key: String,
    revision: u64,
    note: Note,
    /// When the note was last written by this call.
    touched: std::time::Instant,
    /// A sweeper took the note over while the call ran.
    claimed: bool,
}

/// The settlement of one region's quota changes. See the module docs.
#[derive(Debug)]
pub(crate) struct Settle {
    region: String,
    backend: Arc<dyn Backend>,
    notes: Arc<dyn Store>,
    gone: Arc<dyn Store>,
    quota: Option<QuotaClient>,
    grace: Duration,
    /// Remove orphans found while counting, rather than only report them.
    remove_orphans: bool,
    /// When this process first saw each note, so a sweep reads only notes
    /// that have been there a grace period (a young note is its call's).
    seen: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The test-only crash hook (`NORDLYS_TEST_CRASH_AFTER`): `created`,
    /// `remove-noted` or `removed` abort the process at that step.
    pub(crate) crash: CrashHook,
    /// The test-only delay before every create's backend call
    /// (`NORDLYS_TEST_SLOW_CREATE_MS`): a cloud that answers slowly.
    slow_create: Option<Duration>,
    /// The test-only delay before every list's backend call
    /// (`NORDLYS_TEST_SLOW_LIST_MS`): a cloud that answers reads slowly.
    slow_list: Option<Duration>,
}

/// The test-only slow-cloud hook's environment variable.
const SLOW_CREATE_ENV: &str = "NORDLYS_TEST_SLOW_CREATE_MS";
/// The test-only slow-reads hook's environment variable.
const SLOW_LIST_ENV: &str = "NORDLYS_TEST_SLOW_LIST_MS";

fn millis_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
}

impl Settle {
    /// Notes kept in this process only, and no quota service: for tests
    /// and the memory backend without NATS.
    pub(crate) fn in_memory(region: &str, backend: Arc<dyn Backend>) -> Settle {
        Settle {
            region: region.to_string(),
            backend,
            notes: Arc::new(MemoryStore::default()),
            gone: Arc::new(MemoryStore::default()),
            quota: None,
            grace: Duration::from_secs(30),
            remove_orphans: false,
            seen: Default::default(),
            crash: CrashHook::default(),
            slow_create: None,
            slow_list: None,
        }
    }

    /// Notes in `notes` and `gone`, settled with the quota service over
    /// `client`.
    pub(crate) fn new(
        region: &str,
        backend: Arc<dyn Backend>,
        notes: Arc<dyn Store>,
        gone: Arc<dyn Store>,
        client: async_nats::Client,
        grace: Duration,
        remove_orphans: bool,
    ) -> Settle {
        Settle {
            region: region.to_string(),
            backend,
            notes,
            gone,
            quota: Some(QuotaClient::new(client, region)),
            grace,
            remove_orphans,
            seen: Default::default(),
            crash: CrashHook::from_env(),
            slow_create: millis_from_env(SLOW_CREATE_ENV),
            slow_list: millis_from_env(SLOW_LIST_ENV),
        }
    }

    /// Refuses a request id whose resource was deleted (it named one
    /// create, which happened), or, where the region keeps request ids for
    /// the backend, one that made another resource than `name`.
    pub(crate) async fn check_request(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
    ) -> Result<(), Status> {
        if request_id.is_empty() {
            return Ok(());
        }
        let key = self.backend.request_key(kind, tenant, request_id);
        if let Some((name, _)) = self.gone.get(&hashed("g", &key)).await? {
            return Err(Status::already_exists(format!(
                "request_id {request_id:?} already created {}, which has since been deleted; a new create needs a new request_id",
                String::from_utf8_lossy(&name)
            )));
        }
        if !self.backend.keeps_request_id(kind) {
            if let Some((made, _)) = self.gone.get(&hashed("m", &key)).await? {
                if made.as_ref() != name.as_bytes() {
                    return Err(nordlys_api::invalid(
                        "request_id",
                        format!(
                            "was already used for another create ({}); a request id names one create",
                            String::from_utf8_lossy(&made)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Keeps (for a day) what a backend cannot: which create a request id
    /// made, and the other way round, so the id is refused for another
    /// create and remembered when its resource is deleted.
    pub(crate) async fn remember_made(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
    ) {
        if request_id.is_empty() || self.backend.keeps_request_id(kind) {
            return;
        }
        let key = self.backend.request_key(kind, tenant, request_id);
        let made = self
            .gone
            .put(&hashed("m", &key), Bytes::from(name.to_string()))
            .await;
        let by_name = self
            .gone
            .put(&hashed("n", name), Bytes::from(key.clone()))
            .await;
        if let Err(e) = made.and(by_name) {
            tracing::warn!(error = %e, %name, "could not keep a create's request id; a retry after a delete may create it again");
        }
    }

    /// Whether an update with `request_id` was applied already (to `name`;
    /// the same id for another resource is refused).
    pub(crate) async fn update_seen(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
    ) -> Result<bool, Status> {
        if request_id.is_empty() {
            return Ok(false);
        }
        match self.gone.get(&update_key(kind, tenant, request_id)).await? {
            None => Ok(false),
            Some((seen, _)) if seen.as_ref() == name.as_bytes() => Ok(true),
            Some((seen, _)) => Err(nordlys_api::invalid(
                "request_id",
                format!(
                    "was already used for an update of {}; a request id names one update",
                    String::from_utf8_lossy(&seen)
                ),
            )),
        }
    }

    /// Remembers (for a day) that an update with `request_id` was applied.
    pub(crate) async fn remember_update(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
    ) {
        if request_id.is_empty() {
            return;
        }
        let key = update_key(kind, tenant, request_id);
        if let Err(e) = self.gone.put(&key, Bytes::from(name.to_string())).await {
            tracing::warn!(error = %e, %name, "could not remember an update's request id; a retry applies it again");
        }
    }

    /// Notes a counted create before the backend makes it.
    pub(crate) async fn begin_create(
        &self,
        kind: ResourceKind,
        organization: &str,
        name: &str,
        request_id: &str,
        create_time: Option<&prost_types::Timestamp>,
    ) -> Result<Option<PendingCreate>, Status> {
        if !counted(kind) || request_id.is_empty() || self.quota.is_none() {
            return Ok(None);
        }
        let note = Note::Create {
            organization: organization.to_string(),
            name: name.to_string(),
            reservation: nordlys_api::ids::reservation(organization, name, request_id),
            request_id: request_id.to_string(),
            create_time: stamp(create_time),
            at_ms: now_ms(),
            settling: false,
        };
        let key = create_key(name);
        match self.notes.create(&key, note.encode()).await {
            Ok(revision) => Ok(Some(PendingCreate {
                key,
                revision,
                note,
                touched: std::time::Instant::now(),
                claimed: false,
            })),
            // Another attempt of the same create (a retry, a fallback) or a
            // racing create of the same name holds the note: it settles it.
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits as long as the test-only slow-reads hook says (nothing when
    /// it is unset).
    pub(crate) async fn before_list(&self) {
        if let Some(delay) = self.slow_list {
            tokio::time::sleep(delay).await;
        }
    }

    /// Runs a create's backend call, keeping its note fresh meanwhile: a
    /// sweeper takes over only notes untouched for a grace period, so a
    /// slow create (a cloud answering in seconds) is never settled behind
    /// its back while it runs.
    pub(crate) async fn while_creating<T>(
        &self,
        pending: Option<&mut PendingCreate>,
        make: impl std::future::Future<Output = T>,
    ) -> T {
        let slow = self.slow_create;
        let make = async move {
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            make.await
        };
        let Some(pending) = pending else {
            return make.await;
        };
        let beat = (self.grace / 3).max(Duration::from_millis(10));
        tokio::pin!(make);
        loop {
            tokio::select! {
                made = &mut make => return made,
                () = tokio::time::sleep(beat), if !pending.claimed => self.touch(pending).await,
            }
        }
    }

    /// Dates a pending create's note now, unless a sweeper has taken it.
    async fn touch(&self, pending: &mut PendingCreate) {
        if let Note::Create { at_ms, .. } = &mut pending.note {
            *at_ms = now_ms();
        }
        match self
            .notes
            .update(&pending.key, pending.note.encode(), pending.revision)
            .await
        {
            Ok(revision) => {
                pending.revision = revision;
                pending.touched = std::time::Instant::now();
            }
            Err(StoreError::Conflict) => pending.claimed = true,
            // The next beat tries again.
            Err(e) => tracing::debug!(error = %e, "could not refresh a create's settle note"),
        }
    }

    /// Settles what [`Settle::begin_create`] noted, now that the backend
    /// answered: a refusal made nothing, so the note goes; a replay of an
    /// earlier create is about that create's life; a success stays noted
    /// until the sweeper has seen it committed.
    ///
    /// A call that ran past its note's freshness (its process was paused,
    /// or starved) may have been settled behind its back by a sweeper that
    /// did not yet see the resource and released its reservation. Then
    /// what it made, or may have made, is noted again for the sweeper to
    /// judge afresh: what exists is always counted.
    pub(crate) async fn end_create(
        &self,
        pending: Option<PendingCreate>,
        outcome: Result<Option<&prost_types::Timestamp>, &BackendError>,
    ) {
        let Some(pending) = pending else { return };
        let late = pending.claimed || pending.touched.elapsed() >= self.grace / 2;
        if late && !matches!(outcome, Err(e) if is_refusal(e)) {
            self.end_late_create(pending, outcome).await;
            return;
        }
        let result = match (outcome, pending.note) {
            (Err(e), _) if is_refusal(e) => self.notes.delete(&pending.key, pending.revision).await,
            (Err(_), _) => Ok(()),
            (Ok(made), mut note @ Note::Create { .. }) if stamp(made) != note_time(&note) => {
                // A replay of an earlier create: the note is about that life.
                if let Note::Create { create_time, .. } = &mut note {
                    *create_time = stamp(made);
                }
                self.notes
                    .update(&pending.key, note.encode(), pending.revision)
                    .await
                    .map(|_| ())
            }
            (Ok(_), _) => Ok(()),
        };
        match result {
            // The sweeper took the note over: it settles it.
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not update a create's settle note; the sweeper settles it")
            }
        }
    }

    /// [`Settle::end_create`] for a call whose note may have been settled
    /// while it ran: the note is written afresh, about what the call made,
    /// so a sweeper judges it again from what exists (and commits it, which
    /// counts it even when its reservation was released meanwhile). An
    /// undo of the create still finds the note and claims it.
    async fn end_late_create(
        &self,
        pending: PendingCreate,
        outcome: Result<Option<&prost_types::Timestamp>, &BackendError>,
    ) {
        let PendingCreate { key, mut note, .. } = pending;
        let Note::Create {
            name,
            create_time,
            at_ms,
            settling,
            ..
        } = &mut note
        else {
            return;
        };
        if let Ok(made) = outcome {
            *create_time = stamp(made);
        }
        *at_ms = now_ms();
        *settling = false;
        let name = name.clone();
        tracing::info!(%name, "a create outlived its settle note; noted again for the sweeper");
        if let Err(e) = self.notes.put(&key, note.encode()).await {
            tracing::error!(%name, error = %e, "could not note a late create again; the reconciler must repair its count");
        }
    }

    /// Who owns the resource `name` and when it was made, if the tenant
    /// sees it.
    async fn life(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<Life>, BackendError> {
        let b = &self.backend;
        let found = match kind {
            ResourceKind::Project => match b.get_project(tenant, name).await {
                Ok(p) => b.incarnation(tenant, name).await.map(|incarnation| Life {
                    organization: p.organization,
                    create_time: p.create_time,
                    incarnation,
                }),
                Err(e) => Err(e),
            },
            ResourceKind::User => b.get_user(tenant, name).await.map(|u| Life {
                organization: top_level(name).to_string(),
                create_time: u.create_time,
                incarnation: String::new(),
            }),
            ResourceKind::Network => b.get_network(tenant, name).await.map(|n| Life {
                organization: String::new(),
                create_time: n.create_time,
                incarnation: String::new(),
            }),
            ResourceKind::AccessRule => b.get_access_rule(tenant, name).await.map(|r| Life {
                organization: String::new(),
                create_time: r.create_time,
                incarnation: String::new(),
            }),
            ResourceKind::Membership => b.get_membership(tenant, name).await.map(|m| Life {
                organization: String::new(),
                create_time: m.create_time,
                incarnation: String::new(),
            }),
        };
        let mut life = match found {
            Ok(life) => life,
            Err(BackendError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if life.organization.is_empty() {
            // A project's child belongs to the project's organization.
            life.organization = match b.get_project(&Tenant::Any, top_level(name)).await {
                Ok(p) => p.organization,
                Err(BackendError::NotFound { .. }) => match tenant {
                    Tenant::Organization(org) => org.clone(),
                    Tenant::Any => String::new(),
                },
                Err(e) => return Err(e),
            };
        }
        Ok(Some(life))
    }

    /// Removes a resource once; the backend call goes through here.
    async fn remove_in_backend(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<String, BackendError> {
        let b = &self.backend;
        let removed = match kind {
            ResourceKind::Project => b.delete_project(tenant, name).await,
            ResourceKind::User => b.delete_user(tenant, name).await,
            ResourceKind::Network => b.delete_network(tenant, name).await,
            ResourceKind::AccessRule => b.delete_access_rule(tenant, name).await,
            ResourceKind::Membership => b.delete_membership(tenant, name).await,
        };
        let request_key = match removed {
            Ok(r) => r.request_key,
            Err(BackendError::NotFound { .. }) => return Ok(String::new()),
            Err(e) => return Err(e),
        };
        if request_key.is_empty() && !b.keeps_request_id(kind) {
            // The region kept it (see remember_made).
            return Ok(match self.gone.get(&hashed("n", name)).await {
                Ok(Some((key, _))) => String::from_utf8_lossy(&key).into_owned(),
                Ok(None) => String::new(),
                Err(e) => {
                    tracing::warn!(error = %e, %name, "could not read a deleted resource's request id");
                    String::new()
                }
            });
        }
        Ok(request_key)
    }

    /// The counted resources a delete of `name` removes, with their
    /// operation ids: the resource, and a project's networks and rules.
    async fn doomed(
        &self,
        kind: ResourceKind,
        name: &str,
        life: &Life,
    ) -> Result<Vec<Change>, BackendError> {
        let mut changes = Vec::new();
        if counted(kind) {
            changes.push(Change {
                operation_id: nordlys_api::ids::removal(
                    &self.region,
                    name,
                    life.create_time.as_ref(),
                    &life.incarnation,
                ),
                name: name.to_string(),
            });
        }
        if kind == ResourceKind::Project {
            let filter = Filter {
                organization: None,
                parent: Some(name.to_string()),
                after: String::new(),
                limit: 500,
            };
            let b = &self.backend;
            let networks = all_pages(
                filter.clone(),
                |f| async move { b.list_networks(&f).await },
                |n| &n.name,
            )
            .await?;
            let rules = all_pages(
                filter,
                |f| async move { b.list_access_rules(&f).await },
                |r| &r.name,
            )
            .await?;
            let children = networks
                .iter()
                .map(|n| (&n.name, n.create_time.as_ref()))
                .chain(rules.iter().map(|r| (&r.name, r.create_time.as_ref())));
            for (child, created) in children {
                changes.push(Change {
                    operation_id: nordlys_api::ids::removal(&self.region, child, created, ""),
                    name: child.clone(),
                });
            }
        }
        Ok(changes)
    }

    /// Deletes `name` (of `kind`) for `tenant` and gives its quota back,
    /// crash-safe: see the module docs. `undo_of` is the request id the
    /// call carries: the gateway's undo of a refused create.
    pub(crate) async fn delete(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
        undo_of: Option<&str>,
    ) -> Result<(String, ResourceCounts), Status> {
        let life = match self.life(kind, tenant, name).await? {
            Some(life) => life,
            None => return self.resume_delete(kind, tenant, name).await,
        };
        // An open create note of this life: the undo of that create, or a
        // create whose commit must come before this give-back.
        let mut commit_first = None;
        let mut create_revision = None;
        let create_key = create_key(name);
        if let Some((bytes, revision)) = self.notes.get(&create_key).await? {
            if let Some(Note::Create {
                reservation,
                request_id,
                create_time,
                settling,
                ..
            }) = Note::decode(&bytes)
            {
                if create_time == stamp(life.create_time.as_ref()) {
                    // The undo claims the note by deleting it; if the
                    // sweeper took it first, it has committed (or is
                    // committing) the create, and this is a plain delete.
                    let undo = !settling && undo_of.is_some_and(|id| id == request_id);
                    if undo {
                        match self.notes.delete(&create_key, revision).await {
                            Ok(()) => {
                                if let Err(e) = self.remove_in_backend(kind, tenant, name).await {
                                    // Still there: put the note back, so the
                                    // sweeper counts what exists (or a retried
                                    // undo claims it again).
                                    if let Err(put) = self.notes.create(&create_key, bytes).await {
                                        tracing::warn!(%name, error = %put, "could not restore a create note after a failed undo");
                                    }
                                    return Err(e.into());
                                }
                                tracing::debug!(%name, %reservation, "undid a refused create");
                                return Ok((life.organization, ResourceCounts::default()));
                            }
                            Err(StoreError::Conflict) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    commit_first = Some(reservation);
                    create_revision = Some(revision);
                }
            }
        }
        let changes = self.doomed(kind, name, &life).await?;
        let note = Note::Remove {
            organization: life.organization.clone(),
            name: name.to_string(),
            commit_first,
            changes,
            at_ms: now_ms(),
        };
        let (note, revision) = self.upsert_remove(name, note).await?;
        tracing::debug!(%name, ?note, "delete noted");
        if let Some(revision) = create_revision {
            // Its obligation now lives in the remove note (a note rewritten
            // since is the sweeper's, which settles it itself).
            let _ = self.notes.delete(&create_key, revision).await;
        }
        self.backend.begin_delete(kind, name).await?;
        self.crash.point("remove-noted");
        let request_key = self.remove_in_backend(kind, tenant, name).await?;
        self.crash.point("removed");
        // The undo of a refused create (of a kind with no create note)
        // forgets its request id, so the create can be retried.
        let undone = undo_of.is_some_and(|id| {
            !id.is_empty() && self.backend.request_key(kind, tenant, id) == request_key
        });
        if !request_key.is_empty() && !undone {
            if let Err(e) = self
                .gone
                .put(&hashed("g", &request_key), Bytes::from(name.to_string()))
                .await
            {
                tracing::warn!(error = %e, %name, "could not remember a deleted resource's request id");
            }
        }
        let freed = self.freed(&note);
        if let Err(e) = self.settle_remove(&note, revision).await {
            crate::metrics::METRICS.giveback_deferred();
            tracing::warn!(error = %e, %name, "quota give-back after a delete failed; the sweeper retries it");
        }
        Ok((life.organization, freed))
    }

    /// A delete of a resource that is gone already: finishes an earlier
    /// delete of it that was cut short, or NOT_FOUND.
    async fn resume_delete(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<(String, ResourceCounts), Status> {
        let key = remove_key(name);
        if let Some((bytes, revision)) = self.notes.get(&key).await? {
            let note = Note::decode(&bytes);
            if let Some(note @ Note::Remove { organization, .. }) = &note {
                if tenant.allows(organization) {
                    let organization = organization.clone();
                    let freed = self.freed(note);
                    self.finish_remove(note, revision).await?;
                    return Ok((organization, freed));
                }
            }
        }
        Err(BackendError::NotFound {
            kind,
            name: name.to_string(),
            region: self.region.clone(),
        }
        .into())
    }

    /// Writes a remove note, merged with one already there (a delete that
    /// was cut short, or one running beside this one).
    async fn upsert_remove(&self, name: &str, note: Note) -> Result<(Note, u64), Status> {
        let key = remove_key(name);
        for _ in 0..8 {
            match self.notes.get(&key).await? {
                None => match self.notes.create(&key, note.encode()).await {
                    Ok(revision) => return Ok((note, revision)),
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                },
                Some((bytes, revision)) => {
                    let merged = match Note::decode(&bytes) {
                        Some(old) => merge(old, note.clone()),
                        None => note.clone(),
                    };
                    match self.notes.update(&key, merged.encode(), revision).await {
                        Ok(revision) => return Ok((merged, revision)),
                        Err(StoreError::Conflict) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(Status::aborted(format!(
            "{name} is being deleted by several calls at once; retry"
        )))
    }

    fn freed(&self, note: &Note) -> ResourceCounts {
        let mut sum = ResourceCounts::default();
        if let Note::Remove { changes, .. } = note {
            for c in changes {
                if let Some(kind) = kind_of(&c.name) {
                    add(&mut sum, &one(kind));
                }
            }
        }
        sum
    }

    /// Removes whatever a remove note names that still exists, then
    /// settles it.
    async fn finish_remove(&self, note: &Note, revision: u64) -> Result<(), Status> {
        let Note::Remove { name, changes, .. } = note else {
            return Ok(());
        };
        // The children go before the resource that holds them.
        for c in changes.iter().filter(|c| &c.name != name) {
            if let Some(kind) = kind_of(&c.name) {
                self.remove_in_backend(kind, &Tenant::Any, &c.name).await?;
            }
        }
        if let Some(kind) = kind_of(name) {
            self.remove_in_backend(kind, &Tenant::Any, name).await?;
        }
        self.settle_remove(note, revision).await
    }

    /// Gives a remove note's quota back (committing its create first when
    /// it has to), then drops the note.
    async fn settle_remove(&self, note: &Note, revision: u64) -> Result<(), Status> {
        let Note::Remove {
            organization,
            name,
            commit_first,
            changes,
            ..
        } = note
        else {
            return Ok(());
        };
        let Some(quota) = &self.quota else {
            return self.drop_note(&remove_key(name), revision).await;
        };
        if organization.is_empty() {
            tracing::warn!(%name, "a removal without an organization: nothing to give back");
            return self.drop_note(&remove_key(name), revision).await;
        }
        if let Some(reservation) = commit_first {
            let counts = kind_of(name).map(one).unwrap_or_default();
            quota
                .commit(organization, reservation, &self.region, counts)
                .await?;
        }
        let usage: Vec<UsageChange> = changes
            .iter()
            .filter_map(|c| {
                let kind = kind_of(&c.name)?;
                Some(UsageChange {
                    operation_id: c.operation_id.clone(),
                    region: self.region.clone(),
                    counts: Some(one(kind)),
                })
            })
            .collect();
        let ops: Vec<&str> = usage.iter().map(|u| u.operation_id.as_str()).collect();
        quota.free(organization, usage.clone()).await?;
        tracing::debug!(%name, commit_first = ?commit_first, ?ops, "gave quota back");
        self.drop_note(&remove_key(name), revision).await
    }

    async fn drop_note(&self, key: &str, revision: u64) -> Result<(), Status> {
        match self.notes.delete(key, revision).await {
            // Merged with a newer delete since: that one drops it.
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Settles one create note the call that wrote it left behind.
    async fn sweep_create(&self, key: &str, note: &Note, revision: u64) -> Result<(), Status> {
        let Note::Create {
            organization,
            name,
            reservation,
            create_time,
            ..
        } = note
        else {
            return Ok(());
        };
        let Some(quota) = &self.quota else {
            return Ok(());
        };
        let Some(kind) = kind_of(name) else {
            return self.drop_note(key, revision).await;
        };
        // Take the note over first, so an undo arriving now cannot also
        // claim it (it would give back nothing for a create counted here).
        // The claim is dated now: another sweeper leaves a note claimed
        // less than a grace period ago alone. Without that, two sweepers
        // re-claimed the same note in turn, each one's drop failing on the
        // other's claim, and the note was never dropped (seen with
        // OpenStack regions, whose finish step widens the window).
        let mut claimed = note.clone();
        if let Note::Create {
            settling, at_ms, ..
        } = &mut claimed
        {
            *settling = true;
            *at_ms = now_ms();
        }
        let revision = match self.notes.update(key, claimed.encode(), revision).await {
            Ok(revision) => revision,
            // An undo or a delete took it meanwhile.
            Err(StoreError::Conflict) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let life = self.life(kind, &Tenant::Any, name).await?;
        match life {
            Some(life) if stamp(life.create_time.as_ref()) == *create_time => {
                // A create cut short half-way is made whole first, as its
                // retry would (it stays noted while that fails).
                self.backend.finish(kind, name).await?;
                quota
                    .commit(organization, reservation, &self.region, one(kind))
                    .await?;
                tracing::debug!(%name, %reservation, "sweeper committed a create");
            }
            _ => {
                // What the create left in the cloud goes first: the note
                // stays, and this is tried again, while that fails.
                self.backend.abandon(kind, name).await?;
                quota
                    .release(organization, reservation, &self.region)
                    .await?;
                tracing::debug!(%name, %reservation, "sweeper released a create that did not happen");
            }
        }
        self.drop_note(key, revision).await
    }

    /// One pass over the notes older than the grace period. Returns how
    /// many were settled.
    pub(crate) async fn sweep(&self) -> Result<usize, Status> {
        let cutoff = now_ms() - i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX);
        let keys = self.notes.keys().await?;
        let now = std::time::Instant::now();
        // Only notes listed a grace period ago are read: under steady
        // creates most notes are young and settled by their own calls.
        let due: Vec<String> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let listed: std::collections::HashSet<&String> = keys.iter().collect();
            seen.retain(|key, _| listed.contains(key));
            keys.iter()
                .filter(|key| {
                    let first = *seen.entry((*key).clone()).or_insert(now);
                    now.duration_since(first) >= self.grace
                })
                .cloned()
                .collect()
        };
        let mut settled = 0;
        for key in due {
            let Some((bytes, revision)) = self.notes.get(&key).await? else {
                continue;
            };
            let Some(note) = Note::decode(&bytes) else {
                tracing::warn!(%key, "undecodable settle note dropped");
                self.drop_note(&key, revision).await?;
                continue;
            };
            if note.at_ms() > cutoff {
                continue;
            }
            let result = match &note {
                Note::Create { .. } => self.sweep_create(&key, &note, revision).await,
                Note::Remove { .. } => self.finish_remove(&note, revision).await,
            };
            match result {
                Ok(()) => {
                    settled += 1;
                    crate::metrics::METRICS.swept();
                }
                Err(e) => {
                    crate::metrics::METRICS.sweep_failed();
                    tracing::warn!(%key, error = %e, "could not settle a note yet");
                }
            }
        }
        Ok(settled)
    }

    /// Sweeps every `interval` until the task is dropped.
    pub(crate) async fn run_sweeper(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "sweeper settled quota changes left behind"),
                Err(e) => tracing::warn!(error = %e, "settle sweep failed"),
            }
        }
    }

    /// Cloud resources of this installation whose owner is gone, named
    /// `regions/{region}/{what}`; removed first when the region removes
    /// orphans. Nothing counted them (their project left the counts with
    /// it), so nothing is given back.
    pub(crate) async fn strays(&self) -> Result<CountResourcesResponse, Status> {
        let strays = self.backend.strays().await?;
        if self.remove_orphans {
            for stray in &strays {
                self.backend.remove_stray(stray).await?;
            }
        }
        Ok(CountResourcesResponse {
            existing: None,
            pending: Vec::new(),
            orphans: strays
                .into_iter()
                .map(|s| format!("regions/{}/{s}", self.region))
                .collect(),
        })
    }

    /// What `organization` holds here, with the changes not yet settled,
    /// for the quota reconciler.
    pub(crate) async fn count(&self, organization: &str) -> Result<CountResourcesResponse, Status> {
        let orphans = self.backend.orphans(organization).await?;
        if self.remove_orphans {
            // Through the ordinary delete: noted, and their quota given back
            // to the organization they belong to.
            let tenant = Tenant::Organization(organization.to_string());
            for name in &orphans {
                if let Some(kind) = kind_of(name) {
                    self.delete(kind, &tenant, name, None).await?;
                    tracing::warn!(%organization, %name, "removed an orphan");
                }
            }
        }
        let existing = self.backend.count_resources(organization).await?;
        let mut pending = Vec::new();
        for key in self.notes.keys().await? {
            let Some((bytes, _)) = self.notes.get(&key).await? else {
                continue;
            };
            match Note::decode(&bytes) {
                Some(Note::Create {
                    organization: org,
                    name,
                    reservation,
                    ..
                }) if org == organization => {
                    if let Some(kind) = kind_of(&name) {
                        pending.push(PendingChange {
                            operation_id: reservation,
                            create: true,
                            counts: Some(one(kind)),
                        });
                    }
                }
                Some(Note::Remove {
                    organization: org,
                    changes,
                    commit_first,
                    name,
                    ..
                }) if org == organization => {
                    if let (Some(reservation), Some(kind)) = (commit_first, kind_of(&name)) {
                        pending.push(PendingChange {
                            operation_id: reservation,
                            create: true,
                            counts: Some(one(kind)),
                        });
                    }
                    for c in changes {
                        if let Some(kind) = kind_of(&c.name) {
                            pending.push(PendingChange {
                                operation_id: c.operation_id,
                                create: false,
                                counts: Some(one(kind)),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(CountResourcesResponse {
            existing: Some(existing),
            pending,
            orphans,
        })
    }
}

/// A backend answer that says nothing was made.
fn is_refusal(e: &BackendError) -> bool {
    !matches!(e, BackendError::Unavailable(_) | BackendError::Internal(_))
}

/// The create time a create note is about.
fn note_time(note: &Note) -> Option<(i64, i32)> {
    match note {
        Note::Create { create_time, .. } => *create_time,
        Note::Remove { .. } => None,
    }
}

/// Two remove notes of one name as one: every change of both, once.
fn merge(old: Note, new: Note) -> Note {
    match (old, new) {
        (
            Note::Remove {
                organization,
                name,
                commit_first,
                mut changes,
                at_ms,
            },
            Note::Remove {
                commit_first: new_commit,
                changes: new_changes,
                ..
            },
        ) => {
            let mut seen: BTreeMap<String, ()> = changes
                .iter()
                .map(|c| (c.operation_id.clone(), ()))
                .collect();
            for c in new_changes {
                if seen.insert(c.operation_id.clone(), ()).is_none() {
                    changes.push(c);
                }
            }
            Note::Remove {
                organization,
                name,
                commit_first: commit_first.or(new_commit),
                changes,
                at_ms,
            }
        }
        (_, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(ops: &[&str], commit: Option<&str>) -> Note {
        Note::Remove {
            organization: "organizations/acme".into(),
            name: "projects/web".into(),
            commit_first: commit.map(str::to_string),
            changes: ops
                .iter()
                .map(|op| Change {
                    operation_id: op.to_string(),
                    name: format!("projects/web/networks/{op}"),
                })
                .collect(),
            at_ms: 1,
        }
    }

    #[test]
    fn merged_remove_notes_keep_every_change_once() {
        let merged = merge(remove(&["a", "b"], None), remove(&["b", "c"], Some("r-1")));
        assert_eq!(merged, {
            let mut n = remove(&["a", "b", "c"], Some("r-1"));
            if let Note::Remove { at_ms, .. } = &mut n {
                *at_ms = 1;
            }
            n
        });
    }

    #[test]
    fn notes_round_trip() {
        let note = remove(&["a"], Some("r-1"));
        assert_eq!(Note::decode(&note.encode()), Some(note));
    }

    #[test]
    fn kinds_come_from_names() {
        assert_eq!(kind_of("projects/web"), Some(ResourceKind::Project));
        assert_eq!(
            kind_of("projects/web/networks/n"),
            Some(ResourceKind::Network)
        );
        assert_eq!(
            kind_of("projects/web/accessRules/r"),
            Some(ResourceKind::AccessRule)
        );
        assert_eq!(
            kind_of("projects/web/members/m"),
            Some(ResourceKind::Membership)
        );
        assert_eq!(
            kind_of("organizations/acme/users/u"),
            Some(ResourceKind::User)
        );
        assert_eq!(kind_of("regions/x"), None);
    }
}
