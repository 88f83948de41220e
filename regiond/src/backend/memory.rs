//! The in-memory backend, for demos and tests.
//!
//! Everything lives in this process: a restart loses every resource and
//! every remembered request id, and two instances of the same region do not
//! see each other's resources.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use async_trait::async_trait;
use nordlys_proto::pb::nordlys::v1::{
    AccessRule, Membership, Network, Project, ResourceCounts, User,
};
use tokio::sync::RwLock;

use super::{
    top_level, AccessRuleChange, Backend, BackendError, Change, Filter, NetworkChange,
    ProjectChange, Removed, ResourceKind, Result, Tenant, UserChange,
};

/// A region kept in memory: one sorted map per kind of resource, so lists
/// come out ordered by name, behind one lock, so a create checks its
/// preconditions and inserts in one step.
///
/// **Data is lost on restart**: this backend is for demos and tests only.
#[derive(Debug)]
pub struct MemoryBackend {
    region: String,
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    projects: Table<Project>,
    users: Table<User>,
    memberships: Table<Membership>,
    networks: Table<Network>,
    access_rules: Table<AccessRule>,
}

/// (tenant key, request id).
type RequestKey = (String, String);

#[derive(Debug)]
struct Row<T> {
    /// The owning organization, `organizations/{org}`.
    organization: String,
    /// The request id it was created with, forgotten when it is deleted.
    request: Option<RequestKey>,
    /// The same as [`super::request_key`] gives it (empty without one).
    request_key: String,
    value: T,
}

#[derive(Debug)]
struct Table<T> {
    kind: ResourceKind,
    rows: BTreeMap<String, Row<T>>,
    /// Which resource each request id created.
    requests: HashMap<RequestKey, String>,
}

impl<T: Clone> Table<T> {
    fn new(kind: ResourceKind) -> Table<T> {
        Table {
            kind,
            rows: BTreeMap::new(),
            requests: HashMap::new(),
        }
    }

    /// The resource first created with `request_id` by this tenant.
    fn replay(&self, tenant: &Tenant, request_id: &str) -> Option<T> {
        if request_id.is_empty() {
            return None;
        }
        let key = (tenant.key().to_string(), request_id.to_string());
        let name = self.requests.get(&key)?;
        self.rows.get(name).map(|row| row.value.clone())
    }

    fn visible(&self, tenant: &Tenant, name: &str) -> Option<&Row<T>> {
        self.rows
            .get(name)
            .filter(|row| tenant.allows(&row.organization))
    }

    /// Makes `change` to a resource the tenant sees, if its etag holds.
    fn update(
        &mut self,
        tenant: &Tenant,
        name: &str,
        region: &str,
        change: &impl Change<T>,
    ) -> Result<T> {
        let row = self
            .rows
            .get_mut(name)
            .filter(|row| tenant.allows(&row.organization))
            .ok_or_else(|| not_found(self.kind, name, region))?;
        change.make(&mut row.value, region)?;
        Ok(row.value.clone())
    }

    fn get(&self, tenant: &Tenant, name: &str, region: &str) -> Result<T> {
        self.visible(tenant, name)
            .map(|row| row.value.clone())
            .ok_or_else(|| not_found(self.kind, name, region))
    }

    fn insert(
        &mut self,
        tenant: &Tenant,
        request_id: &str,
        name: &str,
        organization: &str,
        value: T,
        region: &str,
    ) -> Result<T> {
        if self.rows.contains_key(name) {
            return Err(BackendError::AlreadyExists {
                kind: self.kind,
                name: name.to_string(),
                region: region.to_string(),
            });
        }
        let request =
            (!request_id.is_empty()).then(|| (tenant.key().to_string(), request_id.to_string()));
        if let Some(key) = &request {
            self.requests.insert(key.clone(), name.to_string());
        }
        let request_key = if request_id.is_empty() {
            String::new()
        } else {
            super::request_key(self.kind, tenant, request_id)
        };
        self.rows.insert(
            name.to_string(),
            Row {
                organization: organization.to_string(),
                request,
                request_key,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// Removes a resource and forgets its request id, so a later create
    /// with that id (a retry after a rollback) creates it again.
    fn remove(&mut self, name: &str) -> Option<Row<T>> {
        let row = self.rows.remove(name)?;
        if let Some(key) = &row.request {
            self.requests.remove(key);
        }
        Some(row)
    }

    /// Removes every resource `doomed` picks; returns how many.
    fn remove_where(&mut self, doomed: impl Fn(&str, &T) -> bool) -> i64 {
        let names: Vec<String> = self
            .rows
            .iter()
            .filter(|(name, row)| doomed(name, &row.value))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &names {
            self.remove(name);
        }
        names.len() as i64
    }

    fn list(&self, filter: &Filter) -> Vec<T> {
        self.rows
            .range::<str, _>((Bound::Excluded(filter.after.as_str()), Bound::Unbounded))
            .filter(|(name, row)| filter.matches(name, &row.organization))
            .take(filter.limit)
            .map(|(_, row)| row.value.clone())
            .collect()
    }
}

fn not_found(kind: ResourceKind, name: &str, region: &str) -> BackendError {
    BackendError::NotFound {
        kind,
        name: name.to_string(),
        region: region.to_string(),
    }
}

impl MemoryBackend {
    /// An empty region.
    pub fn new(region: impl Into<String>) -> MemoryBackend {
        MemoryBackend {
            region: region.into(),
            state: RwLock::new(State {
                projects: Table::new(ResourceKind::Project),
                users: Table::new(ResourceKind::User),
                memberships: Table::new(ResourceKind::Membership),
                networks: Table::new(ResourceKind::Network),
                access_rules: Table::new(ResourceKind::AccessRule),
            }),
        }
    }

    /// The organization of a project the tenant may see, or NOT_FOUND for
    /// the project.
    fn project_org(&self, state: &State, tenant: &Tenant, project: &str) -> Result<String> {
        state
            .projects
            .visible(tenant, project)
            .map(|row| row.organization.clone())
            .ok_or_else(|| not_found(ResourceKind::Project, project, &self.region))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create_project(
        &self,
        tenant: &Tenant,
        request_id: &str,
        project: Project,
    ) -> Result<Project> {
        let mut state = self.state.write().await;
        if let Some(first) = state.projects.replay(tenant, request_id) {
            return Ok(first);
        }
        let (name, org) = (project.name.clone(), project.organization.clone());
        state
            .projects
            .insert(tenant, request_id, &name, &org, project, &self.region)
    }

    async fn get_project(&self, tenant: &Tenant, name: &str) -> Result<Project> {
        self.state
            .read()
            .await
            .projects
            .get(tenant, name, &self.region)
    }

    async fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>> {
        Ok(self.state.read().await.projects.list(filter))
    }

    async fn update_project(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project> {
        self.state
            .write()
            .await
            .projects
            .update(tenant, name, &self.region, change)
    }

    async fn incarnation(&self, tenant: &Tenant, name: &str) -> Result<String> {
        let state = self.state.read().await;
        state
            .projects
            .visible(tenant, name)
            .map(|row| row.request_key.clone())
            .ok_or_else(|| not_found(ResourceKind::Project, name, &self.region))
    }

    async fn delete_project(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let mut state = self.state.write().await;
        let organization = self.project_org(&state, tenant, name)?;
        let request_key = state
            .projects
            .remove(name)
            .map(|row| row.request_key)
            .unwrap_or_default();
        let prefix = format!("{name}/");
        let inside = |child: &str| child.starts_with(&prefix);
        state.memberships.remove_where(|n, _| inside(n));
        let freed = ResourceCounts {
            projects: 1,
            networks: state.networks.remove_where(|n, _| inside(n)),
            access_rules: state.access_rules.remove_where(|n, _| inside(n)),
            ..Default::default()
        };
        Ok(Removed {
            request_key,
            organization,
            freed,
        })
    }

    async fn create_user(&self, tenant: &Tenant, request_id: &str, user: User) -> Result<User> {
        let mut state = self.state.write().await;
        if let Some(first) = state.users.replay(tenant, request_id) {
            return Ok(first);
        }
        let name = user.name.clone();
        let org = top_level(&name).to_string();
        state
            .users
            .insert(tenant, request_id, &name, &org, user, &self.region)
    }

    async fn get_user(&self, tenant: &Tenant, name: &str) -> Result<User> {
        self.state
            .read()
            .await
            .users
            .get(tenant, name, &self.region)
    }

    async fn list_users(&self, filter: &Filter) -> Result<Vec<User>> {
        Ok(self.state.read().await.users.list(filter))
    }

    async fn update_user(&self, tenant: &Tenant, name: &str, change: &UserChange) -> Result<User> {
        self.state
            .write()
            .await
            .users
            .update(tenant, name, &self.region, change)
    }

    async fn delete_user(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let mut state = self.state.write().await;
        let organization = state
            .users
            .visible(tenant, name)
            .map(|row| row.organization.clone())
            .ok_or_else(|| not_found(ResourceKind::User, name, &self.region))?;
        let request_key = state
            .users
            .remove(name)
            .map(|row| row.request_key)
            .unwrap_or_default();
        state.memberships.remove_where(|_, m| m.user == name);
        Ok(Removed {
            request_key,
            organization,
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
        let mut state = self.state.write().await;
        if let Some(first) = state.memberships.replay(tenant, request_id) {
            return Ok(first);
        }
        let name = membership.name.clone();
        let org = self.project_org(&state, tenant, top_level(&name))?;
        if top_level(&membership.user) != org {
            return Err(BackendError::UserOfOtherOrganization {
                user: membership.user,
                organization: org,
            });
        }
        if !state.users.rows.contains_key(&membership.user) {
            return Err(BackendError::UserNotInRegion {
                user: membership.user,
                region: self.region.clone(),
            });
        }
        state
            .memberships
            .insert(tenant, request_id, &name, &org, membership, &self.region)
    }

    async fn get_membership(&self, tenant: &Tenant, name: &str) -> Result<Membership> {
        self.state
            .read()
            .await
            .memberships
            .get(tenant, name, &self.region)
    }

    async fn list_memberships(&self, filter: &Filter) -> Result<Vec<Membership>> {
        Ok(self.state.read().await.memberships.list(filter))
    }

    async fn delete_membership(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let mut state = self.state.write().await;
        let organization = state
            .memberships
            .visible(tenant, name)
            .map(|row| row.organization.clone())
            .ok_or_else(|| not_found(ResourceKind::Membership, name, &self.region))?;
        let request_key = state
            .memberships
            .remove(name)
            .map(|row| row.request_key)
            .unwrap_or_default();
        Ok(Removed {
            request_key,
            organization,
            freed: ResourceCounts::default(),
        })
    }

    async fn create_network(
        &self,
        tenant: &Tenant,
        request_id: &str,
        network: Network,
    ) -> Result<Network> {
        let mut state = self.state.write().await;
        if let Some(first) = state.networks.replay(tenant, request_id) {
            return Ok(first);
        }
        let name = network.name.clone();
        let org = self.project_org(&state, tenant, top_level(&name))?;
        state
            .networks
            .insert(tenant, request_id, &name, &org, network, &self.region)
    }

    async fn get_network(&self, tenant: &Tenant, name: &str) -> Result<Network> {
        self.state
            .read()
            .await
            .networks
            .get(tenant, name, &self.region)
    }

    async fn list_networks(&self, filter: &Filter) -> Result<Vec<Network>> {
        Ok(self.state.read().await.networks.list(filter))
    }

    async fn update_network(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &NetworkChange,
    ) -> Result<Network> {
        self.state
            .write()
            .await
            .networks
            .update(tenant, name, &self.region, change)
    }

    async fn delete_network(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let mut state = self.state.write().await;
        let organization = state
            .networks
            .visible(tenant, name)
            .map(|row| row.organization.clone())
            .ok_or_else(|| not_found(ResourceKind::Network, name, &self.region))?;
        let request_key = state
            .networks
            .remove(name)
            .map(|row| row.request_key)
            .unwrap_or_default();
        Ok(Removed {
            request_key,
            organization,
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
        let mut state = self.state.write().await;
        if let Some(first) = state.access_rules.replay(tenant, request_id) {
            return Ok(first);
        }
        let name = rule.name.clone();
        let org = self.project_org(&state, tenant, top_level(&name))?;
        state
            .access_rules
            .insert(tenant, request_id, &name, &org, rule, &self.region)
    }

    async fn get_access_rule(&self, tenant: &Tenant, name: &str) -> Result<AccessRule> {
        self.state
            .read()
            .await
            .access_rules
            .get(tenant, name, &self.region)
    }

    async fn list_access_rules(&self, filter: &Filter) -> Result<Vec<AccessRule>> {
        Ok(self.state.read().await.access_rules.list(filter))
    }

    async fn update_access_rule(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &AccessRuleChange,
    ) -> Result<AccessRule> {
        self.state
            .write()
            .await
            .access_rules
            .update(tenant, name, &self.region, change)
    }

    async fn delete_access_rule(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let mut state = self.state.write().await;
        let organization = state
            .access_rules
            .visible(tenant, name)
            .map(|row| row.organization.clone())
            .ok_or_else(|| not_found(ResourceKind::AccessRule, name, &self.region))?;
        let request_key = state
            .access_rules
            .remove(name)
            .map(|row| row.request_key)
            .unwrap_or_default();
        Ok(Removed {
            request_key,
            organization,
            freed: ResourceCounts {
                access_rules: 1,
                ..Default::default()
            },
        })
    }
}
