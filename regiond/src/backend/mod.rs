//! Where a region's resources really live. The handlers decide what a call
//! may do; a [`Backend`] does it against the region's infrastructure
//! (memory, a JetStream KV bucket, or an OpenStack region's Keystone and
//! Neutron, or a Kubernetes/OKD cluster).
//!
//! A backend answers a create atomically: it returns the resource first
//! created with the same request id (per tenant), refuses a name that exists,
//! and checks the preconditions (the parent project, the user) in the same
//! step, so two racing creates never both win.

mod error;
#[cfg(feature = "kube")]
mod kube;
mod kv;
mod kv_index;
mod memory;
#[cfg(feature = "openstack")]
mod openstack;
mod region;

use async_trait::async_trait;
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, Membership, Network, Project, ResourceCounts, User,
};

#[cfg(feature = "kube")]
pub use self::kube::KubeBackend;
pub use error::{BackendError, Refusal, ResourceKind};
pub use kv::KvBackend;
pub use memory::MemoryBackend;
#[cfg(feature = "openstack")]
pub use openstack::{OpenStackBackend, ProjectQuotaUsage, QuotaUse};
pub use region::CRASH_AFTER_ENV;
pub(crate) use region::{CrashHook, Region};

/// Whose resources a call may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenant {
    /// Every organization's (operators).
    Any,
    /// Only those of this organization, `organizations/{org}`.
    Organization(String),
}

impl Tenant {
    /// Whether a resource of `organization` is visible to this tenant.
    pub fn allows(&self, organization: &str) -> bool {
        match self {
            Tenant::Any => true,
            Tenant::Organization(own) => own == organization,
        }
    }

    /// The scope of request ids: the same id from two tenants names two
    /// different creates.
    pub fn key(&self) -> &str {
        match self {
            Tenant::Any => "",
            Tenant::Organization(own) => own,
        }
    }
}

/// Which resources a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only resources of this organization; `None` for all.
    pub organization: Option<String>,
    /// Only resources under this parent (`projects/{p}` or
    /// `organizations/{o}`); `None` for all.
    pub parent: Option<String>,
    /// Only resources whose name sorts after this one.
    pub after: String,
    /// At most this many.
    pub limit: usize,
}

impl Filter {
    /// Whether a resource `name` of `organization` passes the filter (the
    /// `after` bound and the limit are the caller's job).
    pub fn matches(&self, name: &str, organization: &str) -> bool {
        self.organization
            .as_deref()
            .is_none_or(|org| org == organization)
            && self.parent.as_deref().is_none_or(|parent| {
                name.strip_prefix(parent)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            && name > self.after.as_str()
    }
}

/// What a delete removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Removed {
    /// The organization the removed resources belonged to.
    pub organization: String,
    /// How many of each quota-counted kind went, dependants included.
    pub freed: ResourceCounts,
    /// The [`request_key`] the resource was created with; empty when it had
    /// none or the backend does not keep it.
    pub request_key: String,
}

/// The key of a create's request id: the same id from two tenants, or for
/// two kinds, names two different creates. Request ids may hold `:`, which
/// NATS KV keys may not: base64url them.
pub fn request_key(kind: ResourceKind, tenant: &Tenant, request_id: &str) -> String {
    use base64::Engine;
    let tenant = match tenant {
        Tenant::Any => "operator",
        Tenant::Organization(org) => org,
    };
    format!(
        "q.{}.{tenant}.{}",
        kind.key_prefix(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(request_id)
    )
}

/// A change an update makes to a resource of type `T`, made only if the
/// caller's etag (when it sent one) is still the resource's.
pub trait Change<T> {
    /// Refuses the change when the resource moved since the etag the
    /// caller read.
    fn check(&self, current: &T, region: &str) -> Result<()>;

    /// Applies the change to `value`.
    fn apply(&self, value: &mut T);

    /// Checks the etag against `value`, then changes it: what every
    /// backend does with the value it is about to replace.
    fn make(&self, value: &mut T, region: &str) -> Result<()> {
        self.check(value, region)?;
        self.apply(value);
        Ok(())
    }
}

/// What an update of a project changes: each field given is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectChange {
    /// The new display name.
    pub display_name: Option<String>,
    /// The new description.
    pub description: Option<String>,
    /// The regions the project is now placed in (the gateway creates it in
    /// the new ones and deletes it from the ones left out).
    pub regions: Option<Vec<String>>,
    /// Change only if the project's etag is this one (empty: whatever it
    /// is).
    pub etag: String,
}

impl Change<Project> for ProjectChange {
    fn check(&self, current: &Project, region: &str) -> Result<()> {
        check_etag(
            &self.etag,
            || nordlys_api::update::project_etag(current),
            ResourceKind::Project,
            &current.name,
            region,
        )
    }

    fn apply(&self, project: &mut Project) {
        if let Some(display_name) = &self.display_name {
            project.display_name.clone_from(display_name);
        }
        if let Some(description) = &self.description {
            project.description.clone_from(description);
        }
        if let Some(regions) = &self.regions {
            project.regions.clone_from(regions);
        }
    }
}

/// What an update of a user changes: each field given is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// The new display name.
    pub display_name: Option<String>,
    /// The new e-mail address.
    pub email: Option<String>,
    /// The regions the user is now placed in (the gateway places it in the
    /// new ones first).
    pub regions: Option<Vec<String>>,
    /// Change only if the user's etag is this one (empty: whatever it is).
    pub etag: String,
}

impl Change<User> for UserChange {
    fn check(&self, current: &User, region: &str) -> Result<()> {
        check_etag(
            &self.etag,
            || nordlys_api::update::user_etag(current),
            ResourceKind::User,
            &current.name,
            region,
        )
    }

    fn apply(&self, user: &mut User) {
        if let Some(display_name) = &self.display_name {
            user.display_name.clone_from(display_name);
        }
        if let Some(email) = &self.email {
            user.email.clone_from(email);
        }
        if let Some(regions) = &self.regions {
            user.regions.clone_from(regions);
        }
    }
}

/// What an update of a network changes: its DNS servers, in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkChange {
    /// The new DNS servers.
    pub dns_servers: Option<Vec<String>>,
    /// Change only if the network's etag is this one (empty: whatever it
    /// is).
    pub etag: String,
}

impl Change<Network> for NetworkChange {
    fn check(&self, current: &Network, region: &str) -> Result<()> {
        check_etag(
            &self.etag,
            || nordlys_api::update::network_etag(current),
            ResourceKind::Network,
            &current.name,
            region,
        )
    }

    fn apply(&self, network: &mut Network) {
        if let Some(dns) = &self.dns_servers {
            network.dns_servers.clone_from(dns);
        }
    }
}

/// What an update of an access rule changes: its description (every other
/// field of a rule is what it admits, which never changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRuleChange {
    /// The new description.
    pub description: Option<String>,
    /// Change only if the rule's etag is this one (empty: whatever it is).
    pub etag: String,
}

impl Change<AccessRule> for AccessRuleChange {
    fn check(&self, current: &AccessRule, region: &str) -> Result<()> {
        check_etag(
            &self.etag,
            || nordlys_api::update::access_rule_etag(current),
            ResourceKind::AccessRule,
            &current.name,
            region,
        )
    }

    fn apply(&self, rule: &mut AccessRule) {
        if let Some(description) = &self.description {
            rule.description.clone_from(description);
        }
    }
}

/// [`BackendError::EtagMismatch`] unless `want` is empty or the etag.
pub(crate) fn check_etag(
    want: &str,
    actual: impl FnOnce() -> String,
    kind: ResourceKind,
    name: &str,
    region: &str,
) -> Result<()> {
    if want.is_empty() || want == actual() {
        return Ok(());
    }
    Err(BackendError::EtagMismatch {
        kind,
        name: name.to_string(),
        region: region.to_string(),
    })
}

/// The result of a backend call.
pub type Result<T> = std::result::Result<T, BackendError>;

/// A region's resource store. Every call is confined to a [`Tenant`]: a
/// resource of another organization is treated as absent.
///
/// Creates receive complete resources (names, region status and create time
/// set by the handlers) and return what is stored: the new resource, or the
/// one first created with `request_id` when it is not empty.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name as service metadata shows it (`memory`).
    fn kind(&self) -> &'static str;

    /// The kinds of resource this region's cloud has no place for: calls
    /// for them answer [`BackendError::Unsupported`], and discovery tells
    /// clients. The default supports everything.
    fn unsupported(&self) -> &'static [ResourceKind] {
        &[]
    }

    /// Creates a project of `project.organization`.
    async fn create_project(
        &self,
        tenant: &Tenant,
        request_id: &str,
        project: Project,
    ) -> Result<Project>;
    /// Gets a project.
    async fn get_project(&self, tenant: &Tenant, name: &str) -> Result<Project>;
    /// Lists projects, sorted by name.
    async fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>>;
    /// Deletes a project with its memberships, networks and access rules.
    /// Changes a project's fields as `change` says, unless its etag moved
    /// ([`BackendError::EtagMismatch`]).
    async fn update_project(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project>;
    async fn delete_project(&self, tenant: &Tenant, name: &str) -> Result<Removed>;

    /// Creates a user (its organization is in its name).
    async fn create_user(&self, tenant: &Tenant, request_id: &str, user: User) -> Result<User>;
    /// Gets a user.
    async fn get_user(&self, tenant: &Tenant, name: &str) -> Result<User>;
    /// Lists users, sorted by name.
    async fn list_users(&self, filter: &Filter) -> Result<Vec<User>>;
    /// Changes a user's fields as `change` says, unless its etag moved.
    async fn update_user(&self, tenant: &Tenant, name: &str, change: &UserChange) -> Result<User>;
    /// Deletes a user with its memberships.
    async fn delete_user(&self, tenant: &Tenant, name: &str) -> Result<Removed>;

    /// Grants a role: the project (`projects/{p}` of the membership's name)
    /// must exist, and the user, of the project's organization, must be in
    /// this region.
    async fn create_membership(
        &self,
        tenant: &Tenant,
        request_id: &str,
        membership: Membership,
    ) -> Result<Membership>;
    /// Gets a membership.
    async fn get_membership(&self, tenant: &Tenant, name: &str) -> Result<Membership>;
    /// Lists memberships, sorted by name.
    async fn list_memberships(&self, filter: &Filter) -> Result<Vec<Membership>>;
    /// Removes a membership.
    async fn delete_membership(&self, tenant: &Tenant, name: &str) -> Result<Removed>;

    /// Creates a network in an existing project.
    async fn create_network(
        &self,
        tenant: &Tenant,
        request_id: &str,
        network: Network,
    ) -> Result<Network>;
    /// Gets a network.
    async fn get_network(&self, tenant: &Tenant, name: &str) -> Result<Network>;
    /// Lists networks, sorted by name.
    async fn list_networks(&self, filter: &Filter) -> Result<Vec<Network>>;
    /// Changes a network in place as `change` says, unless its etag moved.
    async fn update_network(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &NetworkChange,
    ) -> Result<Network>;
    /// Deletes a network.
    async fn delete_network(&self, tenant: &Tenant, name: &str) -> Result<Removed>;

    /// Creates an access rule in an existing project.
    async fn create_access_rule(
        &self,
        tenant: &Tenant,
        request_id: &str,
        rule: AccessRule,
    ) -> Result<AccessRule>;
    /// Gets an access rule.
    async fn get_access_rule(&self, tenant: &Tenant, name: &str) -> Result<AccessRule>;
    /// Lists access rules, sorted by name.
    async fn list_access_rules(&self, filter: &Filter) -> Result<Vec<AccessRule>>;
    /// Changes an access rule's description, unless its etag moved.
    async fn update_access_rule(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &AccessRuleChange,
    ) -> Result<AccessRule>;
    /// Deletes an access rule.
    async fn delete_access_rule(&self, tenant: &Tenant, name: &str) -> Result<Removed>;

    /// Marks a resource as being deleted before its delete starts, where the
    /// backend can show that (gets and lists say DELETING, and nothing new
    /// is made under it). The default does nothing.
    async fn begin_delete(&self, _kind: ResourceKind, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Finishes the steps of a create that did not all happen (a cloud
    /// service was down half-way), as a retried create would. The default
    /// has nothing to finish.
    async fn finish(&self, _kind: ResourceKind, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Removes what a create that did not happen left behind in the cloud
    /// (a network made without its subnet: invisible, yet a real network),
    /// before its reservation is given back. Leaves a whole resource alone.
    /// The default has nothing to remove.
    async fn abandon(&self, _kind: ResourceKind, _name: &str) -> Result<()> {
        Ok(())
    }

    /// The key under which a deleted resource's request id is remembered,
    /// as this backend's deletes report it in [`Removed::request_key`].
    fn request_key(&self, kind: ResourceKind, tenant: &Tenant, request_id: &str) -> String {
        request_key(kind, tenant, request_id)
    }

    /// Whether the backend keeps the request id of a `kind` it made, so its
    /// delete can report it. Where it cannot (a Keystone role assignment
    /// has nowhere to keep one), the region keeps it beside the backend.
    fn keeps_request_id(&self, _kind: ResourceKind) -> bool {
        true
    }

    /// Cloud resources this installation made whose owner no record knows
    /// any more (a Keystone project deleted behind Nordlys's back leaves its
    /// Neutron networks and security group): names the backend understands
    /// in [`Backend::remove_stray`]. Region-wide, since such a resource can
    /// no longer be told to belong to an organization. The default (a
    /// backend whose records are its resources) has none.
    async fn strays(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Sizes the cloud's quotas of every project of `organization` here
    /// with quota tier `tier` (empty: this region's default), as the quota
    /// service granted it; how many projects were sized. The default (a
    /// backend with no cloud quotas) sizes nothing.
    async fn apply_tier(&self, _organization: &str, _tier: &str) -> Result<u32> {
        Ok(0)
    }

    /// What tells this region's project `name` from an earlier one of the
    /// same name and create time (a project moved out of the region and
    /// back keeps its create time): the key of the request that made it
    /// here, or the cloud's own id. Empty when the backend has nothing to
    /// tell them apart.
    async fn incarnation(&self, _tenant: &Tenant, _name: &str) -> Result<String> {
        Ok(String::new())
    }

    /// Project `name`'s cloud quotas here (limits and use), as `tenant`
    /// may see it; `None` when this backend has no cloud quotas. NOT_FOUND
    /// when the project is not here.
    async fn cloud_quota(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<nordlys_proto::pb::nordlys::v1::CloudQuota>> {
        self.get_project(tenant, name).await?;
        Ok(None)
    }

    /// Sizes again every project whose tier differs from what this region's
    /// configuration now gives its organization (the operator changed it),
    /// leaving those sized by a tier the quota service granted; run at
    /// start. How many it sized. The default has no tiers.
    async fn reconcile_tiers(&self) -> Result<usize> {
        Ok(0)
    }

    /// The quota tier the quota service gives `organization` now, carried
    /// by a create: the projects it makes from now on get it. The default
    /// has nothing to size.
    fn tier_hint(&self, _organization: &str, _tier: &str) {}

    /// Removes a stray named by [`Backend::strays`].
    async fn remove_stray(&self, name: &str) -> Result<()> {
        Err(BackendError::Internal(format!(
            "this backend has no stray resources (asked to remove {name:?})"
        )))
    }

    /// How many counted resources `organization` has here. The default
    /// pages through the lists, so it costs what the organization holds.
    async fn count_resources(&self, organization: &str) -> Result<ResourceCounts> {
        let filter = || Filter {
            organization: Some(organization.to_string()),
            limit: COUNT_PAGE,
            ..Filter::default()
        };
        Ok(ResourceCounts {
            projects: count_pages(
                filter(),
                |f| async move { self.list_projects(&f).await },
                |p| &p.name,
            )
            .await?,
            users: count_pages(
                filter(),
                |f| async move { self.list_users(&f).await },
                |u| &u.name,
            )
            .await?,
            networks: count_pages(
                filter(),
                |f| async move { self.list_networks(&f).await },
                |n| &n.name,
            )
            .await?,
            access_rules: count_pages(
                filter(),
                |f| async move { self.list_access_rules(&f).await },
                |r| &r.name,
            )
            .await?,
        })
    }

    /// Resources of `organization` that lack what they need: networks and
    /// access rules whose project is gone.
    async fn orphans(&self, organization: &str) -> Result<Vec<String>> {
        let filter = Filter {
            organization: Some(organization.to_string()),
            limit: COUNT_PAGE,
            ..Filter::default()
        };
        let mut children = all_pages(
            filter.clone(),
            |f| async move { self.list_networks(&f).await },
            |n| &n.name,
        )
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect::<Vec<_>>();
        children.extend(
            all_pages(
                filter,
                |f| async move { self.list_access_rules(&f).await },
                |r| &r.name,
            )
            .await?
            .into_iter()
            .map(|r| r.name),
        );
        let mut orphans = Vec::new();
        let mut known: std::collections::BTreeMap<String, bool> = Default::default();
        for child in children {
            let project = top_level(&child).to_string();
            let exists = match known.get(&project) {
                Some(exists) => *exists,
                None => {
                    let exists = match self.get_project(&Tenant::Any, &project).await {
                        Ok(_) => true,
                        Err(BackendError::NotFound { .. }) => false,
                        Err(e) => return Err(e),
                    };
                    known.insert(project, exists);
                    exists
                }
            };
            if !exists {
                orphans.push(child);
            }
        }
        Ok(orphans)
    }
}

/// How many resources a count or orphan scan reads at a time.
const COUNT_PAGE: usize = 1000;

/// Everything a list returns, page by page.
pub(crate) async fn all_pages<T, F, Fut>(
    mut filter: Filter,
    list: F,
    name: fn(&T) -> &String,
) -> Result<Vec<T>>
where
    F: Fn(Filter) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    let mut all = Vec::new();
    loop {
        let page = list(filter.clone()).await?;
        let full = page.len() >= filter.limit;
        let next = page.last().map(|last| name(last).clone());
        all.extend(page);
        match next {
            Some(after) if full => filter.after = after,
            _ => return Ok(all),
        }
    }
}

/// Counts what a list returns, page by page.
async fn count_pages<T, F, Fut>(filter: Filter, list: F, name: fn(&T) -> &String) -> Result<i64>
where
    F: Fn(Filter) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    Ok(all_pages(filter, list, name).await?.len() as i64)
}

/// The id of an organization name (`acme` of `organizations/acme`).
pub(crate) fn org_id(organization: &str) -> &str {
    organization
        .strip_prefix("organizations/")
        .unwrap_or(organization)
}

/// The last segment of a resource name.
pub(crate) fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// A child's lookup whose project is missing reports the child missing;
/// other errors (an unreachable cloud) stay what they are.
pub(crate) fn absent_parent(error: BackendError, child: BackendError) -> BackendError {
    match error {
        BackendError::NotFound { .. } => child,
        other => other,
    }
}

/// An RFC 3339 time as kept in a cloud's tags or annotations.
pub(crate) fn timestamp(text: Option<&str>) -> Option<prost_types::Timestamp> {
    text.and_then(|t| <prost_types::Timestamp as std::str::FromStr>::from_str(t).ok())
}

/// Sorts by name, then applies the filter's `after` and limit.
pub(crate) fn page<T>(mut items: Vec<T>, filter: &Filter, name: impl Fn(&T) -> &str) -> Vec<T> {
    items.sort_by(|a, b| name(a).cmp(name(b)));
    items.dedup_by(|a, b| name(a) == name(b));
    items
        .into_iter()
        .filter(|item| name(item) > filter.after.as_str())
        .take(filter.limit)
        .collect()
}

/// The top-level resource a name starts with: `projects/{p}` for
/// `projects/{p}/networks/{n}`, `organizations/{o}` for a user (its owner).
pub fn top_level(name: &str) -> &str {
    let mut slashes = name.match_indices('/').map(|(i, _)| i);
    match slashes.nth(1) {
        Some(end) => &name[..end],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_parent_org_and_after() {
        let f = Filter {
            organization: Some("organizations/acme".into()),
            parent: Some("projects/web".into()),
            after: "projects/web/networks/b".into(),
            limit: 10,
        };
        assert!(f.matches("projects/web/networks/c", "organizations/acme"));
        assert!(!f.matches("projects/web/networks/a", "organizations/acme"));
        assert!(!f.matches("projects/web/networks/c", "organizations/other"));
        assert!(!f.matches("projects/webshop/networks/c", "organizations/acme"));
        assert!(Filter::default().matches("projects/x", "organizations/y"));
    }

    #[test]
    fn finds_the_top_level_resource() {
        assert_eq!(top_level("projects/web/networks/n1"), "projects/web");
        assert_eq!(top_level("projects/web"), "projects/web");
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod kv_tests;
