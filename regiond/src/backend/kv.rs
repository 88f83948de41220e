//! The JetStream KV backend: a region's resources in the NATS key-value
//! bucket `nordlys-regiond-{region}`, shared by every instance of the region
//! and kept across restarts.
//!
//! It stands in for a real region where several regiond instances must see
//! the same resources (two `sto1` instances behind one queue group); the
//! memory backend cannot, since each instance has its own memory.
//!
//! Keys: `{kind}.{name}` for resources (`p.projects/web`,
//! `n.projects/web/networks/net-a`), and `q.{kind}.{tenant}.{request id}`
//! for the request id index (the value is the name created). Creates are
//! atomic per key (`create` fails when the key exists); a create's
//! precondition checks and its insert are separate steps, so a project
//! deleted at the same moment may leave a child behind (real backends have
//! the same race against their infrastructure).
//!
//! Gets read the bucket; lists, a project's children, a user's memberships
//! and counts come from an in-memory index of the bucket (`kv_index`),
//! brought up to date with the bucket before each read.

use async_nats::jetstream::kv;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use nordlys_proto::pb::nordlys::v1::region_status::State;
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, Membership, Network, Project, ResourceCounts, User,
};
use prost::Message;

use super::kv_index::Index;
use super::{
    top_level, AccessRuleChange, Backend, BackendError, Change, Filter, NetworkChange,
    ProjectChange, Removed, ResourceKind, Result, Tenant, UserChange,
};

/// What is stored under a resource's key.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Record {
    /// The owning organization.
    #[prost(string, tag = "1")]
    pub(super) organization: String,
    /// The request id index key it was created with, if any.
    #[prost(string, tag = "2")]
    pub(super) request: String,
    /// The resource, protobuf-encoded.
    #[prost(bytes = "vec", tag = "3")]
    pub(super) value: Vec<u8>,
    /// A delete has begun (a project's children go first): gets and lists
    /// show it DELETING, and nothing new may be made under it.
    #[prost(bool, tag = "4")]
    pub(super) deleting: bool,
}

/// A project as stored, with DELETING as its region's state while a delete
/// takes its children.
fn shown(mut project: Project, record: &Record) -> Project {
    if record.deleting {
        for status in &mut project.region_status {
            status.state = State::Deleting as i32;
        }
    }
    project
}

/// How long opening waits for the index to load the bucket.
const OPEN_BUDGET: std::time::Duration = std::time::Duration::from_secs(120);

/// A region in a JetStream KV bucket. See the module docs.
#[derive(Debug)]
pub struct KvBackend {
    region: String,
    kv: kv::Store,
    index: Index,
}

fn prefix(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Project => "p",
        ResourceKind::User => "u",
        ResourceKind::Membership => "m",
        ResourceKind::Network => "n",
        ResourceKind::AccessRule => "a",
    }
}

fn key(kind: ResourceKind, name: &str) -> String {
    format!("{}.{name}", prefix(kind))
}

/// Request ids may hold `:`, which keys may not: base64url them.
fn request_key(kind: ResourceKind, tenant: &Tenant, request_id: &str) -> String {
    let tenant = match tenant {
        Tenant::Any => "operator",
        Tenant::Organization(org) => org,
    };
    format!(
        "q.{}.{tenant}.{}",
        prefix(kind),
        URL_SAFE_NO_PAD.encode(request_id)
    )
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("JetStream KV: {e}"))
}

impl KvBackend {
    /// Opens (creating it when missing) the bucket of `region`, and loads
    /// its index before returning, so a daemon never lists from a partial
    /// one.
    pub async fn open(
        buckets: impl Into<nordlys_transport::Buckets>,
        region: &str,
    ) -> Result<KvBackend> {
        let bucket = Self::bucket(region);
        let description = format!("Nordlys region {region} (regiond kv backend)");
        let kv = nordlys_transport::open_bucket(buckets, &bucket, &description, None)
            .await
            .map_err(unavailable)?;
        let index = Index::open(kv.clone(), OPEN_BUDGET).await?;
        Ok(KvBackend {
            region: region.to_string(),
            kv,
            index,
        })
    }

    /// What `organization` holds here, per quota-counted kind, from the
    /// index once it has caught up with the bucket.
    pub async fn count(&self, organization: &str) -> Result<ResourceCounts> {
        self.index.read(|t| t.count(organization)).await
    }

    /// The bucket of `region`.
    pub fn bucket(region: &str) -> String {
        format!("nordlys-regiond-{region}")
    }

    /// The key and value a created project is stored under, for tools that
    /// fill a bucket directly instead of through the API (the bench's scale
    /// mode), so they write exactly what a create would.
    pub fn project_entry(project: &Project) -> (String, Bytes) {
        let record = Record {
            organization: project.organization.clone(),
            request: String::new(),
            value: project.encode_to_vec(),
            deleting: false,
        };
        (
            key(ResourceKind::Project, &project.name),
            Bytes::from(record.encode_to_vec()),
        )
    }

    /// Rows the index's pages have stepped over so far (to check that a
    /// page costs a page).
    pub fn index_rows_scanned(&self) -> u64 {
        self.index.read_now(|t| t.scanned())
    }

    fn not_found(&self, kind: ResourceKind, name: &str) -> BackendError {
        BackendError::NotFound {
            kind,
            name: name.to_string(),
            region: self.region.clone(),
        }
    }

    async fn record(&self, kind: ResourceKind, name: &str) -> Result<Option<Record>> {
        let Some(bytes) = self.kv.get(key(kind, name)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Record::decode(bytes)
            .map(Some)
            .map_err(|e| BackendError::Internal(format!("undecodable record {name}: {e}")))
    }

    fn decode<T: Message + Default>(name: &str, record: &Record) -> Result<T> {
        T::decode(record.value.as_slice())
            .map_err(|e| BackendError::Internal(format!("undecodable resource {name}: {e}")))
    }

    /// The record of a resource the tenant may see.
    async fn visible(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<Record>> {
        Ok(self
            .record(kind, name)
            .await?
            .filter(|r| tenant.allows(&r.organization)))
    }

    async fn get<T: Message + Default>(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<T> {
        match self.visible(kind, tenant, name).await? {
            Some(record) => Self::decode(name, &record),
            None => Err(self.not_found(kind, name)),
        }
    }

    /// The resource first created with a request id, waiting a little when
    /// that create is still under way.
    async fn replay<T: Message + Default>(
        &self,
        kind: ResourceKind,
        rkey: &str,
    ) -> Result<Option<T>> {
        let Some(name) = self.kv.get(rkey).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        for _ in 0..20 {
            if let Some(record) = self.record(kind, &name).await? {
                // Only the resource this request made is its answer: a
                // racing attempt of the same request may hold the claim
                // while another request's resource holds the name, and
                // then neither attempt made anything.
                if record.request != rkey {
                    return Ok(None);
                }
                return Self::decode(&name, &record).map(Some);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // The first create never finished (its daemon died): start afresh.
        Ok(None)
    }

    /// Inserts a resource whose preconditions hold, or replays the first
    /// create of `request_id`.
    async fn insert<T: Message + Default>(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
        organization: &str,
        value: T,
    ) -> Result<T> {
        let rkey = (!request_id.is_empty()).then(|| request_key(kind, tenant, request_id));
        if let Some(rkey) = &rkey {
            // A racing create with the same id may have claimed it since
            // the caller checked: claim it, or replay the winner.
            if let Err(e) = self.kv.create(rkey, Bytes::from(name.to_string())).await {
                if e.kind() != kv::CreateErrorKind::AlreadyExists {
                    return Err(unavailable(e));
                }
                if let Some(first) = self.replay(kind, rkey).await? {
                    return Ok(first);
                }
                self.kv
                    .put(rkey, Bytes::from(name.to_string()))
                    .await
                    .map_err(unavailable)?;
            }
        }
        let record = Record {
            organization: organization.to_string(),
            request: rkey.clone().unwrap_or_default(),
            value: value.encode_to_vec(),
            deleting: false,
        };
        match self
            .kv
            .create(key(kind, name), Bytes::from(record.encode_to_vec()))
            .await
        {
            Ok(_) => Ok(value),
            Err(e) => {
                if let Some(rkey) = &rkey {
                    let _ = self.kv.delete(rkey).await;
                }
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    Err(BackendError::AlreadyExists {
                        kind,
                        name: name.to_string(),
                        region: self.region.clone(),
                    })
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    /// Deletes a resource and forgets its request id.
    async fn remove(&self, kind: ResourceKind, name: &str, record: &Record) -> Result<()> {
        self.kv.delete(key(kind, name)).await.map_err(unavailable)?;
        if !record.request.is_empty() {
            self.kv.delete(&record.request).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// Deletes the resource the tenant may see; NOT_FOUND otherwise.
    async fn remove_visible(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Record> {
        let record = self
            .visible(kind, tenant, name)
            .await?
            .ok_or_else(|| self.not_found(kind, name))?;
        self.remove(kind, name, &record).await?;
        Ok(record)
    }

    /// The names of a kind starting with `prefix`, sorted, from the index.
    async fn names(&self, kind: ResourceKind, prefix: &str) -> Result<Vec<String>> {
        self.index.read(|t| t.names_under(kind, prefix)).await
    }

    /// A page, from the index; only the page's records are decoded.
    async fn list<T: Message + Default>(
        &self,
        kind: ResourceKind,
        filter: &Filter,
    ) -> Result<Vec<T>> {
        let page = self.index.read(|t| t.page(kind, filter)).await?;
        page.iter()
            .map(|(name, record)| Self::decode(name, record))
            .collect()
    }

    /// Removes every resource of `kind` under `project`; returns how many.
    async fn remove_children(&self, kind: ResourceKind, project: &str) -> Result<i64> {
        let mut count = 0;
        for name in self.names(kind, &format!("{project}/")).await? {
            // The bucket, not the index, says what to delete.
            if let Some(record) = self.record(kind, &name).await? {
                self.remove(kind, &name, &record).await?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The organization of a project the tenant may see.
    async fn project_org(&self, tenant: &Tenant, project: &str) -> Result<String> {
        let kind = ResourceKind::Project;
        match self.visible(kind, tenant, project).await? {
            Some(record) if record.deleting => Err(BackendError::BeingDeleted {
                kind,
                name: project.to_string(),
                region: self.region.clone(),
            }),
            Some(record) => Ok(record.organization),
            None => Err(self.not_found(kind, project)),
        }
    }

    /// Marks a record as being deleted (a compare-and-set, so a record
    /// deleted meanwhile is not brought back).
    async fn mark_deleting(&self, kind: ResourceKind, name: &str) -> Result<()> {
        let Some(entry) = self.kv.entry(key(kind, name)).await.map_err(unavailable)? else {
            return Ok(());
        };
        if entry.operation != kv::Operation::Put {
            return Ok(());
        }
        let mut record = Record::decode(entry.value)
            .map_err(|e| BackendError::Internal(format!("undecodable record {name}: {e}")))?;
        if record.deleting {
            return Ok(());
        }
        record.deleting = true;
        match self
            .kv
            .update(
                key(kind, name),
                Bytes::from(record.encode_to_vec()),
                entry.revision,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Changed under us: deleted, or marked by a racing delete.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Makes `change` to a resource's record with a compare-and-set, so its
    /// etag is checked against the very revision it replaces. A record
    /// being deleted takes no change.
    async fn update<T: Message + Default>(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        name: &str,
        change: &impl Change<T>,
    ) -> Result<T> {
        for _ in 0..16 {
            let entry = self.kv.entry(key(kind, name)).await.map_err(unavailable)?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                return Err(self.not_found(kind, name));
            };
            let mut record = Record::decode(entry.value)
                .map_err(|e| BackendError::Internal(format!("undecodable record {name}: {e}")))?;
            if !tenant.allows(&record.organization) {
                return Err(self.not_found(kind, name));
            }
            if record.deleting {
                return Err(BackendError::BeingDeleted {
                    kind,
                    name: name.to_string(),
                    region: self.region.clone(),
                });
            }
            let mut value: T = Self::decode(name, &record)?;
            change.make(&mut value, &self.region)?;
            record.value = value.encode_to_vec();
            match self
                .kv
                .update(
                    key(kind, name),
                    Bytes::from(record.encode_to_vec()),
                    entry.revision,
                )
                .await
            {
                Ok(_) => return Ok(value),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "{name} kept changing under the update; retry"
        )))
    }

    /// Creates a child of a project (`projects/{p}/...`).
    async fn insert_child<T: Message + Default>(
        &self,
        kind: ResourceKind,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
        value: T,
    ) -> Result<T> {
        if !request_id.is_empty() {
            if let Some(first) = self
                .replay(kind, &request_key(kind, tenant, request_id))
                .await?
            {
                return Ok(first);
            }
        }
        let org = self.project_org(tenant, top_level(name)).await?;
        self.insert(kind, tenant, request_id, name, &org, value)
            .await
    }
}

#[async_trait]
impl Backend for KvBackend {
    fn kind(&self) -> &'static str {
        "kv"
    }

    async fn count_resources(&self, organization: &str) -> Result<ResourceCounts> {
        self.count(organization).await
    }

    async fn begin_delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        // Only a project has a delete long enough to be seen half-way.
        if kind == ResourceKind::Project {
            self.mark_deleting(kind, name).await?;
        }
        Ok(())
    }

    async fn create_project(
        &self,
        tenant: &Tenant,
        request_id: &str,
        project: Project,
    ) -> Result<Project> {
        let (name, org) = (project.name.clone(), project.organization.clone());
        self.insert(
            ResourceKind::Project,
            tenant,
            request_id,
            &name,
            &org,
            project,
        )
        .await
    }

    async fn get_project(&self, tenant: &Tenant, name: &str) -> Result<Project> {
        let kind = ResourceKind::Project;
        match self.visible(kind, tenant, name).await? {
            Some(record) => Self::decode(name, &record).map(|p| shown(p, &record)),
            None => Err(self.not_found(kind, name)),
        }
    }

    async fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>> {
        let page = self
            .index
            .read(|t| t.page(ResourceKind::Project, filter))
            .await?;
        page.iter()
            .map(|(name, record)| Self::decode(name, record).map(|p| shown(p, record)))
            .collect()
    }

    async fn update_project(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project> {
        self.update(ResourceKind::Project, tenant, name, change)
            .await
    }

    async fn incarnation(&self, tenant: &Tenant, name: &str) -> Result<String> {
        let kind = ResourceKind::Project;
        self.visible(kind, tenant, name)
            .await?
            .map(|record| record.request)
            .ok_or_else(|| self.not_found(kind, name))
    }

    async fn delete_project(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let kind = ResourceKind::Project;
        let record = self
            .visible(kind, tenant, name)
            .await?
            .ok_or_else(|| self.not_found(kind, name))?;
        // Marked first, so no child is made under it from now on; then the
        // children, the project last: a delete cut short leaves a project
        // that a retried delete finds and finishes, never children without
        // their project.
        self.mark_deleting(kind, name).await?;
        self.remove_children(ResourceKind::Membership, name).await?;
        let freed = ResourceCounts {
            projects: 1,
            networks: self.remove_children(ResourceKind::Network, name).await?,
            access_rules: self.remove_children(ResourceKind::AccessRule, name).await?,
            ..Default::default()
        };
        self.remove(kind, name, &record).await?;
        Ok(Removed {
            request_key: record.request.clone(),
            organization: record.organization,
            freed,
        })
    }

    async fn create_user(&self, tenant: &Tenant, request_id: &str, user: User) -> Result<User> {
        let name = user.name.clone();
        let org = top_level(&name).to_string();
        self.insert(ResourceKind::User, tenant, request_id, &name, &org, user)
            .await
    }

    async fn get_user(&self, tenant: &Tenant, name: &str) -> Result<User> {
        self.get(ResourceKind::User, tenant, name).await
    }

    async fn list_users(&self, filter: &Filter) -> Result<Vec<User>> {
        self.list(ResourceKind::User, filter).await
    }

    async fn update_user(&self, tenant: &Tenant, name: &str, change: &UserChange) -> Result<User> {
        self.update(ResourceKind::User, tenant, name, change).await
    }

    async fn delete_user(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let record = self
            .remove_visible(ResourceKind::User, tenant, name)
            .await?;
        let memberships = self.index.read(|t| t.memberships_of(name)).await?;
        for m in memberships {
            let Some(r) = self.record(ResourceKind::Membership, &m).await? else {
                continue;
            };
            let membership: Membership = Self::decode(&m, &r)?;
            if membership.user == name {
                self.remove(ResourceKind::Membership, &m, &r).await?;
            }
        }
        Ok(Removed {
            request_key: record.request.clone(),
            organization: record.organization,
            freed: ResourceCounts {
                users: 1,
                ..Default::default()
            },
        })
    }

    async fn create_membership(
        &self,
        tenant: &Tenant,
        request_id: &str,
        membership: Membership,
    ) -> Result<Membership> {
        let kind = ResourceKind::Membership;
        if !request_id.is_empty() {
            if let Some(first) = self
                .replay(kind, &request_key(kind, tenant, request_id))
                .await?
            {
                return Ok(first);
            }
        }
        let name = membership.name.clone();
        let org = self.project_org(tenant, top_level(&name)).await?;
        if top_level(&membership.user) != org {
            return Err(BackendError::UserOfOtherOrganization {
                user: membership.user,
                organization: org,
            });
        }
        if self
            .record(ResourceKind::User, &membership.user)
            .await?
            .is_none()
        {
            return Err(BackendError::UserNotInRegion {
                user: membership.user,
                region: self.region.clone(),
            });
        }
        self.insert(kind, tenant, request_id, &name, &org, membership)
            .await
    }

    async fn get_membership(&self, tenant: &Tenant, name: &str) -> Result<Membership> {
        self.get(ResourceKind::Membership, tenant, name).await
    }

    async fn list_memberships(&self, filter: &Filter) -> Result<Vec<Membership>> {
        self.list(ResourceKind::Membership, filter).await
    }

    async fn delete_membership(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let record = self
            .remove_visible(ResourceKind::Membership, tenant, name)
            .await?;
        Ok(Removed {
            request_key: record.request.clone(),
            organization: record.organization,
            freed: ResourceCounts::default(),
        })
    }

    async fn create_network(
        &self,
        tenant: &Tenant,
        request_id: &str,
        network: Network,
    ) -> Result<Network> {
        let name = network.name.clone();
        self.insert_child(ResourceKind::Network, tenant, request_id, &name, network)
            .await
    }

    async fn get_network(&self, tenant: &Tenant, name: &str) -> Result<Network> {
        self.get(ResourceKind::Network, tenant, name).await
    }

    async fn list_networks(&self, filter: &Filter) -> Result<Vec<Network>> {
        self.list(ResourceKind::Network, filter).await
    }

    async fn update_network(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &NetworkChange,
    ) -> Result<Network> {
        self.update(ResourceKind::Network, tenant, name, change)
            .await
    }

    async fn delete_network(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let record = self
            .remove_visible(ResourceKind::Network, tenant, name)
            .await?;
        Ok(Removed {
            request_key: record.request.clone(),
            organization: record.organization,
            freed: ResourceCounts {
                networks: 1,
                ..Default::default()
            },
        })
    }

    async fn create_access_rule(
        &self,
        tenant: &Tenant,
        request_id: &str,
        rule: AccessRule,
    ) -> Result<AccessRule> {
        let name = rule.name.clone();
        self.insert_child(ResourceKind::AccessRule, tenant, request_id, &name, rule)
            .await
    }

    async fn get_access_rule(&self, tenant: &Tenant, name: &str) -> Result<AccessRule> {
        self.get(ResourceKind::AccessRule, tenant, name).await
    }

    async fn list_access_rules(&self, filter: &Filter) -> Result<Vec<AccessRule>> {
        self.list(ResourceKind::AccessRule, filter).await
    }

    async fn update_access_rule(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &AccessRuleChange,
    ) -> Result<AccessRule> {
        self.update(ResourceKind::AccessRule, tenant, name, change)
            .await
    }

    async fn delete_access_rule(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let record = self
            .remove_visible(ResourceKind::AccessRule, tenant, name)
            .await?;
        Ok(Removed {
            request_key: record.request.clone(),
            organization: record.organization,
            freed: ResourceCounts {
                access_rules: 1,
                ..Default::default()
            },
        })
    }
}
