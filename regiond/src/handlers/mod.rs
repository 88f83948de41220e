//! The regional API (`nordlys.regiond.v1.RegiondService`), written once
//! against tonic's types and served over NATS (and later gRPC).
//!
//! Each handler reads the identity the gateway asserted, checks its input
//! again (the gateway already did: this is defense in depth), confines the
//! call to the caller's organization, and asks the backend. One file per
//! resource.

mod access_rules;
mod memberships;
mod networks;
mod projects;
mod users;

use std::sync::Arc;

use nordlys_api::validate::{check_request_id, is_region};
use nordlys_api::Violations;
use nordlys_proto::pb::nordlys::regiond::v1::regiond_service_server::RegiondService;
use nordlys_proto::pb::nordlys::regiond::v1::{
    ApplyTierRequest, ApplyTierResponse, CountResourcesRequest, CountResourcesResponse,
    DeleteResponse, ListRequest,
};
use nordlys_proto::pb::nordlys::v1::region_status::State;
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, CreateAccessRuleRequest, CreateMembershipRequest, CreateNetworkRequest,
    CreateProjectRequest, CreateUserRequest, DeleteAccessRuleRequest, DeleteMembershipRequest,
    DeleteNetworkRequest, DeleteProjectRequest, DeleteUserRequest, GetAccessRuleRequest,
    GetMembershipRequest, GetNetworkRequest, GetProjectRequest, GetUserRequest,
    ListAccessRulesResponse, ListMembershipsResponse, ListNetworksResponse, ListProjectsResponse,
    ListUsersResponse, Membership, Network, Project, RegionStatus, UpdateAccessRuleRequest,
    UpdateNetworkRequest, UpdateProjectRequest, UpdateUserRequest, User,
};
use nordlys_transport::{Identity, Role};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::backend::{top_level, Backend, BackendError, Filter, ResourceKind, Tenant};
use crate::settle::Settle;

/// How a region settles its quota changes (see [`Handlers::settled`]).
#[derive(Debug, Clone)]
pub struct SettleOptions {
    /// Keep the notes in this process (the memory backend) rather than in
    /// JetStream KV.
    pub in_memory: bool,
    /// How old a note must be before the sweeper takes it over.
    pub grace: std::time::Duration,
    /// How often the sweeper looks.
    pub interval: std::time::Duration,
    /// Remove orphans when the reconciler counts an organization.
    pub remove_orphans: bool,
    /// Where the notes' buckets live (unused `in_memory`).
    pub buckets: nordlys_transport::Buckets,
}

/// A list without a limit returns at most this many resources.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// The handlers of one region, over one backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handlers {
    region: String,
    backend: Arc<dyn Backend>,
    settle: Arc<Settle>,
}

impl Handlers {
    /// Handlers serving `region` from `backend`, with no quota service:
    /// quota changes are noted in memory and never settled (for tests and
    /// examples; the daemon uses [`Handlers::settled`]).
    pub fn new(region: impl Into<String>, backend: Arc<dyn Backend>) -> Handlers {
        let region = region.into();
        let settle = Arc::new(Settle::in_memory(&region, Arc::clone(&backend)));
        Handlers {
            region,
            backend,
            settle,
        }
    }

    /// Handlers whose quota changes are settled with the quota service over
    /// `client`, noted durably in JetStream KV (`nordlys-settle-{region}`,
    /// and `nordlys-gone-{region}` for deleted resources' request ids) or,
    /// with `in_memory`, in this process (the memory backend, whose
    /// resources die with it). Starts the sweeper that settles what calls
    /// left behind.
    pub async fn settled(
        region: impl Into<String>,
        backend: Arc<dyn Backend>,
        client: async_nats::Client,
        options: SettleOptions,
    ) -> Result<Handlers, nordlys_transport::BoxError> {
        let SettleOptions {
            in_memory,
            grace,
            interval,
            remove_orphans,
            buckets,
        } = options;
        use crate::settle::store::{KvStore, MemoryStore, Store};
        let region = region.into();
        let (notes, gone): (Arc<dyn Store>, Arc<dyn Store>) = if in_memory {
            (
                Arc::new(MemoryStore::default()),
                Arc::new(MemoryStore::default()),
            )
        } else {
            (
                Arc::new(
                    KvStore::open(
                        buckets.clone(),
                        &format!("nordlys-settle-{region}"),
                        &format!("Nordlys region {region}: quota changes not yet settled"),
                    )
                    .await?,
                ),
                Arc::new(
                    KvStore::open(
                        buckets,
                        &format!("nordlys-gone-{region}"),
                        &format!("Nordlys region {region}: request ids of deleted resources"),
                    )
                    .await?,
                ),
            )
        };
        let settle = Arc::new(Settle::new(
            &region,
            Arc::clone(&backend),
            notes,
            gone,
            client,
            grace,
            remove_orphans,
        ));
        tokio::spawn(Arc::clone(&settle).run_sweeper(interval));
        Ok(Handlers {
            region,
            backend,
            settle,
        })
    }

    /// The region served.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The backend's name (`memory`).
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The collections this region serves, comma-separated (discovery
    /// metadata `resources`).
    pub fn resources(&self) -> String {
        let unsupported = self.backend.unsupported();
        ResourceKind::ALL
            .iter()
            .filter(|kind| !unsupported.contains(kind))
            .map(|kind| kind.collection())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The region status of a resource that exists here.
    fn ready(&self) -> Vec<RegionStatus> {
        vec![RegionStatus {
            region: self.region.clone(),
            state: State::Ready as i32,
            ..Default::default()
        }]
    }

    /// Checks the placement of a project or user: valid regions, this one
    /// among them when any are named.
    fn check_placement(&self, v: &mut Violations, field: &str, regions: &[String]) {
        for (i, region) in regions.iter().enumerate() {
            v.check(
                is_region(region),
                &format!("{field}[{i}]"),
                "must be a region id such as sto1",
            );
        }
        v.check(
            regions.is_empty() || regions.contains(&self.region),
            field,
            format!(
                "must include {}, the region this call was sent to",
                self.region
            ),
        );
    }

    /// Checks that a network or access rule is for this region (its shape is
    /// checked with the rest of the resource).
    fn check_here(&self, v: &mut Violations, field: &str, region: &str) {
        v.check(
            !is_region(region) || region == self.region,
            field,
            format!(
                "must be {}: this daemon serves region {}",
                self.region, self.region
            ),
        );
    }

    /// Turns a list request into a backend filter. `parent` is the parent's
    /// collection (`["projects"]`), empty for projects, which have none.
    fn filter(
        &self,
        caller: &Caller,
        request: &ListRequest,
        parent: &[&str],
    ) -> Result<Filter, Status> {
        let mut v = Violations::new();
        if !request.organization.is_empty() {
            parse_into(
                &mut v,
                &request.organization,
                &["organizations"],
                "organization",
            );
        }
        if parent.is_empty() {
            v.check(request.parent.is_empty(), "parent", "must be empty");
        } else if !request.parent.is_empty() {
            parse_into(&mut v, &request.parent, parent, "parent");
        }
        v.into_result()?;
        if caller.identity.role != Role::Operator
            && request.organization != caller.identity.organization
        {
            return Err(Status::permission_denied(format!(
                "the caller may only list resources of {}",
                caller.identity.organization
            )));
        }
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Filter {
            organization: nonempty(&request.organization),
            parent: nonempty(&request.parent),
            after: request.after.clone(),
            limit: usize::try_from(request.limit)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_LIST_LIMIT),
        })
    }
}

/// Who makes a call, and whose resources it may touch.
#[derive(Debug)]
struct Caller {
    identity: Identity,
    tenant: Tenant,
}

impl Caller {
    /// The caller of a read; UNAUTHENTICATED without an asserted identity.
    fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        let identity = Identity::read(request.metadata())?;
        let tenant = match identity.role {
            Role::Operator => Tenant::Any,
            _ => Tenant::Organization(identity.organization.clone()),
        };
        Ok(Caller { identity, tenant })
    }

    /// The caller of a change; PERMISSION_DENIED for read-only roles.
    fn writer<T>(request: &Request<T>) -> Result<Caller, Status> {
        let caller = Caller::of(request)?;
        if !caller.identity.role.can_write() {
            return Err(Status::permission_denied(format!(
                "role {} may not change resources",
                caller.identity.role.as_str()
            )));
        }
        Ok(caller)
    }

    /// PERMISSION_DENIED unless the caller may create resources of
    /// `organization`.
    fn owns(&self, organization: &str) -> Result<(), Status> {
        if self.tenant.allows(organization) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the caller may not create resources of {organization}"
            )))
        }
    }
}

/// Like `nordlys_api::names::parse_field`, but records the violation so a
/// caller hears of every mistake at once.
fn parse_into<'a>(
    v: &mut Violations,
    name: &'a str,
    collections: &[&str],
    field: &str,
) -> Option<Vec<&'a str>> {
    let ids = nordlys_api::names::parse(name, collections);
    if ids.is_none() {
        let shape = collections
            .iter()
            .map(|c| format!("{c}/{{id}}"))
            .collect::<Vec<_>>()
            .join("/");
        v.add(
            field,
            format!("must be a resource name of the form {shape}"),
        );
    }
    ids
}

/// The name a create gives its resource: `expected` (from the parent and
/// the id), which the caller may also spell out but not contradict.
fn settle_name(v: &mut Violations, field: &str, given: &str, expected: String) -> String {
    v.check(
        given.is_empty() || given == expected,
        field,
        format!("must be {expected}, from the parent and the id"),
    );
    expected
}

/// The idempotency key of a create: the request field, else the
/// `nordlys-request-id` metadata.
fn request_id(v: &mut Violations, field: &str, metadata: &MetadataMap) -> String {
    let id = if field.is_empty() {
        nordlys_transport::metadata::request_id(metadata).unwrap_or_default()
    } else {
        field
    };
    check_request_id(v, "request_id", id);
    id.to_string()
}

/// A created resource, as the settle notes need to know it.
trait Made {
    fn made_name(&self) -> &str;
    fn made_at(&self) -> Option<&prost_types::Timestamp>;
}

macro_rules! made {
    ($($t:ty),*) => {$(
        impl Made for $t {
            fn made_name(&self) -> &str {
                &self.name
            }
            fn made_at(&self) -> Option<&prost_types::Timestamp> {
                self.create_time.as_ref()
            }
        }
    )*};
}

made!(Project, User, Membership, Network, AccessRule);

impl Handlers {
    /// The organization a new resource `name` belongs to: the caller's, or
    /// for operators the owner of its project (empty when it has none).
    async fn owner(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        name: &str,
    ) -> Result<String, Status> {
        if let Tenant::Organization(org) = &caller.tenant {
            return Ok(org.clone());
        }
        match kind {
            ResourceKind::User => Ok(top_level(name).to_string()),
            ResourceKind::Project => Ok(String::new()),
            _ => match self
                .backend
                .get_project(&Tenant::Any, top_level(name))
                .await
            {
                Ok(p) => Ok(p.organization),
                Err(BackendError::NotFound { .. }) => Ok(String::new()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Runs a create through the settle notes (see [`crate::settle`]): a
    /// request id whose resource was deleted is refused, a counted create
    /// is noted before the backend makes it, and a request id names one
    /// create: replayed for another resource it is refused.
    ///
    /// Once noted, the create runs to its end in a task of its own, even
    /// when its caller goes away (a deadline, a dropped connection): cut
    /// short, it would leave the cloud finishing a request nobody settles,
    /// which a sweeper could judge before the cloud shows it.
    #[allow(clippy::too_many_arguments)]
    async fn create<T, F, Fut>(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        organization: String,
        name: &str,
        request_id: &str,
        create_time: Option<&prost_types::Timestamp>,
        make: F,
    ) -> Result<T, Status>
    where
        T: Made + Send + 'static,
        F: FnOnce(Arc<dyn Backend>, Tenant, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = crate::backend::Result<T>> + Send + 'static,
    {
        self.settle
            .check_request(kind, &caller.tenant, request_id, name)
            .await?;
        let organization = if organization.is_empty() {
            self.owner(caller, kind, name).await?
        } else {
            organization
        };
        let settle = Arc::clone(&self.settle);
        let backend = Arc::clone(&self.backend);
        let tenant = caller.tenant.clone();
        let tenant_of_call = tenant.clone();
        let (name, request_id) = (name.to_string(), request_id.to_string());
        let create_time = create_time.cloned();
        let region = self.region.clone();
        let run = async move {
            let mut pending = if organization.is_empty() {
                None
            } else {
                settle
                    .begin_create(
                        kind,
                        &organization,
                        &name,
                        &request_id,
                        create_time.as_ref(),
                    )
                    .await?
            };
            let made = settle
                .while_creating(pending.as_mut(), make(backend, tenant, request_id.clone()))
                .await;
            settle.crash.point("created");
            tracing::debug!(%name, request_id, ok = made.is_ok(), created_at = ?made.as_ref().ok().and_then(|m| m.made_at()), "create answered");
            let replayed_other = matches!(&made, Ok(r) if r.made_name() != name);
            // A replay of another resource made nothing under this name.
            let nothing_here = BackendError::AlreadyExists {
                kind,
                name: name.clone(),
                region,
            };
            settle
                .end_create(
                    pending,
                    match &made {
                        Ok(r) if !replayed_other => Ok(r.made_at()),
                        Ok(_) => Err(&nothing_here),
                        Err(e) => Err(e),
                    },
                )
                .await;
            let made = made?;
            if replayed_other {
                return Err(nordlys_api::invalid(
                    "request_id",
                    format!(
                        "was already used for another create ({}); a request id names one create",
                        made.made_name()
                    ),
                ));
            }
            settle
                .remember_made(kind, &tenant_of_call, &request_id, &name)
                .await;
            Ok(made)
        };
        // The task stays in the call's trace, so the cloud's requests are
        // still part of it.
        tokio::spawn(nordlys_telemetry::in_current(run))
            .await
            .map_err(|e| Status::internal(format!("a create's task failed: {e}")))?
    }

    /// Runs an update once per request id: a retry of one already applied
    /// answers with the resource as it is now (`current`) and changes
    /// nothing again, even when its etag is stale by then.
    async fn update_once<T, C, A>(
        &self,
        caller: &Caller,
        kind: ResourceKind,
        name: &str,
        request_id: &str,
        current: C,
        apply: A,
    ) -> Result<T, Status>
    where
        C: std::future::Future<Output = crate::backend::Result<T>>,
        A: std::future::Future<Output = crate::backend::Result<T>>,
    {
        if self
            .settle
            .update_seen(kind, &caller.tenant, request_id, name)
            .await?
        {
            return Ok(current.await?);
        }
        let updated = apply.await?;
        self.settle
            .remember_update(kind, &caller.tenant, request_id, name)
            .await;
        Ok(updated)
    }

    /// A delete made conditional by `etag` (AIP-154): refused with ABORTED
    /// unless the resource, read now, still has it. An empty etag, or a
    /// resource already gone (the delete then finishes an earlier one or
    /// answers NOT_FOUND), passes.
    async fn check_delete_etag<T>(
        &self,
        etag: &str,
        kind: ResourceKind,
        name: &str,
        current: impl std::future::Future<Output = crate::backend::Result<T>>,
        etag_of: fn(&T) -> String,
    ) -> Result<(), Status> {
        if etag.is_empty() {
            return Ok(());
        }
        let mut v = nordlys_api::Violations::new();
        nordlys_api::update::check_etag(&mut v, "etag", etag);
        v.into_result()?;
        match current.await {
            Ok(current) => Ok(crate::backend::check_etag(
                etag,
                || etag_of(&current),
                kind,
                name,
                &self.region,
            )?),
            Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes through the settle notes: crash-safe, quota given back once.
    async fn delete<T>(
        &self,
        request: &Request<T>,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Response<DeleteResponse>, Status> {
        let caller = Caller::writer(request)?;
        let undo_of = nordlys_transport::metadata::request_id(request.metadata());
        let (organization, freed) = self
            .settle
            .delete(kind, &caller.tenant, name, undo_of)
            .await?;
        Ok(Response::new(DeleteResponse {
            freed: Some(freed),
            organization,
        }))
    }
}

#[tonic::async_trait]
impl RegiondService for Handlers {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        projects::create(self, request).await
    }

    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        projects::get(self, request).await
    }

    async fn list_projects(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        self.settle.before_list().await;
        projects::list(self, request).await
    }

    async fn update_project(
        &self,
        request: Request<UpdateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        projects::update(self, request).await
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        projects::delete(self, request).await
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        users::create(self, request).await
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        users::get(self, request).await
    }

    async fn list_users(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.settle.before_list().await;
        users::list(self, request).await
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<User>, Status> {
        users::update(self, request).await
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        users::delete(self, request).await
    }

    async fn create_membership(
        &self,
        request: Request<CreateMembershipRequest>,
    ) -> Result<Response<Membership>, Status> {
        memberships::create(self, request).await
    }

    async fn get_membership(
        &self,
        request: Request<GetMembershipRequest>,
    ) -> Result<Response<Membership>, Status> {
        memberships::get(self, request).await
    }

    async fn list_memberships(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListMembershipsResponse>, Status> {
        self.settle.before_list().await;
        memberships::list(self, request).await
    }

    async fn delete_membership(
        &self,
        request: Request<DeleteMembershipRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        memberships::delete(self, request).await
    }

    async fn create_network(
        &self,
        request: Request<CreateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        networks::create(self, request).await
    }

    async fn get_network(
        &self,
        request: Request<GetNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        networks::get(self, request).await
    }

    async fn list_networks(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListNetworksResponse>, Status> {
        self.settle.before_list().await;
        networks::list(self, request).await
    }

    async fn update_network(
        &self,
        request: Request<UpdateNetworkRequest>,
    ) -> Result<Response<Network>, Status> {
        networks::update(self, request).await
    }

    async fn delete_network(
        &self,
        request: Request<DeleteNetworkRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        networks::delete(self, request).await
    }

    async fn create_access_rule(
        &self,
        request: Request<CreateAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        access_rules::create(self, request).await
    }

    async fn get_access_rule(
        &self,
        request: Request<GetAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        access_rules::get(self, request).await
    }

    async fn list_access_rules(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<ListAccessRulesResponse>, Status> {
        self.settle.before_list().await;
        access_rules::list(self, request).await
    }

    async fn update_access_rule(
        &self,
        request: Request<UpdateAccessRuleRequest>,
    ) -> Result<Response<AccessRule>, Status> {
        access_rules::update(self, request).await
    }

    async fn delete_access_rule(
        &self,
        request: Request<DeleteAccessRuleRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        access_rules::delete(self, request).await
    }

    async fn count_resources(
        &self,
        request: Request<CountResourcesRequest>,
    ) -> Result<Response<CountResourcesResponse>, Status> {
        let caller = Caller::of(&request)?;
        if caller.identity.role != Role::Operator {
            return Err(Status::permission_denied(
                "only operators may count an organization's resources",
            ));
        }
        let org = &request.get_ref().organization;
        if org.is_empty() {
            return Ok(Response::new(self.settle.strays().await?));
        }
        nordlys_api::names::parse_field(org, &["organizations"], "organization")?;
        Ok(Response::new(self.settle.count(org).await?))
    }

    async fn get_cloud_quota(
        &self,
        request: Request<nordlys_proto::pb::nordlys::v1::GetProjectQuotaRequest>,
    ) -> Result<Response<nordlys_proto::pb::nordlys::v1::CloudQuota>, Status> {
        let caller = Caller::of(&request)?;
        let name = &request.get_ref().name;
        let project = nordlys_api::names::project_of_quota(name, "name")?;
        let quota = self
            .backend
            .cloud_quota(&caller.tenant, &project)
            .await
            .map_err(Status::from)?;
        let mut quota = quota.unwrap_or_default();
        quota.region.clone_from(&self.region);
        Ok(Response::new(quota))
    }

    async fn apply_tier(
        &self,
        request: Request<ApplyTierRequest>,
    ) -> Result<Response<ApplyTierResponse>, Status> {
        // The gateway calls this once the quota service granted the tier:
        // for an operator, or for the organization's admin whose request
        // was granted at once.
        let caller = Caller::writer(&request)?;
        let req = request.into_inner();
        nordlys_api::names::parse_field(&req.organization, &["organizations"], "organization")?;
        caller.owns(&req.organization)?;
        let projects = self
            .backend
            .apply_tier(&req.organization, &req.tier)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ApplyTierResponse {
            projects: i32::try_from(projects).unwrap_or(i32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests;
