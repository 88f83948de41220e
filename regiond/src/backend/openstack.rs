//! The OpenStack backend: a region's resources in its Keystone and Neutron
//! (and the quotas of its Nova and Cinder).
//!
//! Mapping (also in the README's architecture section):
//! - organization `organizations/acme` → Keystone domain `nordlys-acme`
//!   (`{namespace}-{org}`), created on first use;
//! - project `projects/web` → Keystone project `web` in that domain, tagged
//!   `nordlys`, `nordlys-org:acme`, `nordlys-project:web`, and with the
//!   Nordlys fields Keystone has no place for (`nordlys-name:`,
//!   `nordlys-regions:`, `nordlys-created:`, `nordlys-request:`,
//!   `nordlys-tier:`);
//! - user `organizations/acme/users/ada` → Keystone user `ada` in the
//!   organization's domain (email, and the Nordlys fields as `nordlys_*`
//!   extra attributes), no password;
//! - membership → a role assignment of Keystone's bootstrapped `admin`,
//!   `member` or `reader` role to the user on the project;
//! - network → a Neutron network and one subnet (IPv4 or IPv6, gateway, DNS
//!   servers) owned by the project, both named after the network id;
//! - access rule → a rule of the project's security group `nordlys`, whose
//!   rules are exactly the project's access rules (Neutron's default egress
//!   rules are removed); the rule's description carries its id;
//! - quota tier → the Neutron, Nova and Cinder quotas of the organization's
//!   tier (one table; each name belongs to one service, see `quota_sets`),
//!   set when the project is created and again at start-up when the
//!   configured tier changed; the tier tag is written once all are set.
//!
//! Every create looks up before it creates, and request ids are kept in the
//! cloud (a project tag, a user attribute, a network or rule description),
//! so a create retried after a crash at any step finishes the job without
//! duplicates. Deletes remove dependants first and count "already gone" as
//! done, so an interrupted delete completes when repeated.

mod cloud;
mod codec;
mod quota_sets;
#[cfg(test)]
mod quota_tests;

pub use self::quota_sets::{ProjectQuotaUsage, QuotaUse};

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, AccessRule, Membership, Network, Project, ProjectRole, RegionStatus,
    ResourceCounts, User,
};
use serde_json::Value;
use tokio::sync::OnceCell;

use self::cloud::{
    Cloud, KsProject, KsUser, NGroup, NNetwork, NRule, NSubnet, RuleSpec, SubnetSpec,
};
use self::codec::{escape, unescape, RuleLabel, Tags, MAX_NEUTRON_DESCRIPTION};
use self::quota_sets::{QuotaSetService, TierQuotas};
use super::{
    absent_parent, leaf, org_id, page, timestamp, top_level, AccessRuleChange, Backend,
    BackendError, Change, CrashHook, Filter, NetworkChange, ProjectChange, Refusal, Region,
    Removed, ResourceKind, Result, Tenant, UserChange,
};
use crate::config::OpenStackConfig;

/// The security group that holds a project's access rules.
const SECURITY_GROUP: &str = "nordlys";
/// How strays name a Neutron network and a security group (by id).
const STRAY_NETWORK: &str = "neutron/networks/";
const STRAY_GROUP: &str = "neutron/security-groups/";

/// The tag key of a project whose Neutron side is not finished.
const INCOMPLETE_KEY: &str = "incomplete";
/// Tag key marking a project sized by the tier the quota service granted,
/// which this region's `organization_tiers` no longer overrides.
const GRANTED_KEY: &str = "tier-granted";
/// The Keystone tag of a project whose delete has begun: gets and lists
/// show it DELETING, and nothing new is made under it.
const DELETING_KEY: &str = "deleting";

/// User attributes (Keystone extras) Nordlys keeps.
const ATTR_NAME: &str = "nordlys_name";
const ATTR_DISPLAY_NAME: &str = "nordlys_display_name";
const ATTR_REGIONS: &str = "nordlys_regions";
const ATTR_CREATED: &str = "nordlys_create_time";
const ATTR_REQUEST: &str = "nordlys_request";

/// A region backed by OpenStack. See the module docs for the mapping.
#[derive(Debug)]
pub struct OpenStackBackend {
    region: Region,
    cloud: Cloud,
    tags: Tags,
    config: OpenStackConfig,
    /// The configured tiers' quotas, sorted by service.
    tiers: BTreeMap<String, TierQuotas>,
    /// Keystone role ids by name, read once.
    roles: OnceCell<HashMap<String, String>>,
    /// Organizations' tiers as the quota service last gave them (with a
    /// create, or ApplyTier); they win over `organization_tiers`.
    granted_tiers: std::sync::Mutex<HashMap<String, String>>,
    crash: CrashHook,
}

fn role_name(role: i32) -> Option<&'static str> {
    match ProjectRole::try_from(role) {
        Ok(ProjectRole::Admin) => Some("admin"),
        Ok(ProjectRole::Member) => Some("member"),
        Ok(ProjectRole::Reader) => Some("reader"),
        _ => None,
    }
}

fn role_of(name: &str) -> Option<ProjectRole> {
    match name {
        "admin" => Some(ProjectRole::Admin),
        "member" => Some(ProjectRole::Member),
        "reader" => Some(ProjectRole::Reader),
        _ => None,
    }
}

/// How a security group this installation made begins its description:
/// it names the namespace, so a group whose project is gone is still known
/// to be ours (and not another installation's on the same cloud).
fn group_description_prefix(namespace: &str) -> String {
    format!("Managed by Nordlys ({namespace}): the access rules of ")
}

/// The strongest of several roles (admin, then member, then reader).
fn strongest(roles: impl IntoIterator<Item = ProjectRole>) -> Option<ProjectRole> {
    roles.into_iter().min_by_key(|r| *r as i32)
}

/// The settle layer's key for a request key as this backend keeps it in
/// the cloud (`{org}:{request id}`, `operator:{request id}`), so that a
/// deleted resource's request id is remembered as on every backend.
fn remembered(kind: ResourceKind, kept: Option<&str>) -> String {
    let Some((tenant, request_id)) = kept.and_then(|k| k.split_once(':')) else {
        return String::new();
    };
    let tenant = match tenant {
        "operator" => Tenant::Any,
        org => Tenant::Organization(format!("organizations/{org}")),
    };
    super::request_key(kind, &tenant, request_id)
}

/// The settle layer's key for a deleted rule's request: the hash its label
/// keeps, under a prefix of its own.
fn rule_request_key(hash: &str) -> String {
    format!("access-rule-request#{hash}")
}

/// What a rule's label keeps of the request that made it.
fn rule_request_hash(tenant: &Tenant, request_id: &str) -> String {
    RuleLabel::hash(&Tags::request_key(tenant.key(), request_id))
}

fn is_ipv6(cidr: &str) -> bool {
    cidr.contains(':')
}

impl OpenStackBackend {
    /// Connects to the cloud `config` names and checks the quota tiers:
    /// every name known to a service, and that service in the catalog.
    pub async fn connect(region: &str, config: &OpenStackConfig) -> Result<OpenStackBackend> {
        let mut tiers = BTreeMap::new();
        for (tier, values) in &config.tiers {
            let quotas = TierQuotas::split(tier, values).map_err(BackendError::Internal)?;
            tiers.insert(tier.clone(), quotas);
        }
        let cloud = Cloud::connect(config).await?;
        for (tier, quotas) in &tiers {
            for (service, values, catalog) in [
                (QuotaSetService::Compute, &quotas.compute, "compute"),
                (QuotaSetService::Volume, &quotas.volume, "volumev3"),
            ] {
                if !values.is_empty() && !cloud.has(service) {
                    return Err(BackendError::Internal(format!(
                        "quota tier {tier} sets {} quotas ({}) but the cloud's catalog has no \
                         {catalog} endpoint in its region",
                        service.name(),
                        values.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        Ok(OpenStackBackend {
            region: Region::new(region),
            cloud,
            tags: Tags::new(&config.namespace),
            config: config.clone(),
            tiers,
            roles: OnceCell::new(),
            granted_tiers: std::sync::Mutex::default(),
            crash: CrashHook::from_env(),
        })
    }

    // -- organizations -----------------------------------------------------

    /// The organization's domain, created on first use.
    async fn ensure_domain(&self, org: &str) -> Result<cloud::Domain> {
        let name = self.tags.domain(org);
        if let Some(domain) = self.cloud.domain(&name).await? {
            return Ok(domain);
        }
        let description = format!("Nordlys organization organizations/{org}");
        let tags = vec![self.tags.managed().to_string(), self.tags.tag("org", org)];
        match self.cloud.create_domain(&name, &description, tags).await {
            Ok(domain) => Ok(domain),
            // Another create won the race.
            Err(e) if e.is_conflict() => self
                .cloud
                .domain(&name)
                .await?
                .ok_or_else(|| BackendError::from(e)),
            Err(e) => Err(e.into()),
        }
    }

    // -- projects ----------------------------------------------------------

    async fn find_project(&self, id: &str) -> Result<Option<KsProject>> {
        let tags = self.tags.all_of(&[self.tags.tag("project", id)]);
        Ok(self.cloud.projects_tagged(&tags).await?.into_iter().next())
    }

    /// The Nordlys project a Keystone project stands for, with its
    /// organization; `None` when it is not one of ours.
    fn project_from(&self, ks: &KsProject) -> Option<Project> {
        let t = &self.tags;
        let org = t.find(&ks.tags, "org")?;
        let id = t.find(&ks.tags, "project").unwrap_or(&ks.name);
        Some(Project {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("projects/{id}"),
            organization: format!("organizations/{org}"),
            display_name: t.find(&ks.tags, "name").map(unescape).unwrap_or_default(),
            description: ks.description.clone().unwrap_or_default(),
            regions: t
                .find(&ks.tags, "regions")
                .map(|r| {
                    r.split('+')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            region_status: match t.find(&ks.tags, INCOMPLETE_KEY) {
                _ if t.find(&ks.tags, DELETING_KEY).is_some() => vec![RegionStatus {
                    region: self.region.to_string(),
                    state: State::Deleting as i32,
                    code: 0,
                    message: "being deleted; a repeated delete finishes it".to_string(),
                }],
                Some(_) => vec![RegionStatus {
                    region: self.region.to_string(),
                    state: State::Incomplete as i32,
                    code: tonic::Code::Unavailable as i32,
                    message: "made in Keystone; its Neutron security group and quota tier are \
                              not set yet (a retried create, or this region shortly, sets them)"
                        .to_string(),
                }],
                None => self.region.ready(),
            },
            create_time: timestamp(t.find(&ks.tags, "created")),
            etag: String::new(),
        })
    }

    /// A project the tenant may see and add to: not being deleted.
    async fn writable_project(&self, tenant: &Tenant, name: &str) -> Result<(KsProject, Project)> {
        let (ks, project) = self.visible_project(tenant, name).await?;
        if self.tags.find(&ks.tags, DELETING_KEY).is_some() {
            return Err(self.region.being_deleted(ResourceKind::Project, name));
        }
        Ok((ks, project))
    }

    /// A project the tenant may see: its Keystone project and Nordlys form.
    async fn visible_project(&self, tenant: &Tenant, name: &str) -> Result<(KsProject, Project)> {
        let id = name.strip_prefix("projects/").unwrap_or(name);
        if let Some(ks) = self.find_project(id).await? {
            if let Some(project) = self.project_from(&ks) {
                if tenant.allows(&project.organization) {
                    return Ok((ks, project));
                }
            }
        }
        Err(self.region.not_found(ResourceKind::Project, name))
    }

    /// The Keystone projects a filter can match, by their Keystone id.
    async fn projects_for(&self, filter: &Filter) -> Result<HashMap<String, (KsProject, Project)>> {
        let mut tags = Vec::new();
        if let Some(org) = &filter.organization {
            tags.push(self.tags.tag("org", org_id(org)));
        }
        if let Some(parent) = &filter.parent {
            if let Some(id) = parent.strip_prefix("projects/") {
                tags.push(self.tags.tag("project", id));
            }
        }
        let found = self.cloud.projects_tagged(&self.tags.all_of(&tags)).await?;
        Ok(found
            .into_iter()
            .filter_map(|ks| {
                let project = self.project_from(&ks)?;
                Some((ks.id.clone(), (ks, project)))
            })
            .collect())
    }

    /// The Neutron side of a project (its security group and quota tier),
    /// done after the Keystone side and redone by a retried create.
    async fn finish_project(&self, ks: &KsProject) -> Result<Project> {
        let mut project = self
            .project_from(ks)
            .ok_or_else(|| BackendError::Internal(format!("project {} lost its tags", ks.id)))?;
        self.ensure_security_group(&ks.id, &project.name).await?;
        self.apply_tier(ks, org_id(&project.organization)).await?;
        // Only now is it whole: until this tag goes, the region shows it
        // INCOMPLETE.
        let incomplete = self.tags.tag(INCOMPLETE_KEY, "neutron");
        if ks.tags.contains(&incomplete) {
            self.cloud.remove_project_tag(&ks.id, &incomplete).await?;
        }
        project.region_status = self.region.ready();
        Ok(project)
    }

    /// Sets the Neutron, Nova and Cinder quotas of the organization's tier
    /// and then records the tier in a tag, so a failure half way leaves the
    /// old tag and the next try (a retried create, the start-up
    /// reconciliation) sets them all again. No tier: the services'
    /// defaults.
    /// The tier `org`'s projects get: the one the quota service granted
    /// (when this region defines it), else this configuration's.
    fn wanted_tier(&self, org: &str) -> (String, bool) {
        let granted = self
            .granted_tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(org)
            .cloned();
        match granted {
            Some(tier) if tier.is_empty() || self.tiers.contains_key(&tier) => (tier, true),
            _ => (self.config.tier_of(org).to_string(), false),
        }
    }

    async fn apply_tier(&self, ks: &KsProject, org: &str) -> Result<()> {
        let (want, granted) = self.wanted_tier(org);
        let want = want.as_str();
        let have = self.tags.find(&ks.tags, "tier").unwrap_or_default();
        let services = [QuotaSetService::Compute, QuotaSetService::Volume];
        match self.tiers.get(want) {
            Some(quotas) => {
                if !quotas.network.is_empty() {
                    self.cloud.set_quota(&ks.id, &quotas.network).await?;
                }
                for (service, values) in services.into_iter().zip([&quotas.compute, &quotas.volume])
                {
                    if !values.is_empty() {
                        self.cloud.set_quota_set(service, &ks.id, values).await?;
                    }
                }
            }
            None if !have.is_empty() => {
                self.cloud.reset_quota(&ks.id).await?;
                for service in services.into_iter().filter(|s| self.cloud.has(*s)) {
                    self.cloud.reset_quota_set(service, &ks.id).await?;
                }
            }
            None => {}
        }
        if want != have {
            if !want.is_empty() {
                self.cloud
                    .add_project_tag(&ks.id, &self.tags.tag("tier", want))
                    .await?;
            }
            if !have.is_empty() {
                self.cloud
                    .remove_project_tag(&ks.id, &self.tags.tag("tier", have))
                    .await?;
            }
        }
        let marked = self.tags.find(&ks.tags, GRANTED_KEY).is_some();
        if granted && !marked {
            self.cloud
                .add_project_tag(&ks.id, &self.tags.tag(GRANTED_KEY, "quota"))
                .await?;
        }
        Ok(())
    }

    /// A project's Nova and Cinder limits and what it uses of them (for the
    /// gateway to show); a service not in the region's catalog is `None`.
    pub async fn project_quota_usage(
        &self,
        tenant: &Tenant,
        project: &str,
    ) -> Result<ProjectQuotaUsage> {
        let (ks, _) = self.visible_project(tenant, project).await?;
        let mut usage = ProjectQuotaUsage::default();
        for (service, slot) in [
            (QuotaSetService::Compute, &mut usage.compute),
            (QuotaSetService::Volume, &mut usage.volume),
        ] {
            if self.cloud.has(service) {
                *slot = Some(self.cloud.quota_usage(service, &ks.id).await?);
            }
        }
        Ok(usage)
    }

    /// Every Neutron network and security group this installation made,
    /// as stray names with their owning Keystone project id.
    async fn neutron_of_ours(&self) -> Result<Vec<(String, String)>> {
        let mut ours: Vec<(String, String)> = self
            .cloud
            .networks(None, None, None)
            .await?
            .into_iter()
            .filter(|n| self.tags.is_our_network(&n.description))
            .map(|n| (format!("{STRAY_NETWORK}{}", n.id), n.tenant_id))
            .collect();
        let marker = group_description_prefix(self.tags.managed());
        for group in self
            .cloud
            .security_groups(None, Some(SECURITY_GROUP))
            .await?
            .into_iter()
            .filter(|g| g.name == SECURITY_GROUP)
        {
            // A group made before its description named the namespace is
            // known by its rules' labels.
            let mine = group
                .description
                .as_deref()
                .is_some_and(|d| d.starts_with(&marker))
                || group
                    .security_group_rules
                    .iter()
                    .any(|r| self.label(r).is_some());
            if mine {
                ours.push((format!("{STRAY_GROUP}{}", group.id), group.tenant_id));
            }
        }
        Ok(ours)
    }

    // -- security groups ---------------------------------------------------

    /// Access rule `name` as the tenant may see it: its Keystone project,
    /// the Nordlys project, the Neutron rule and its label.
    async fn visible_rule(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<(KsProject, Project, NRule, RuleLabel)> {
        let missing = || self.region.not_found(ResourceKind::AccessRule, name);
        let (ks, project) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let group = self.security_group(&ks.id).await?.ok_or_else(missing)?;
        let (rule, label) = group
            .security_group_rules
            .into_iter()
            .find_map(|r| {
                let label = self.label(&r).filter(|l| l.id == leaf(name))?;
                Some((r, label))
            })
            .ok_or_else(missing)?;
        Ok((ks, project, rule, label))
    }

    /// The project's security group, if it has one.
    async fn security_group(&self, project_id: &str) -> Result<Option<NGroup>> {
        let mut groups = self
            .cloud
            .security_groups(Some(project_id), Some(SECURITY_GROUP))
            .await?;
        // Two racing creates may have made two; always use the same one.
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(groups.into_iter().find(|g| g.name == SECURITY_GROUP))
    }

    /// The project's security group, created when missing, holding only
    /// access rules (Neutron gives a new group two allow-all egress rules).
    async fn ensure_security_group(&self, project_id: &str, project: &str) -> Result<NGroup> {
        let mut group = match self.security_group(project_id).await? {
            Some(group) => group,
            None => {
                let description =
                    format!("{}{project}", group_description_prefix(self.tags.managed()));
                let made = self
                    .cloud
                    .create_security_group(project_id, SECURITY_GROUP, &description)
                    .await?;
                // A racing finish of the same project (a retry, the
                // sweeper) may have made one too: keep the lowest id, which
                // everyone uses, and remove the others while they are empty.
                let groups = self
                    .cloud
                    .security_groups(Some(project_id), Some(SECURITY_GROUP))
                    .await?;
                let keep = groups
                    .iter()
                    .filter(|g| g.name == SECURITY_GROUP)
                    .map(|g| g.id.clone())
                    .min()
                    .unwrap_or_else(|| made.id.clone());
                for extra in groups
                    .iter()
                    .filter(|g| g.name == SECURITY_GROUP && g.id != keep)
                    .filter(|g| {
                        g.security_group_rules
                            .iter()
                            .all(|r| self.label(r).is_none())
                    })
                {
                    self.cloud.delete_security_group(&extra.id).await?;
                }
                match groups.into_iter().find(|g| g.id == keep) {
                    Some(group) => group,
                    None => made,
                }
            }
        };
        let (ours, strays): (Vec<NRule>, Vec<NRule>) =
            std::mem::take(&mut group.security_group_rules)
                .into_iter()
                .partition(|r| self.label(r).is_some());
        for rule in strays {
            self.cloud.delete_rule(&rule.id).await?;
        }
        group.security_group_rules = ours;
        Ok(group)
    }

    fn label(&self, rule: &NRule) -> Option<RuleLabel> {
        RuleLabel::decode(self.tags.managed(), rule.description.as_deref()?)
    }

    fn rule_from(&self, project: &str, rule: &NRule, label: RuleLabel) -> AccessRule {
        AccessRule {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("{project}/accessRules/{}", label.id),
            region: self.region.to_string(),
            direction: codec::direction_from(&rule.direction) as i32,
            protocol: codec::protocol_from(rule.protocol.as_deref()) as i32,
            port_range_min: rule.port_range_min.unwrap_or(0),
            port_range_max: rule.port_range_max.unwrap_or(0),
            remote_cidr: rule.remote_ip_prefix.clone().unwrap_or_default(),
            description: label.description,
            create_time: timestamp(rule.created_at.as_deref()),
            etag: String::new(),
        }
    }

    /// The access rules of one project's group, with the descriptions
    /// changed since their creation (kept on the Keystone project `ks`).
    fn rules_of(&self, project: &str, ks: &KsProject, group: &NGroup) -> Vec<AccessRule> {
        group
            .security_group_rules
            .iter()
            .filter_map(|r| Some(self.described(ks, r, self.rule_from(project, r, self.label(r)?))))
            .collect()
    }

    /// The Keystone project attribute that holds the changed description of
    /// access rule `id` (Nordlys's id). Neutron's ML2 plugin cannot change a
    /// rule, not even its description, and replacing the rule would open a
    /// gap in what it admits. One attribute per rule, so updates of two
    /// rules never undo each other; named by the rule's id, so a project
    /// holds at most one per rule id it ever used; the value names the
    /// Neutron rule it describes, so a rule made again under the same id
    /// starts from its own description.
    fn description_key(&self, id: &str) -> String {
        self.tags.tag("rule-description", id)
    }

    /// `rule` with its changed description, if it has one.
    fn described(&self, ks: &KsProject, neutron: &NRule, mut rule: AccessRule) -> AccessRule {
        let kept = ks.extra.get(&self.description_key(leaf(&rule.name)));
        if let Some(Value::Object(kept)) = kept {
            if kept.get("rule").and_then(Value::as_str) == Some(neutron.id.as_str()) {
                if let Some(text) = kept.get("description").and_then(Value::as_str) {
                    rule.description = text.to_string();
                }
            }
        }
        rule
    }

    // -- users -------------------------------------------------------------

    fn user_from(&self, org: &str, user: &KsUser) -> Option<User> {
        let name = user.extra.get(ATTR_NAME)?.as_str()?.to_string();
        if top_level(&name) != format!("organizations/{org}") {
            return None;
        }
        let text = |key: &str| {
            user.extra
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(User {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name,
            display_name: text(ATTR_DISPLAY_NAME),
            email: user.email.clone().unwrap_or_default(),
            regions: user
                .extra
                .get(ATTR_REGIONS)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            region_status: self.region.ready(),
            create_time: timestamp(Some(&text(ATTR_CREATED))),
            etag: String::new(),
        })
    }

    /// A user the tenant may see, with its Keystone form.
    async fn visible_user(&self, tenant: &Tenant, name: &str) -> Result<Option<(KsUser, User)>> {
        let org = top_level(name);
        if !tenant.allows(org) {
            return Ok(None);
        }
        let org = org_id(org);
        let Some(domain) = self.cloud.domain(&self.tags.domain(org)).await? else {
            return Ok(None);
        };
        let Some(ks) = self.cloud.user(&domain.id, leaf(name)).await? else {
            return Ok(None);
        };
        Ok(self.user_from(org, &ks).map(|user| (ks, user)))
    }

    // -- memberships -------------------------------------------------------

    async fn role_ids(&self) -> Result<&HashMap<String, String>> {
        self.roles
            .get_or_try_init(|| async {
                let roles = self.cloud.roles().await?;
                Ok::<_, BackendError>(roles.into_iter().map(|r| (r.name, r.id)).collect())
            })
            .await
    }

    async fn role_id(&self, role: i32) -> Result<String> {
        let name = role_name(role).ok_or_else(|| BackendError::Refused {
            reason: Refusal::InvalidArgument,
            service: "keystone".into(),
            message: format!("role {role} has no Keystone role"),
        })?;
        self.role_ids().await?.get(name).cloned().ok_or_else(|| {
            BackendError::Internal(format!(
                "Keystone has no {name} role (bootstrap creates it)"
            ))
        })
    }

    /// The Nordlys roles a user holds directly on a project.
    async fn roles_on(&self, project_id: &str, user_id: &str) -> Result<Vec<ProjectRole>> {
        let by_id: HashMap<String, String> = self
            .role_ids()
            .await?
            .iter()
            .map(|(name, id)| (id.clone(), name.clone()))
            .collect();
        Ok(self
            .cloud
            .assignments(Some(project_id), Some(user_id))
            .await?
            .iter()
            .filter_map(|a| role_of(by_id.get(&a.role.id)?))
            .collect())
    }

    fn membership(&self, project: &str, user: &str, role: ProjectRole) -> Membership {
        Membership {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("{project}/members/{}", leaf(user)),
            user: user.to_string(),
            role: role as i32,
            region_status: self.region.ready(),
            // Keystone keeps no time for role assignments.
            create_time: None,
            etag: String::new(),
        }
    }

    /// The project, the user and the user's strongest role there.
    async fn visible_membership(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<(KsProject, Project, KsUser, String, ProjectRole)> {
        let missing = || self.region.not_found(ResourceKind::Membership, name);
        let (ks, project) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let user_name = format!("{}/users/{}", project.organization, leaf(name));
        let (user, _) = self
            .visible_user(tenant, &user_name)
            .await?
            .ok_or_else(missing)?;
        let role = strongest(self.roles_on(&ks.id, &user.id).await?).ok_or_else(missing)?;
        Ok((ks, project, user, user_name, role))
    }

    // -- networks ----------------------------------------------------------

    fn network_from(&self, project: &str, net: &NNetwork, subnet: &NSubnet) -> Network {
        Network {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("{project}/networks/{}", net.name),
            region: self.region.to_string(),
            cidr: subnet.cidr.clone(),
            gateway_ip: subnet.gateway_ip.clone().unwrap_or_default(),
            dns_servers: subnet.dns_nameservers.clone(),
            create_time: timestamp(net.created_at.as_deref()),
            etag: String::new(),
        }
    }

    /// A network the tenant may see: its Neutron network and subnet.
    async fn network_parts(&self, tenant: &Tenant, name: &str) -> Result<(NNetwork, NSubnet)> {
        let missing = || self.region.not_found(ResourceKind::Network, name);
        let (ks, _) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let net = self
            .find_network(&ks.id, leaf(name))
            .await?
            .ok_or_else(missing)?;
        let subnet = self
            .cloud
            .subnets(None, Some(&net.id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(missing)?;
        Ok((net, subnet))
    }

    /// One of our networks of a project, by its Nordlys id.
    async fn find_network(&self, project_id: &str, id: &str) -> Result<Option<NNetwork>> {
        Ok(self
            .cloud
            .networks(Some(project_id), Some(id), None)
            .await?
            .into_iter()
            .find(|n| n.name == id && self.tags.is_our_network(&n.description)))
    }

    /// Gives a network its subnet unless it has one (the second step of a
    /// create, redone by a retry after a crash between the two).
    async fn finish_network(
        &self,
        ks: &KsProject,
        project: &str,
        net: &NNetwork,
        want: &Network,
    ) -> Result<Network> {
        let subnet = match self
            .cloud
            .subnets(None, Some(&net.id))
            .await?
            .into_iter()
            .next()
        {
            Some(subnet) => subnet,
            None => {
                self.cloud
                    .create_subnet(SubnetSpec {
                        tenant: &ks.id,
                        network_id: &net.id,
                        name: &net.name,
                        cidr: &want.cidr,
                        ipv6: is_ipv6(&want.cidr),
                        gateway_ip: &want.gateway_ip,
                        dns: &want.dns_servers,
                    })
                    .await?
            }
        };
        Ok(self.network_from(project, net, &subnet))
    }
}

#[async_trait]
impl Backend for OpenStackBackend {
    fn kind(&self) -> &'static str {
        "openstack"
    }

    /// Applies the configured quota tier to every project whose tier tag
    /// differs (the operator changed the organization's tier); run at start.
    async fn reconcile_tiers(&self) -> Result<usize> {
        let projects = self.cloud.projects_tagged(self.tags.managed()).await?;
        let mut changed = 0;
        for ks in &projects {
            let Some(org) = self.tags.find(&ks.tags, "org") else {
                continue;
            };
            // The quota service's tier wins over this configuration's.
            if self.tags.find(&ks.tags, GRANTED_KEY).is_some() {
                continue;
            }
            let want = self.config.tier_of(org);
            if self.tags.find(&ks.tags, "tier").unwrap_or_default() != want {
                self.apply_tier(ks, org).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn create_project(
        &self,
        tenant: &Tenant,
        request_id: &str,
        project: Project,
    ) -> Result<Project> {
        let id = leaf(&project.name).to_string();
        let org = org_id(&project.organization).to_string();
        let key = (!request_id.is_empty()).then(|| Tags::request_key(tenant.key(), request_id));
        let request_tag = key.as_ref().map(|k| self.tags.tag("request", k));
        let replay = |tag: String| async move {
            let tags = self.tags.all_of(&[tag]);
            Ok::<_, BackendError>(self.cloud.projects_tagged(&tags).await?.into_iter().next())
        };
        if let Some(tag) = &request_tag {
            if let Some(ks) = replay(tag.clone()).await? {
                return self.finish_project(&ks).await;
            }
        }
        if self.find_project(&id).await?.is_some() {
            return Err(self.region.exists(ResourceKind::Project, &project.name));
        }
        let domain = self.ensure_domain(&org).await?;
        let t = &self.tags;
        let mut tags = vec![
            t.managed().to_string(),
            t.tag("org", &org),
            t.tag("project", &id),
        ];
        if !project.display_name.is_empty() {
            tags.push(t.tag("name", &escape(&project.display_name)));
        }
        if !project.regions.is_empty() {
            tags.push(t.tag("regions", &project.regions.join("+")));
        }
        if let Some(created) = &project.create_time {
            tags.push(t.tag("created", &created.to_string()));
        }
        tags.extend(request_tag.clone());
        // Made whole by finish_project, which takes this tag away.
        tags.push(t.tag(INCOMPLETE_KEY, "neutron"));
        let ks = match self
            .cloud
            .create_project(&id, &domain.id, &project.description, tags)
            .await
        {
            Ok(ks) => ks,
            Err(e) if e.is_conflict() => {
                // A racing create with the same request id won: finish it.
                if let Some(tag) = request_tag {
                    if let Some(ks) = replay(tag).await? {
                        return self.finish_project(&ks).await;
                    }
                }
                return Err(self.region.exists(ResourceKind::Project, &project.name));
            }
            Err(e) => return Err(e.into()),
        };
        self.crash.point("keystone");
        self.finish_project(&ks).await
    }

    async fn get_project(&self, tenant: &Tenant, name: &str) -> Result<Project> {
        Ok(self.visible_project(tenant, name).await?.1)
    }

    async fn update_project(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project> {
        // Keystone has no conditional update: the etag is checked against a
        // fresh read, and description and tags change in one PATCH.
        let (ks, mut project) = self.writable_project(tenant, name).await?;
        change.make(&mut project, &self.region)?;
        let (name_tag, regions_tag) = (self.tags.tag("name", ""), self.tags.tag("regions", ""));
        let mut tags: Vec<String> = ks
            .tags
            .iter()
            .filter(|t| !t.starts_with(&name_tag) && !t.starts_with(&regions_tag))
            .cloned()
            .collect();
        if !project.display_name.is_empty() {
            tags.push(self.tags.tag("name", &escape(&project.display_name)));
        }
        tags.push(self.tags.tag("regions", &project.regions.join("+")));
        let ks = self
            .cloud
            .update_project(&ks.id, &project.description, tags)
            .await?;
        self.project_from(&ks)
            .ok_or_else(|| self.region.not_found(ResourceKind::Project, name))
    }

    async fn finish(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Project {
            return Ok(());
        }
        let (ks, _) = self.visible_project(&Tenant::Any, name).await?;
        if self.tags.find(&ks.tags, INCOMPLETE_KEY).is_some() {
            self.finish_project(&ks).await?;
            tracing::info!(%name, "finished a project whose Neutron side was left undone");
        }
        Ok(())
    }

    async fn abandon(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Network {
            return Ok(());
        }
        let ks = match self.visible_project(&Tenant::Any, top_level(name)).await {
            Ok((ks, _)) => ks,
            // No project, nothing of it left.
            Err(BackendError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(net) = self.find_network(&ks.id, leaf(name)).await? else {
            return Ok(());
        };
        if self.cloud.subnets(None, Some(&net.id)).await?.is_empty() {
            self.cloud.delete_network(&net.id).await?;
            tracing::info!(%name, network = %net.id, "removed a network whose create stopped before its subnet");
        }
        Ok(())
    }

    fn request_key(&self, kind: ResourceKind, tenant: &Tenant, request_id: &str) -> String {
        match kind {
            // A rule keeps only a hash of its request key (see RuleLabel).
            ResourceKind::AccessRule => rule_request_key(&rule_request_hash(tenant, request_id)),
            _ => super::request_key(kind, tenant, request_id),
        }
    }

    fn keeps_request_id(&self, kind: ResourceKind) -> bool {
        kind != ResourceKind::Membership
    }

    async fn apply_tier(&self, organization: &str, tier: &str) -> Result<u32> {
        let org = org_id(organization);
        if !tier.is_empty() && !self.tiers.contains_key(tier) {
            return Err(BackendError::Refused {
                reason: Refusal::FailedPrecondition,
                service: "regiond".to_string(),
                message: format!(
                    "quota tier {tier:?} is not defined in region {} (its [openstack.tiers])",
                    self.region
                ),
            });
        }
        self.tier_hint(organization, tier);
        let tags = [self.tags.tag("org", org)];
        let projects = self.cloud.projects_tagged(&self.tags.all_of(&tags)).await?;
        let mut sized = 0u32;
        for ks in &projects {
            self.apply_tier(ks, org).await?;
            sized = sized.saturating_add(1);
        }
        tracing::info!(organization = %org, %tier, projects = sized, "quota tier applied");
        Ok(sized)
    }

    async fn cloud_quota(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<Option<nordlys_proto::pb::nordlys::v1::CloudQuota>> {
        let (ks, _) = self.visible_project(tenant, name).await?;
        let usage = self.project_quota_usage(tenant, name).await?;
        let neutron = self.cloud.neutron_quota_usage(&ks.id).await?;
        let (limits, used) = quota_sets::cloud_resources(&usage, &neutron);
        Ok(Some(nordlys_proto::pb::nordlys::v1::CloudQuota {
            region: self.region.to_string(),
            tier: self
                .tags
                .find(&ks.tags, "tier")
                .unwrap_or_default()
                .to_string(),
            limits: Some(limits),
            usage: Some(used),
        }))
    }

    fn tier_hint(&self, organization: &str, tier: &str) {
        self.granted_tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(org_id(organization).to_string(), tier.to_string());
    }

    async fn strays(&self) -> Result<Vec<String>> {
        // Neutron before Keystone: a project is made before anything of it
        // in Neutron, so whatever is listed here had its project by then.
        let candidates = self.neutron_of_ours().await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let live: HashSet<String> = self
            .cloud
            .projects_tagged(self.tags.managed())
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let ownerless: HashSet<String> = candidates
            .into_iter()
            .filter(|(_, owner)| !live.contains(owner))
            .map(|(name, _)| name)
            .collect();
        if ownerless.is_empty() {
            return Ok(Vec::new());
        }
        // A project deleted by Nordlys in between took its Neutron side
        // first: what is still there now was left behind.
        let mut strays: Vec<String> = self
            .neutron_of_ours()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| ownerless.contains(name))
            .collect();
        strays.sort();
        Ok(strays)
    }

    async fn remove_stray(&self, name: &str) -> Result<()> {
        if let Some(id) = name.strip_prefix(STRAY_NETWORK) {
            for subnet in self.cloud.subnets(None, Some(id)).await? {
                self.cloud.delete_subnet(&subnet.id).await?;
            }
            self.cloud.delete_network(id).await?;
        } else if let Some(id) = name.strip_prefix(STRAY_GROUP) {
            self.cloud.delete_security_group(id).await?;
        } else {
            return Err(BackendError::Internal(format!(
                "{name:?} names no stray Neutron resource"
            )));
        }
        tracing::warn!(stray = %name, "removed a Neutron resource of a project that is gone");
        Ok(())
    }

    async fn begin_delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        // Only a project has a delete long enough to be seen half-way.
        if kind != ResourceKind::Project {
            return Ok(());
        }
        let ks = match self.visible_project(&Tenant::Any, name).await {
            Ok((ks, _)) => ks,
            Err(BackendError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let tag = self.tags.tag(DELETING_KEY, "yes");
        if !ks.tags.contains(&tag) {
            self.cloud.add_project_tag(&ks.id, &tag).await?;
        }
        Ok(())
    }

    async fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>> {
        let projects = self.projects_for(filter).await?;
        let matching = projects
            .into_values()
            .map(|(_, p)| p)
            .filter(|p| filter.matches(&p.name, &p.organization))
            .collect();
        Ok(page(matching, filter, |p| &p.name))
    }

    async fn incarnation(&self, tenant: &Tenant, name: &str) -> Result<String> {
        // Keystone gives every project it makes an id of its own.
        let (ks, _) = self.visible_project(tenant, name).await?;
        Ok(ks.id)
    }

    async fn delete_project(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (ks, project) = self.visible_project(tenant, name).await?;
        let mut freed = ResourceCounts {
            projects: 1,
            ..Default::default()
        };
        // Neutron first (rules go with their groups), Keystone last, so the
        // project's tags stay to find everything until the end.
        for group in self.cloud.security_groups(Some(&ks.id), None).await? {
            if group.name == SECURITY_GROUP {
                freed.access_rules += self.rules_of(name, &ks, &group).len() as i64;
            }
            self.cloud.delete_security_group(&group.id).await?;
        }
        for subnet in self.cloud.subnets(Some(&ks.id), None).await? {
            self.cloud.delete_subnet(&subnet.id).await?;
        }
        for net in self.cloud.networks(Some(&ks.id), None, None).await? {
            if self.tags.is_our_network(&net.description) {
                freed.networks += 1;
            }
            self.cloud.delete_network(&net.id).await?;
        }
        self.cloud.reset_quota(&ks.id).await?;
        // Nova and Cinder keep a deleted project's quotas otherwise.
        for service in [QuotaSetService::Compute, QuotaSetService::Volume] {
            if self.cloud.has(service) {
                self.cloud.reset_quota_set(service, &ks.id).await?;
            }
        }
        for a in self.cloud.assignments(Some(&ks.id), None).await? {
            if let Some(user) = &a.user {
                self.cloud.revoke(&ks.id, &user.id, &a.role.id).await?;
            }
        }
        self.cloud.delete_project(&ks.id).await?;
        // A call that touched the project's security groups while this
        // delete ran (a sweeper finishing it, a racing create) makes Neutron
        // recreate its `default` group; with the Keystone project gone none
        // can start now, so clear what such a call left.
        for group in self.cloud.security_groups(Some(&ks.id), None).await? {
            self.cloud.delete_security_group(&group.id).await?;
        }
        Ok(Removed {
            request_key: remembered(ResourceKind::Project, self.tags.find(&ks.tags, "request")),
            organization: project.organization,
            freed,
        })
    }

    async fn create_user(&self, tenant: &Tenant, request_id: &str, user: User) -> Result<User> {
        let org = org_id(top_level(&user.name)).to_string();
        let id = leaf(&user.name).to_string();
        let key = (!request_id.is_empty()).then(|| Tags::request_key(tenant.key(), request_id));
        let domain = self.ensure_domain(&org).await?;
        let replay = || async {
            let Some(key) = &key else {
                return Ok::<_, BackendError>(None);
            };
            Ok(self
                .cloud
                .users(&domain.id)
                .await?
                .iter()
                .find(|u| u.extra.get(ATTR_REQUEST).and_then(Value::as_str) == Some(key.as_str()))
                .and_then(|u| self.user_from(&org, u)))
        };
        if let Some(first) = replay().await? {
            return Ok(first);
        }
        if self.cloud.user(&domain.id, &id).await?.is_some() {
            return Err(self.region.exists(ResourceKind::User, &user.name));
        }
        let mut extra = BTreeMap::new();
        extra.insert(ATTR_NAME.to_string(), Value::from(user.name.clone()));
        if !user.email.is_empty() {
            extra.insert("email".to_string(), Value::from(user.email.clone()));
        }
        if !user.display_name.is_empty() {
            extra.insert(
                ATTR_DISPLAY_NAME.to_string(),
                Value::from(user.display_name.clone()),
            );
        }
        extra.insert(ATTR_REGIONS.to_string(), Value::from(user.regions.clone()));
        if let Some(created) = &user.create_time {
            extra.insert(ATTR_CREATED.to_string(), Value::from(created.to_string()));
        }
        if let Some(key) = &key {
            extra.insert(ATTR_REQUEST.to_string(), Value::from(key.clone()));
        }
        match self.cloud.create_user(&domain.id, &id, extra).await {
            Ok(ks) => self.user_from(&org, &ks).ok_or_else(|| {
                BackendError::Internal(format!("user {} lost its attributes", ks.id))
            }),
            Err(e) if e.is_conflict() => match replay().await? {
                Some(first) => Ok(first),
                None => Err(self.region.exists(ResourceKind::User, &user.name)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn get_user(&self, tenant: &Tenant, name: &str) -> Result<User> {
        self.visible_user(tenant, name)
            .await?
            .map(|(_, user)| user)
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))
    }

    async fn list_users(&self, filter: &Filter) -> Result<Vec<User>> {
        let org = filter
            .organization
            .as_deref()
            .or(filter.parent.as_deref())
            .map(|o| org_id(top_level(o)).to_string());
        let domains = match &org {
            Some(org) => self
                .cloud
                .domain(&self.tags.domain(org))
                .await?
                .into_iter()
                .collect(),
            None => self.cloud.domains().await?,
        };
        let mut users = Vec::new();
        for domain in domains {
            let Some(org) = self.tags.org_of_domain(&domain.name) else {
                continue;
            };
            for ks in self.cloud.users(&domain.id).await? {
                if let Some(user) = self.user_from(org, &ks) {
                    if filter.matches(&user.name, top_level(&user.name)) {
                        users.push(user);
                    }
                }
            }
        }
        Ok(page(users, filter, |u| &u.name))
    }

    async fn update_user(&self, tenant: &Tenant, name: &str, change: &UserChange) -> Result<User> {
        // As for projects: the etag against a fresh read, then one PATCH.
        let (ks, mut user) = self
            .visible_user(tenant, name)
            .await?
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))?;
        change.make(&mut user, &self.region)?;
        let mut attributes = BTreeMap::new();
        if change.display_name.is_some() {
            attributes.insert(
                ATTR_DISPLAY_NAME.to_string(),
                Value::from(user.display_name.clone()),
            );
        }
        if change.email.is_some() {
            attributes.insert("email".to_string(), Value::from(user.email.clone()));
        }
        if change.regions.is_some() {
            attributes.insert(ATTR_REGIONS.to_string(), Value::from(user.regions.clone()));
        }
        let ks = self.cloud.update_user(&ks.id, attributes).await?;
        self.user_from(org_id(top_level(name)), &ks)
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))
    }

    async fn delete_user(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (ks, _) = self
            .visible_user(tenant, name)
            .await?
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))?;
        for a in self.cloud.assignments(None, Some(&ks.id)).await? {
            if let Some(project) = &a.scope.project {
                self.cloud.revoke(&project.id, &ks.id, &a.role.id).await?;
            }
        }
        self.cloud.delete_user(&ks.id).await?;
        Ok(Removed {
            request_key: remembered(
                ResourceKind::User,
                ks.extra.get(ATTR_REQUEST).and_then(Value::as_str),
            ),
            organization: top_level(name).to_string(),
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
        let project_name = top_level(&membership.name).to_string();
        let (ks, project) = self.writable_project(tenant, &project_name).await?;
        if top_level(&membership.user) != project.organization {
            return Err(BackendError::UserOfOtherOrganization {
                user: membership.user,
                organization: project.organization,
            });
        }
        let Some((user, _)) = self.visible_user(tenant, &membership.user).await? else {
            return Err(BackendError::UserNotInRegion {
                user: membership.user,
                region: self.region.to_string(),
            });
        };
        let role_id = self.role_id(membership.role).await?;
        let want = ProjectRole::try_from(membership.role).unwrap_or(ProjectRole::Unspecified);
        if let Some(have) = strongest(self.roles_on(&ks.id, &user.id).await?) {
            // Keystone keeps no request id on an assignment: a retried
            // grant (same request id, same role) is taken for the first.
            if !request_id.is_empty() && have == want {
                return Ok(self.membership(&project_name, &membership.user, have));
            }
            return Err(self
                .region
                .exists(ResourceKind::Membership, &membership.name));
        }
        self.cloud.grant(&ks.id, &user.id, &role_id).await?;
        Ok(self.membership(&project_name, &membership.user, want))
    }

    async fn get_membership(&self, tenant: &Tenant, name: &str) -> Result<Membership> {
        let (_, project, _, user, role) = self.visible_membership(tenant, name).await?;
        Ok(self.membership(&project.name, &user, role))
    }

    async fn list_memberships(&self, filter: &Filter) -> Result<Vec<Membership>> {
        let projects = self.projects_for(filter).await?;
        let by_id: HashMap<String, String> = self
            .role_ids()
            .await?
            .iter()
            .map(|(name, id)| (id.clone(), name.clone()))
            .collect();
        let mut memberships = Vec::new();
        for (ks, project) in projects.values() {
            let org = org_id(&project.organization);
            let Some(domain) = self.cloud.domain(&self.tags.domain(org)).await? else {
                continue;
            };
            let users: HashMap<String, User> = self
                .cloud
                .users(&domain.id)
                .await?
                .iter()
                .filter_map(|u| Some((u.id.clone(), self.user_from(org, u)?)))
                .collect();
            let mut roles: BTreeMap<String, Vec<ProjectRole>> = BTreeMap::new();
            for a in self.cloud.assignments(Some(&ks.id), None).await? {
                let (Some(user), Some(role)) =
                    (&a.user, by_id.get(&a.role.id).and_then(|n| role_of(n)))
                else {
                    continue;
                };
                if let Some(user) = users.get(&user.id) {
                    roles.entry(user.name.clone()).or_default().push(role);
                }
            }
            for (user, held) in roles {
                if let Some(role) = strongest(held) {
                    let m = self.membership(&project.name, &user, role);
                    if filter.matches(&m.name, &project.organization) {
                        memberships.push(m);
                    }
                }
            }
        }
        Ok(page(memberships, filter, |m| &m.name))
    }

    async fn delete_membership(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (ks, project, user, _, _) = self.visible_membership(tenant, name).await?;
        let held = self.roles_on(&ks.id, &user.id).await?;
        let ids = self.role_ids().await?;
        for role in held {
            let id = role_name(role as i32).and_then(|name| ids.get(name));
            if let Some(id) = id {
                self.cloud.revoke(&ks.id, &user.id, id).await?;
            }
        }
        Ok(Removed {
            request_key: String::new(),
            organization: project.organization,
            freed: ResourceCounts::default(),
        })
    }

    async fn create_network(
        &self,
        tenant: &Tenant,
        request_id: &str,
        network: Network,
    ) -> Result<Network> {
        let project_name = top_level(&network.name).to_string();
        let (ks, _) = self.writable_project(tenant, &project_name).await?;
        let id = leaf(&network.name).to_string();
        let key = (!request_id.is_empty()).then(|| Tags::request_key(tenant.key(), request_id));
        if let Some(key) = &key {
            let description = self.tags.network_description(Some(key));
            let first = self
                .cloud
                .networks(Some(&ks.id), None, Some(&description))
                .await?;
            if let Some(net) = first.into_iter().next() {
                return self
                    .finish_network(&ks, &project_name, &net, &network)
                    .await;
            }
        }
        let net = match self.find_network(&ks.id, &id).await? {
            Some(net) => {
                if !self.cloud.subnets(None, Some(&net.id)).await?.is_empty() {
                    return Err(self.region.exists(ResourceKind::Network, &network.name));
                }
                // A create that died between its two steps: finish it.
                net
            }
            None => {
                let description = self.tags.network_description(key.as_deref());
                let net = self.cloud.create_network(&ks.id, &id, &description).await?;
                self.crash.point("network");
                net
            }
        };
        self.finish_network(&ks, &project_name, &net, &network)
            .await
    }

    async fn get_network(&self, tenant: &Tenant, name: &str) -> Result<Network> {
        let (net, subnet) = self.network_parts(tenant, name).await?;
        Ok(self.network_from(top_level(name), &net, &subnet))
    }

    async fn update_network(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &NetworkChange,
    ) -> Result<Network> {
        // The etag against a fresh read; DNS servers change on the subnet
        // in place.
        let (net, subnet) = self.network_parts(tenant, name).await?;
        let mut network = self.network_from(top_level(name), &net, &subnet);
        change.make(&mut network, &self.region)?;
        let subnet = self
            .cloud
            .set_subnet_dns(&subnet.id, &network.dns_servers)
            .await?;
        Ok(self.network_from(top_level(name), &net, &subnet))
    }

    async fn list_networks(&self, filter: &Filter) -> Result<Vec<Network>> {
        let projects = self.projects_for(filter).await?;
        let only = (projects.len() == 1)
            .then(|| projects.keys().next().cloned())
            .flatten();
        let nets = self.cloud.networks(only.as_deref(), None, None).await?;
        let subnets: HashMap<String, NSubnet> = self
            .cloud
            .subnets(only.as_deref(), None)
            .await?
            .into_iter()
            .map(|s| (s.network_id.clone(), s))
            .collect();
        let mut out = Vec::new();
        for net in nets
            .iter()
            .filter(|n| self.tags.is_our_network(&n.description))
        {
            let (Some((_, project)), Some(subnet)) =
                (projects.get(&net.tenant_id), subnets.get(&net.id))
            else {
                continue;
            };
            let n = self.network_from(&project.name, net, subnet);
            if filter.matches(&n.name, &project.organization) {
                out.push(n);
            }
        }
        Ok(page(out, filter, |n| &n.name))
    }

    async fn delete_network(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let missing = || self.region.not_found(ResourceKind::Network, name);
        let (ks, project) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let net = self
            .find_network(&ks.id, leaf(name))
            .await?
            .ok_or_else(missing)?;
        for subnet in self.cloud.subnets(None, Some(&net.id)).await? {
            self.cloud.delete_subnet(&subnet.id).await?;
        }
        self.cloud.delete_network(&net.id).await?;
        Ok(Removed {
            request_key: remembered(
                ResourceKind::Network,
                self.tags.network_request(&net.description),
            ),
            organization: project.organization,
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
        let project_name = top_level(&rule.name).to_string();
        let (ks, _) = self.writable_project(tenant, &project_name).await?;
        let group = self.ensure_security_group(&ks.id, &project_name).await?;
        let id = leaf(&rule.name).to_string();
        let request = (!request_id.is_empty()).then(|| rule_request_hash(tenant, request_id));
        let labeled: Vec<(NRule, RuleLabel)> = group
            .security_group_rules
            .iter()
            .filter_map(|r| Some((r.clone(), self.label(r)?)))
            .collect();
        if let Some(request) = &request {
            if let Some((r, label)) = labeled
                .iter()
                .find(|(_, l)| l.request.as_ref() == Some(request))
            {
                return Ok(self.described(&ks, r, self.rule_from(&project_name, r, label.clone())));
            }
        }
        if labeled.iter().any(|(_, l)| l.id == id) {
            return Err(self.region.exists(ResourceKind::AccessRule, &rule.name));
        }
        let label = RuleLabel {
            id,
            request,
            description: rule.description.clone(),
        };
        let description = label.encode(self.tags.managed());
        if description.chars().count() > MAX_NEUTRON_DESCRIPTION {
            return Err(BackendError::Refused {
                reason: Refusal::InvalidArgument,
                service: "neutron".into(),
                message: format!(
                    "the rule's description is too long for this region: with the rule's id and request it must fit in {MAX_NEUTRON_DESCRIPTION} characters"
                ),
            });
        }
        let ipv6 = is_ipv6(&rule.remote_cidr);
        let protocol = codec::protocol(rule.protocol, ipv6);
        let ports = (matches!(protocol, Some("tcp" | "udp")) && rule.port_range_max > 0)
            .then_some((rule.port_range_min.max(1), rule.port_range_max));
        let created = self
            .cloud
            .create_rule(RuleSpec {
                tenant: &ks.id,
                security_group_id: &group.id,
                egress: codec::direction(rule.direction) == "egress",
                ipv6,
                protocol,
                ports,
                remote_ip_prefix: (!rule.remote_cidr.is_empty())
                    .then_some(rule.remote_cidr.as_str()),
                description: &description,
            })
            .await?;
        Ok(self.rule_from(&project_name, &created, label))
    }

    async fn get_access_rule(&self, tenant: &Tenant, name: &str) -> Result<AccessRule> {
        let (ks, project, rule, label) = self.visible_rule(tenant, name).await?;
        Ok(self.described(&ks, &rule, self.rule_from(&project.name, &rule, label)))
    }

    async fn list_access_rules(&self, filter: &Filter) -> Result<Vec<AccessRule>> {
        let projects = self.projects_for(filter).await?;
        let only = (projects.len() == 1)
            .then(|| projects.keys().next().cloned())
            .flatten();
        let groups = self
            .cloud
            .security_groups(only.as_deref(), Some(SECURITY_GROUP))
            .await?;
        let mut out = Vec::new();
        for group in groups.iter().filter(|g| g.name == SECURITY_GROUP) {
            let Some((ks, project)) = projects.get(&group.tenant_id) else {
                continue;
            };
            out.extend(
                self.rules_of(&project.name, ks, group)
                    .into_iter()
                    .filter(|r| filter.matches(&r.name, &project.organization)),
            );
        }
        Ok(page(out, filter, |r| &r.name))
    }

    async fn update_access_rule(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &AccessRuleChange,
    ) -> Result<AccessRule> {
        // The etag against a fresh read; the new description goes to the
        // Keystone project (see description_key), in one PATCH.
        let (ks, project, found, label) = self.visible_rule(tenant, name).await?;
        let mut rule = self.described(
            &ks,
            &found,
            self.rule_from(&project.name, &found, label.clone()),
        );
        change.make(&mut rule, &self.region)?;
        let kept = serde_json::json!({ "rule": found.id, "description": rule.description });
        let ks = self
            .cloud
            .set_project_extra(&ks.id, &self.description_key(leaf(name)), kept)
            .await?;
        Ok(self.described(&ks, &found, self.rule_from(&project.name, &found, label)))
    }

    async fn delete_access_rule(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (_, project, rule, label) = self.visible_rule(tenant, name).await?;
        self.cloud.delete_rule(&rule.id).await?;
        Ok(Removed {
            request_key: label
                .request
                .map(|hash| rule_request_key(&hash))
                .unwrap_or_default(),
            organization: project.organization,
            freed: ResourceCounts {
                access_rules: 1,
                ..Default::default()
            },
        })
    }
}
