//! The Kubernetes backend: a region's resources in a Kubernetes or OKD
//! cluster.
//!
//! Mapping (also in the README's architecture section):
//! - organization `organizations/acme` → the label
//!   `nordlys.io/organization=acme` on everything of it;
//! - project `projects/web` → Namespace `{namespace}-web` labelled with the
//!   installation, organization and project ids and annotated with the
//!   Nordlys fields Kubernetes has no place for (display name,
//!   description, regions, create time, request);
//! - user → a ConfigMap `{org}.{user}` in namespace `{namespace}`: the
//!   cluster's identity provider has the users (plain Kubernetes has no
//!   user objects), the ConfigMap keeps what Nordlys knows of one;
//! - membership → RoleBinding `member-{user}` in the project's namespace of
//!   the ClusterRole `admin`, `edit` or `view` (Nordlys admin, member,
//!   reader) to the User the `subject` template names;
//! - access rule → NetworkPolicy `rule-{id}` with one ingress or egress
//!   rule, beside the policy `nordlys-default-deny` every project namespace
//!   gets, so only what the rules admit passes;
//! - network → none: Kubernetes has no tenant networks, and a create is
//!   FAILED_PRECONDITION naming the region's kind;
//! - quota tier → ResourceQuota and LimitRange `nordlys-tier`.
//!
//! OKD serves Namespaces and RBAC as Kubernetes does, so the same mapping
//! holds there (made by a service account allowed to create namespaces).
//!
//! Every create looks up before it creates and keeps its request key in an
//! annotation, so a create retried after a crash finds what it made. A
//! namespace is marked incomplete until its default-deny policy and tier
//! are in place. A project delete removes the namespace (Kubernetes takes
//! everything in it along) and waits until it is gone.

mod objects;
mod policy;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use nordlys_proto::pb::nordlys::v1::{
    region_status::State, AccessRule, CloudQuota, CloudResources, Direction, Membership, Network,
    Project, Protocol, RegionStatus, ResourceCounts, User,
};
use serde::de::DeserializeOwned;

use self::objects::{annotation, label, Names};
use self::policy::Admits;
use super::{
    absent_parent, leaf, org_id, page, timestamp, top_level, AccessRuleChange, Backend,
    BackendError, Change, CrashHook, Filter, NetworkChange, ProjectChange, Refusal, Region,
    Removed, ResourceKind, Result, Tenant, UserChange,
};
use crate::config::KubeConfig;

/// The keys of a user's ConfigMap.
const USER_NAME: &str = "name";
const USER_DISPLAY_NAME: &str = "displayName";
const USER_EMAIL: &str = "email";
const USER_REGIONS: &str = "regions";

/// How many times a read-modify-write retries when another writer changed
/// the object in between (HTTP 409 on its resourceVersion).
const REPLACE_TRIES: usize = 5;

/// A region backed by a Kubernetes or OKD cluster. See the module docs.
pub struct KubeBackend {
    region: Region,
    client: kube::Client,
    config: KubeConfig,
    names: Names,
    timeout: Duration,
    /// What the region's kind is called in messages: `Kubernetes`, or
    /// `OKD` when the cluster serves project.openshift.io.
    flavor: &'static str,
    /// Organizations' tiers as the quota service last gave them.
    granted_tiers: std::sync::Mutex<HashMap<String, String>>,
    crash: CrashHook,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("region", &self.region)
            .field("installation", &self.names.installation)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl From<kube::Error> for BackendError {
    fn from(error: kube::Error) -> BackendError {
        match error {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                let refused = |reason| BackendError::Refused {
                    reason,
                    service: "kubernetes".to_string(),
                    message: message.clone(),
                };
                match status.code {
                    400 | 422 => refused(Refusal::InvalidArgument),
                    404 => refused(Refusal::NotFound),
                    409 => refused(Refusal::AlreadyExists),
                    // The namespace's own ResourceQuota said no.
                    403 if message.contains("exceeded quota") => {
                        refused(Refusal::ResourceExhausted)
                    }
                    401 | 403 => refused(Refusal::PermissionDenied),
                    code => {
                        BackendError::Unavailable(format!("kubernetes answered {code}: {message}"))
                    }
                }
            }
            kube::Error::SerdeError(e) => {
                BackendError::Internal(format!("undecodable Kubernetes answer: {e}"))
            }
            // Connection refused, TLS, a timeout: the cluster did not answer.
            other => BackendError::Unavailable(format!("kubernetes: {other}")),
        }
    }
}

/// Whether a call failed with this HTTP status.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn annotations(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Marks `meta` with the request that makes it: the key in an annotation,
/// its hash in a label to find it by.
fn mark_request(meta: &mut ObjectMeta, key: Option<&str>) {
    let Some(key) = key else {
        return;
    };
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(objects::REQUEST.to_string(), key.to_string());
    meta.labels.get_or_insert_with(BTreeMap::new).insert(
        objects::REQUEST_HASH.to_string(),
        objects::request_hash(key),
    );
}

/// The labels that narrow a list of a project's children to `filter`'s
/// organization and project.
fn scope(filter: &Filter) -> Vec<(&'static str, &str)> {
    let mut more = Vec::new();
    if let Some(org) = &filter.organization {
        more.push((objects::ORGANIZATION, org_id(org)));
    }
    if let Some(project) = filter
        .parent
        .as_deref()
        .and_then(|p| p.strip_prefix("projects/"))
    {
        more.push((objects::PROJECT, project));
    }
    more
}

fn time_text(time: &Option<prost_types::Timestamp>) -> String {
    time.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl KubeBackend {
    /// Connects with the configured kubeconfig (or the in-cluster service
    /// account), checks the cluster answers, makes the users' namespace and
    /// has the API server check every tier's objects (a dry run).
    pub async fn connect(region: &str, config: &KubeConfig) -> Result<KubeBackend> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        // Both rustls providers are in the build (aws-lc-rs through the
        // OpenStack client), so rustls cannot pick one by itself.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = KubeConfigOptions {
            context: (!config.context.is_empty()).then(|| config.context.clone()),
            ..Default::default()
        };
        let setup = |e: &dyn std::fmt::Display| {
            BackendError::Internal(format!("kubernetes client configuration: {e}"))
        };
        let mut client_config = match &config.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| setup(&format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| setup(&e))?
            }
            None if options.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| setup(&e))?,
            None => kube::Config::infer().await.map_err(|e| setup(&e))?,
        };
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        client_config.read_timeout = Some(timeout);
        client_config.connect_timeout = Some(timeout);
        let client = kube::Client::try_from(client_config).map_err(|e| setup(&e))?;
        let mut backend = KubeBackend {
            region: Region::new(region),
            client,
            config: config.clone(),
            names: Names {
                installation: config.namespace.clone(),
            },
            timeout,
            flavor: "Kubernetes",
            granted_tiers: std::sync::Mutex::default(),
            crash: CrashHook::from_env(),
        };
        let groups = backend.call(backend.client.list_api_groups()).await??;
        if groups
            .groups
            .iter()
            .any(|g| g.name == "project.openshift.io")
        {
            backend.flavor = "OKD";
        }
        backend.ensure_users_namespace().await?;
        backend.check_tiers().await?;
        Ok(backend)
    }

    /// Runs a call under the configured timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<kube::Result<T>> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| {
            BackendError::Unavailable(format!(
                "kubernetes did not answer within {:?}",
                self.timeout
            ))
        })
    }

    fn namespaces(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }

    fn users(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), self.names.users_namespace())
    }

    fn in_namespace<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Every object of `kind` of this installation matching `more`, in all
    /// namespaces.
    async fn list_all<K>(&self, kind: &str, more: &[(&str, &str)]) -> Result<Vec<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let params = ListParams::default().labels(&self.names.selector(kind, more));
        Ok(self.call(api.list(&params)).await??.items)
    }

    /// The object of `kind` in `api`'s scope that request `key` made, if
    /// any: a retried create finds it whatever name it asks for now.
    async fn made_by<K>(&self, api: &Api<K>, kind: &str, key: &str) -> Result<Option<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let hash = objects::request_hash(key);
        let selector = self.names.selector(kind, &[(objects::REQUEST_HASH, &hash)]);
        let found = self
            .call(api.list(&ListParams::default().labels(&selector)))
            .await??;
        Ok(found
            .items
            .into_iter()
            .find(|o| annotation(o.meta(), objects::REQUEST) == Some(key)))
    }

    async fn ensure_users_namespace(&self) -> Result<()> {
        let name = self.names.users_namespace().to_string();
        if self
            .call(self.namespaces().get_opt(&name))
            .await??
            .is_some()
        {
            return Ok(());
        }
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(self.names.labels("users", &[])),
                ..Default::default()
            },
            ..Default::default()
        };
        match self
            .call(self.namespaces().create(&PostParams::default(), &namespace))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Has the API server validate each tier's ResourceQuota and LimitRange
    /// without keeping them, so a mistyped quantity stops the start.
    async fn check_tiers(&self) -> Result<()> {
        let dry_run = PostParams {
            dry_run: true,
            field_manager: None,
        };
        let ns = self.names.users_namespace();
        for (name, tier) in &self.config.tiers {
            let refused = |e: kube::Error| {
                BackendError::Internal(format!(
                    "[kube.tiers.{name}] is refused by the cluster: {e}"
                ))
            };
            let quota = self.names.resource_quota("check", "check", tier);
            self.call(
                self.in_namespace::<ResourceQuota>(ns)
                    .create(&dry_run, &quota),
            )
            .await?
            .map_err(refused)?;
            if let Some(limits) = self.names.limit_range("check", "check", tier) {
                self.call(
                    self.in_namespace::<LimitRange>(ns)
                        .create(&dry_run, &limits),
                )
                .await?
                .map_err(refused)?;
            }
        }
        Ok(())
    }

    fn unsupported(&self, kind: ResourceKind) -> BackendError {
        BackendError::Unsupported {
            kind,
            region: self.region.to_string(),
            region_kind: self.flavor.to_string(),
        }
    }

    fn refused(&self, reason: Refusal, message: impl Into<String>) -> BackendError {
        BackendError::Refused {
            reason,
            service: "kubernetes".to_string(),
            message: message.into(),
        }
    }

    // -- projects -----------------------------------------------------------

    /// The project a namespace stands for; `None` when it is not one of
    /// this installation's.
    fn project_from(&self, ns: &Namespace) -> Option<Project> {
        let meta = &ns.metadata;
        if !self.names.owns(meta, "project") {
            return None;
        }
        let org = label(meta, objects::ORGANIZATION)?;
        let id = label(meta, objects::PROJECT)?;
        let text = |key| annotation(meta, key).unwrap_or_default().to_string();
        let deleting =
            meta.deletion_timestamp.is_some() || annotation(meta, objects::DELETING).is_some();
        let region_status = if deleting {
            vec![RegionStatus {
                region: self.region.to_string(),
                state: State::Deleting as i32,
                code: 0,
                message: "being deleted; a repeated delete finishes it".to_string(),
            }]
        } else if annotation(meta, objects::INCOMPLETE).is_some() {
            vec![RegionStatus {
                region: self.region.to_string(),
                state: State::Incomplete as i32,
                code: tonic::Code::Unavailable as i32,
                message: "its namespace is made; its default-deny policy and quota tier are \
                          not set yet (a retried create, or this region shortly, sets them)"
                    .to_string(),
            }]
        } else {
            self.region.ready()
        };
        Some(Project {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("projects/{id}"),
            organization: format!("organizations/{org}"),
            display_name: text(objects::DISPLAY_NAME),
            description: text(objects::DESCRIPTION),
            regions: annotation(meta, objects::REGIONS)
                .unwrap_or_default()
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            region_status,
            create_time: timestamp(annotation(meta, objects::CREATE_TIME)),
            etag: String::new(),
        })
    }

    /// A project's namespace, if it is this installation's project `id`.
    async fn find_project(&self, id: &str) -> Result<Option<(Namespace, Project)>> {
        let ns = self
            .call(self.namespaces().get_opt(&self.names.namespace(id)))
            .await??;
        Ok(ns.and_then(|ns| {
            let project = self.project_from(&ns)?;
            // A shortened namespace name could be another id's.
            (leaf(&project.name) == id).then_some((ns, project))
        }))
    }

    /// A project the tenant may see: its namespace and Nordlys form.
    async fn visible_project(&self, tenant: &Tenant, name: &str) -> Result<(Namespace, Project)> {
        match self.find_project(leaf(name)).await? {
            Some((ns, project)) if tenant.allows(&project.organization) => Ok((ns, project)),
            _ => Err(self.region.not_found(ResourceKind::Project, name)),
        }
    }

    /// A project the tenant may see and add to: not being deleted.
    async fn writable_project(&self, tenant: &Tenant, name: &str) -> Result<(Namespace, Project)> {
        let (ns, project) = self.visible_project(tenant, name).await?;
        if project
            .region_status
            .iter()
            .any(|s| s.state == State::Deleting as i32)
        {
            return Err(self.region.being_deleted(ResourceKind::Project, name));
        }
        Ok((ns, project))
    }

    /// What a create found where it wanted to make a project: the same
    /// create (its request key), finished; anything else is in the way.
    async fn replay_project(
        &self,
        ns: Namespace,
        key: Option<&str>,
        name: &str,
    ) -> Result<Project> {
        let ours = self.project_from(&ns).is_some();
        let same_request = key.is_some() && annotation(&ns.metadata, objects::REQUEST) == key;
        if ours && same_request {
            if ns.metadata.deletion_timestamp.is_some() {
                return Err(self.region.being_deleted(ResourceKind::Project, name));
            }
            return self.finish_project(&ns).await;
        }
        if ours && ns.metadata.deletion_timestamp.is_some() {
            // The namespace of a deleted project of that name is still
            // going: the name is free in a moment.
            return Err(BackendError::Unavailable(format!(
                "the namespace of an earlier {name} is still being removed; try again shortly"
            )));
        }
        Err(self.region.exists(ResourceKind::Project, name))
    }

    /// The namespace's default-deny policy and tier, then the incomplete
    /// mark goes: done after the namespace and redone by a retried create.
    async fn finish_project(&self, ns: &Namespace) -> Result<Project> {
        let project = self.project_from(ns).ok_or_else(|| {
            BackendError::Internal(format!("namespace {:?} lost its labels", ns.metadata.name))
        })?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let (org, id) = (org_id(&project.organization), leaf(&project.name));
        let apply = PatchParams::apply(objects::FIELD_MANAGER).force();
        let deny = self.names.default_deny(org, id);
        self.call(self.in_namespace::<NetworkPolicy>(&namespace).patch(
            objects::DEFAULT_DENY,
            &apply,
            &Patch::Apply(&deny),
        ))
        .await??;
        let ns = self.apply_tier_to(ns, org).await?;
        if annotation(&ns.metadata, objects::INCOMPLETE).is_none() {
            return self
                .project_from(&ns)
                .ok_or_else(|| self.region.not_found(ResourceKind::Project, &project.name));
        }
        let done = serde_json::json!({"metadata": {"annotations": {objects::INCOMPLETE: null}}});
        let ns = self
            .call(self.namespaces().patch(
                &namespace,
                &PatchParams::default(),
                &Patch::Merge(&done),
            ))
            .await??;
        self.project_from(&ns)
            .ok_or_else(|| self.region.not_found(ResourceKind::Project, &project.name))
    }

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
            Some(tier) if tier.is_empty() || self.config.tiers.contains_key(&tier) => (tier, true),
            _ => (self.config.tier_of(org).to_string(), false),
        }
    }

    /// Sets the namespace's ResourceQuota and LimitRange to the tier's,
    /// then records the tier in a label, so a failure half way leaves the
    /// old label and the next try sets them again. Returns the namespace.
    async fn apply_tier_to(&self, ns: &Namespace, org: &str) -> Result<Namespace> {
        let (want, granted) = self.wanted_tier(org);
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let id = label(&ns.metadata, objects::PROJECT)
            .unwrap_or_default()
            .to_string();
        let quotas = self.in_namespace::<ResourceQuota>(&namespace);
        let limits = self.in_namespace::<LimitRange>(&namespace);
        let apply = PatchParams::apply(objects::FIELD_MANAGER).force();
        let tier = self.config.tiers.get(&want);
        match tier {
            Some(tier) => {
                let quota = self.names.resource_quota(org, &id, tier);
                self.call(quotas.patch(objects::TIER_OBJECT, &apply, &Patch::Apply(&quota)))
                    .await??;
            }
            None => self.delete_if_there(&quotas, objects::TIER_OBJECT).await?,
        }
        match tier.and_then(|tier| self.names.limit_range(org, &id, tier)) {
            Some(range) => {
                self.call(limits.patch(objects::TIER_OBJECT, &apply, &Patch::Apply(&range)))
                    .await??;
            }
            None => self.delete_if_there(&limits, objects::TIER_OBJECT).await?,
        }
        let have_tier = label(&ns.metadata, objects::TIER).unwrap_or_default();
        let have_granted = annotation(&ns.metadata, objects::TIER_GRANTED).is_some();
        if have_tier == want && have_granted == granted {
            return Ok(ns.clone());
        }
        let mark = serde_json::json!({"metadata": {
            "labels": {objects::TIER: want},
            "annotations": {objects::TIER_GRANTED: granted.then_some("true")},
        }});
        Ok(self
            .call(self.namespaces().patch(
                &namespace,
                &PatchParams::default(),
                &Patch::Merge(&mark),
            ))
            .await??)
    }

    async fn delete_if_there<K>(&self, api: &Api<K>, name: &str) -> Result<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        match self
            .call(api.delete(name, &DeleteParams::default()))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads, changes and writes back an object under its resourceVersion,
    /// so a concurrent writer makes it read again instead of being undone.
    async fn replace_with<K, F>(&self, api: &Api<K>, name: &str, mut change: F) -> Result<K>
    where
        K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
        F: FnMut(&mut K) -> Result<()>,
    {
        for _ in 0..REPLACE_TRIES {
            let Some(mut object) = self.call(api.get_opt(name)).await?? else {
                return Err(self.refused(Refusal::NotFound, format!("{name} is gone")));
            };
            change(&mut object)?;
            match self
                .call(api.replace(name, &PostParams::default(), &object))
                .await?
            {
                Ok(object) => return Ok(object),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackendError::Unavailable(format!(
            "{name} kept changing under this update; try again"
        )))
    }

    // -- users ----------------------------------------------------------------

    fn user_from(&self, cm: &ConfigMap) -> Option<User> {
        if !self.names.owns(&cm.metadata, "user") {
            return None;
        }
        let data = cm.data.as_ref()?;
        let text = |key| data.get(key).cloned().unwrap_or_default();
        Some(User {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: data.get(USER_NAME)?.clone(),
            display_name: text(USER_DISPLAY_NAME),
            email: text(USER_EMAIL),
            regions: data
                .get(USER_REGIONS)
                .map(|r| {
                    r.split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            region_status: self.region.ready(),
            create_time: timestamp(annotation(&cm.metadata, objects::CREATE_TIME)),
            etag: String::new(),
        })
    }

    /// A user the tenant may see, with its ConfigMap.
    async fn visible_user(&self, tenant: &Tenant, name: &str) -> Result<Option<(ConfigMap, User)>> {
        let org = top_level(name);
        if !tenant.allows(org) {
            return Ok(None);
        }
        let cm_name = Names::user(org_id(org), leaf(name));
        let Some(cm) = self.call(self.users().get_opt(&cm_name)).await?? else {
            return Ok(None);
        };
        Ok(self
            .user_from(&cm)
            .filter(|u| u.name == name)
            .map(|u| (cm, u)))
    }

    // -- memberships ----------------------------------------------------------

    fn membership_from(&self, project: &str, org: &str, rb: &RoleBinding) -> Option<Membership> {
        if !self.names.owns(&rb.metadata, "membership") {
            return None;
        }
        let user = label(&rb.metadata, objects::USER)?;
        let role = objects::role_of(&rb.role_ref.name)?;
        Some(Membership {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("{project}/members/{user}"),
            user: format!("{org}/users/{user}"),
            role: role as i32,
            region_status: self.region.ready(),
            create_time: timestamp(annotation(&rb.metadata, objects::CREATE_TIME)),
            etag: String::new(),
        })
    }

    /// A membership the tenant may see, with its project and RoleBinding.
    async fn visible_membership(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<(Namespace, Project, RoleBinding, Membership)> {
        let missing = || self.region.not_found(ResourceKind::Membership, name);
        let (ns, project) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let rb = self
            .call(
                self.in_namespace::<RoleBinding>(&namespace)
                    .get_opt(&Names::membership(leaf(name))),
            )
            .await??
            .ok_or_else(missing)?;
        let membership = self
            .membership_from(&project.name, &project.organization, &rb)
            .ok_or_else(missing)?;
        Ok((ns, project, rb, membership))
    }

    // -- access rules ---------------------------------------------------------

    fn rule_from(&self, project: &str, np: &NetworkPolicy) -> Option<AccessRule> {
        if !self.names.owns(&np.metadata, "access-rule") {
            return None;
        }
        let id = np.metadata.name.as_deref()?.strip_prefix("rule-")?;
        let admits = policy::decode(np.spec.as_ref()?)?;
        Some(AccessRule {
            // The gateway says which environment manages it.
            managed_by: String::new(),
            name: format!("{project}/accessRules/{id}"),
            region: self.region.to_string(),
            direction: admits.direction as i32,
            protocol: admits.protocol as i32,
            port_range_min: admits.port_range_min,
            port_range_max: admits.port_range_max,
            remote_cidr: admits.remote_cidr,
            description: annotation(&np.metadata, objects::DESCRIPTION)
                .unwrap_or_default()
                .to_string(),
            create_time: timestamp(annotation(&np.metadata, objects::CREATE_TIME)),
            etag: String::new(),
        })
    }

    /// A rule the tenant may see, with its project and NetworkPolicy.
    async fn visible_rule(
        &self,
        tenant: &Tenant,
        name: &str,
    ) -> Result<(String, Project, NetworkPolicy, AccessRule)> {
        let missing = || self.region.not_found(ResourceKind::AccessRule, name);
        let (ns, project) = self
            .visible_project(tenant, top_level(name))
            .await
            .map_err(|e| absent_parent(e, missing()))?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let np = self
            .call(
                self.in_namespace::<NetworkPolicy>(&namespace)
                    .get_opt(&Names::rule(leaf(name))),
            )
            .await??
            .ok_or_else(missing)?;
        let rule = self.rule_from(&project.name, &np).ok_or_else(missing)?;
        Ok((namespace, project, np, rule))
    }

    /// What a delete of `namespace` leaves: waits until Kubernetes has
    /// removed it and everything in it.
    async fn await_gone(&self, namespace: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            if self
                .call(self.namespaces().get_opt(namespace))
                .await??
                .is_none()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(BackendError::Unavailable(format!(
                    "namespace {namespace} is still terminating after {:?}; a repeated delete waits again",
                    self.timeout
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn kind(&self) -> &'static str {
        "kube"
    }

    /// Applies the configured tier to every namespace whose tier label
    /// differs (the operator changed an organization's tier); run at start.
    async fn reconcile_tiers(&self) -> Result<usize> {
        let mut changed = 0;
        for ns in self.list_all::<Namespace>("project", &[]).await? {
            let Some(org) = label(&ns.metadata, objects::ORGANIZATION).map(str::to_string) else {
                continue;
            };
            if annotation(&ns.metadata, objects::TIER_GRANTED).is_some() {
                continue;
            }
            let have = label(&ns.metadata, objects::TIER).unwrap_or_default();
            if have != self.config.tier_of(&org) {
                self.apply_tier_to(&ns, &org).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    fn unsupported(&self) -> &'static [ResourceKind] {
        &[ResourceKind::Network]
    }

    async fn create_project(
        &self,
        tenant: &Tenant,
        request_id: &str,
        project: Project,
    ) -> Result<Project> {
        let id = leaf(&project.name).to_string();
        let org = org_id(&project.organization).to_string();
        let key = (!request_id.is_empty())
            .then(|| super::request_key(ResourceKind::Project, tenant, request_id));
        if let Some(key) = &key {
            if let Some(ns) = self.made_by(&self.namespaces(), "project", key).await? {
                return self.replay_project(ns, Some(key), &project.name).await;
            }
        }
        let name = self.names.namespace(&id);
        if let Some(ns) = self.call(self.namespaces().get_opt(&name)).await?? {
            return self.replay_project(ns, key.as_deref(), &project.name).await;
        }
        let mut ns = self.names.new_namespace(
            &org,
            &id,
            annotations(&[
                (objects::DISPLAY_NAME, project.display_name.clone()),
                (objects::DESCRIPTION, project.description.clone()),
                (objects::REGIONS, project.regions.join(",")),
                (objects::CREATE_TIME, time_text(&project.create_time)),
                // Taken away by finish_project once the namespace is whole.
                (objects::INCOMPLETE, "true".to_string()),
            ]),
        );
        mark_request(&mut ns.metadata, key.as_deref());
        match self
            .call(self.namespaces().create(&PostParams::default(), &ns))
            .await?
        {
            Ok(ns) => {
                self.crash.point("namespace");
                self.finish_project(&ns).await
            }
            Err(e) if is_status(&e, 409) => {
                // A racing create won the name: the same request's, or not.
                match self.call(self.namespaces().get_opt(&name)).await?? {
                    Some(ns) => self.replay_project(ns, key.as_deref(), &project.name).await,
                    None => Err(self.region.exists(ResourceKind::Project, &project.name)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_project(&self, tenant: &Tenant, name: &str) -> Result<Project> {
        Ok(self.visible_project(tenant, name).await?.1)
    }

    async fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>> {
        let mut more = Vec::new();
        if let Some(org) = &filter.organization {
            more.push((objects::ORGANIZATION, org_id(org)));
        }
        let projects = self
            .list_all::<Namespace>("project", &more)
            .await?
            .iter()
            .filter_map(|ns| self.project_from(ns))
            .filter(|p| filter.matches(&p.name, &p.organization))
            .collect();
        Ok(page(projects, filter, |p| &p.name))
    }

    async fn update_project(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &ProjectChange,
    ) -> Result<Project> {
        let (ns, _) = self.writable_project(tenant, name).await?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let region = self.region.to_string();
        let ns = self
            .replace_with(&self.namespaces(), &namespace, |ns: &mut Namespace| {
                let mut project = self
                    .project_from(ns)
                    .filter(|p| tenant.allows(&p.organization))
                    .ok_or_else(|| self.region.not_found(ResourceKind::Project, name))?;
                change.make(&mut project, &region)?;
                let kept = ns.metadata.annotations.get_or_insert_with(BTreeMap::new);
                for (key, value) in [
                    (objects::DISPLAY_NAME, project.display_name),
                    (objects::DESCRIPTION, project.description),
                    (objects::REGIONS, project.regions.join(",")),
                ] {
                    if value.is_empty() {
                        kept.remove(key);
                    } else {
                        kept.insert(key.to_string(), value);
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                BackendError::Refused {
                    reason: Refusal::NotFound,
                    ..
                } => self.region.not_found(ResourceKind::Project, name),
                other => other,
            })?;
        self.project_from(&ns)
            .ok_or_else(|| self.region.not_found(ResourceKind::Project, name))
    }

    async fn delete_project(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (ns, project) = self.visible_project(tenant, name).await?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let rules = self
            .call(
                self.in_namespace::<NetworkPolicy>(&namespace)
                    .list(&ListParams::default().labels(&self.names.selector("access-rule", &[]))),
            )
            .await??
            .items
            .len() as i64;
        // Kubernetes removes everything in the namespace with it (the
        // namespace controller); only then is the project's name free.
        self.delete_if_there(&self.namespaces(), &namespace).await?;
        self.await_gone(&namespace).await?;
        Ok(Removed {
            request_key: annotation(&ns.metadata, objects::REQUEST)
                .unwrap_or_default()
                .to_string(),
            organization: project.organization,
            freed: ResourceCounts {
                projects: 1,
                access_rules: rules,
                ..Default::default()
            },
        })
    }

    async fn begin_delete(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Project {
            return Ok(());
        }
        let ns = match self.visible_project(&Tenant::Any, name).await {
            Ok((ns, _)) => ns,
            Err(BackendError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if annotation(&ns.metadata, objects::DELETING).is_none() {
            let mark =
                serde_json::json!({"metadata": {"annotations": {objects::DELETING: "true"}}});
            self.call(self.namespaces().patch(
                ns.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&mark),
            ))
            .await??;
        }
        Ok(())
    }

    async fn finish(&self, kind: ResourceKind, name: &str) -> Result<()> {
        if kind != ResourceKind::Project {
            return Ok(());
        }
        let (ns, _) = self.visible_project(&Tenant::Any, name).await?;
        if annotation(&ns.metadata, objects::INCOMPLETE).is_some() {
            self.finish_project(&ns).await?;
            tracing::info!(%name, "finished a project whose namespace was left incomplete");
        }
        Ok(())
    }

    async fn incarnation(&self, tenant: &Tenant, name: &str) -> Result<String> {
        // Kubernetes gives every object it makes a uid of its own.
        let (ns, _) = self.visible_project(tenant, name).await?;
        Ok(ns.metadata.uid.unwrap_or_default())
    }

    async fn apply_tier(&self, organization: &str, tier: &str) -> Result<u32> {
        let org = org_id(organization);
        if !tier.is_empty() && !self.config.tiers.contains_key(tier) {
            return Err(BackendError::Refused {
                reason: Refusal::FailedPrecondition,
                service: "regiond".to_string(),
                message: format!(
                    "quota tier {tier:?} is not defined in region {} (its [kube.tiers])",
                    self.region
                ),
            });
        }
        self.tier_hint(organization, tier);
        let mut sized = 0u32;
        for ns in self
            .list_all::<Namespace>("project", &[(objects::ORGANIZATION, org)])
            .await?
        {
            if ns.metadata.deletion_timestamp.is_none() {
                self.apply_tier_to(&ns, org).await?;
                sized = sized.saturating_add(1);
            }
        }
        tracing::info!(organization = %org, %tier, projects = sized, "quota tier applied");
        Ok(sized)
    }

    fn tier_hint(&self, organization: &str, tier: &str) {
        self.granted_tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(org_id(organization).to_string(), tier.to_string());
    }

    async fn cloud_quota(&self, tenant: &Tenant, name: &str) -> Result<Option<CloudQuota>> {
        let (ns, _) = self.visible_project(tenant, name).await?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let quota = self
            .call(
                self.in_namespace::<ResourceQuota>(&namespace)
                    .get_opt(objects::TIER_OBJECT),
            )
            .await??;
        let text = |m: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
                .unwrap_or_default()
        };
        let status = quota.as_ref().and_then(|q| q.status.as_ref());
        // Before the quota controller first counts, the spec has the limits.
        let hard = status
            .and_then(|s| s.hard.as_ref())
            .or_else(|| quota.as_ref()?.spec.as_ref()?.hard.as_ref());
        Ok(Some(CloudQuota {
            region: self.region.to_string(),
            tier: label(&ns.metadata, objects::TIER)
                .unwrap_or_default()
                .to_string(),
            limits: Some(CloudResources {
                resource_quota: text(hard),
                ..Default::default()
            }),
            usage: Some(CloudResources {
                resource_quota: text(status.and_then(|s| s.used.as_ref())),
                ..Default::default()
            }),
        }))
    }

    async fn create_user(&self, tenant: &Tenant, request_id: &str, user: User) -> Result<User> {
        let org = org_id(top_level(&user.name)).to_string();
        let id = leaf(&user.name).to_string();
        let key = (!request_id.is_empty())
            .then(|| super::request_key(ResourceKind::User, tenant, request_id));
        let cm_name = Names::user(&org, &id);
        let replay = |cm: ConfigMap| {
            let same =
                key.is_some() && annotation(&cm.metadata, objects::REQUEST) == key.as_deref();
            match self.user_from(&cm) {
                Some(first) if same => Ok(first),
                _ => Err(self.region.exists(ResourceKind::User, &user.name)),
            }
        };
        if let Some(key) = &key {
            if let Some(cm) = self.made_by(&self.users(), "user", key).await? {
                return replay(cm);
            }
        }
        if let Some(cm) = self.call(self.users().get_opt(&cm_name)).await?? {
            return replay(cm);
        }
        let mut cm = self.names.user_config_map(
            &org,
            &id,
            annotations(&[
                (USER_NAME, user.name.clone()),
                (USER_DISPLAY_NAME, user.display_name.clone()),
                (USER_EMAIL, user.email.clone()),
                (USER_REGIONS, user.regions.join(",")),
            ]),
        );
        cm.metadata.annotations = Some(annotations(&[(
            objects::CREATE_TIME,
            time_text(&user.create_time),
        )]));
        mark_request(&mut cm.metadata, key.as_deref());
        match self
            .call(self.users().create(&PostParams::default(), &cm))
            .await?
        {
            Ok(cm) => self
                .user_from(&cm)
                .ok_or_else(|| BackendError::Internal(format!("user {cm_name} lost its data"))),
            Err(e) if is_status(&e, 409) => {
                match self.call(self.users().get_opt(&cm_name)).await?? {
                    Some(cm) => replay(cm),
                    None => Err(self.region.exists(ResourceKind::User, &user.name)),
                }
            }
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
        let mut more = Vec::new();
        if let Some(org) = &org {
            more.push((objects::ORGANIZATION, org.as_str()));
        }
        let params = ListParams::default().labels(&self.names.selector("user", &more));
        let users = self
            .call(self.users().list(&params))
            .await??
            .items
            .iter()
            .filter_map(|cm| self.user_from(cm))
            .filter(|u| filter.matches(&u.name, top_level(&u.name)))
            .collect();
        Ok(page(users, filter, |u| &u.name))
    }

    async fn update_user(&self, tenant: &Tenant, name: &str, change: &UserChange) -> Result<User> {
        let (cm, _) = self
            .visible_user(tenant, name)
            .await?
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))?;
        let cm_name = cm.metadata.name.clone().unwrap_or_default();
        let region = self.region.to_string();
        let cm = self
            .replace_with(&self.users(), &cm_name, |cm: &mut ConfigMap| {
                let mut user = self
                    .user_from(cm)
                    .ok_or_else(|| self.region.not_found(ResourceKind::User, name))?;
                change.make(&mut user, &region)?;
                let data = cm.data.get_or_insert_with(BTreeMap::new);
                data.insert(USER_DISPLAY_NAME.to_string(), user.display_name);
                data.insert(USER_EMAIL.to_string(), user.email);
                data.insert(USER_REGIONS.to_string(), user.regions.join(","));
                Ok(())
            })
            .await
            .map_err(|e| match e {
                BackendError::Refused {
                    reason: Refusal::NotFound,
                    ..
                } => self.region.not_found(ResourceKind::User, name),
                other => other,
            })?;
        self.user_from(&cm)
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))
    }

    async fn delete_user(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (cm, _) = self
            .visible_user(tenant, name)
            .await?
            .ok_or_else(|| self.region.not_found(ResourceKind::User, name))?;
        let (org, id) = (org_id(top_level(name)), leaf(name));
        // Its RoleBindings first: a user left half-deleted still shows.
        for rb in self
            .list_all::<RoleBinding>(
                "membership",
                &[(objects::ORGANIZATION, org), (objects::USER, id)],
            )
            .await?
        {
            let (Some(ns), Some(rb_name)) = (&rb.metadata.namespace, &rb.metadata.name) else {
                continue;
            };
            self.delete_if_there(&self.in_namespace::<RoleBinding>(ns), rb_name)
                .await?;
        }
        self.delete_if_there(
            &self.users(),
            cm.metadata.name.as_deref().unwrap_or_default(),
        )
        .await?;
        Ok(Removed {
            request_key: annotation(&cm.metadata, objects::REQUEST)
                .unwrap_or_default()
                .to_string(),
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
        let (ns, project) = self.writable_project(tenant, &project_name).await?;
        if top_level(&membership.user) != project.organization {
            return Err(BackendError::UserOfOtherOrganization {
                user: membership.user,
                organization: project.organization,
            });
        }
        let Some((_, user)) = self.visible_user(tenant, &membership.user).await? else {
            return Err(BackendError::UserNotInRegion {
                user: membership.user,
                region: self.region.to_string(),
            });
        };
        let cluster_role = objects::cluster_role(membership.role)
            .ok_or_else(|| self.refused(Refusal::InvalidArgument, "a membership needs a role"))?;
        let (org, user_id) = (org_id(&project.organization), leaf(&membership.user));
        if self.config.subject.contains("{email}") && user.email.is_empty() {
            return Err(self.refused(
                Refusal::FailedPrecondition,
                format!(
                    "user {} has no email, which region {} names cluster users by",
                    user.name, self.region
                ),
            ));
        }
        let subject = objects::subject(&self.config.subject, org, user_id, &user.email);
        let key = (!request_id.is_empty())
            .then(|| super::request_key(ResourceKind::Membership, tenant, request_id));
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let api = self.in_namespace::<RoleBinding>(&namespace);
        let rb_name = Names::membership(user_id);
        let replay = |rb: RoleBinding| {
            let same =
                key.is_some() && annotation(&rb.metadata, objects::REQUEST) == key.as_deref();
            match self.membership_from(&project.name, &project.organization, &rb) {
                Some(first) if same => Ok(first),
                _ => Err(self
                    .region
                    .exists(ResourceKind::Membership, &membership.name)),
            }
        };
        if let Some(key) = &key {
            if let Some(rb) = self.made_by(&api, "membership", key).await? {
                return replay(rb);
            }
        }
        if let Some(rb) = self.call(api.get_opt(&rb_name)).await?? {
            return replay(rb);
        }
        let mut rb = self.names.role_binding(
            (org, leaf(&project.name), user_id),
            cluster_role,
            &subject,
            annotations(&[(objects::CREATE_TIME, time_text(&membership.create_time))]),
        );
        mark_request(&mut rb.metadata, key.as_deref());
        match self.call(api.create(&PostParams::default(), &rb)).await? {
            Ok(rb) => self
                .membership_from(&project.name, &project.organization, &rb)
                .ok_or_else(|| {
                    BackendError::Internal(format!("role binding {rb_name} lost its labels"))
                }),
            Err(e) if is_status(&e, 409) => match self.call(api.get_opt(&rb_name)).await?? {
                Some(rb) => replay(rb),
                None => Err(self
                    .region
                    .exists(ResourceKind::Membership, &membership.name)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn get_membership(&self, tenant: &Tenant, name: &str) -> Result<Membership> {
        Ok(self.visible_membership(tenant, name).await?.3)
    }

    async fn list_memberships(&self, filter: &Filter) -> Result<Vec<Membership>> {
        let more = scope(filter);
        let memberships = self
            .list_all::<RoleBinding>("membership", &more)
            .await?
            .iter()
            .filter_map(|rb| {
                let org = label(&rb.metadata, objects::ORGANIZATION)?;
                let project = label(&rb.metadata, objects::PROJECT)?;
                let org = format!("organizations/{org}");
                let m = self.membership_from(&format!("projects/{project}"), &org, rb)?;
                filter.matches(&m.name, &org).then_some(m)
            })
            .collect();
        Ok(page(memberships, filter, |m| &m.name))
    }

    async fn delete_membership(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (ns, project, rb, _) = self.visible_membership(tenant, name).await?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        self.delete_if_there(
            &self.in_namespace::<RoleBinding>(&namespace),
            rb.metadata.name.as_deref().unwrap_or_default(),
        )
        .await?;
        Ok(Removed {
            request_key: annotation(&rb.metadata, objects::REQUEST)
                .unwrap_or_default()
                .to_string(),
            organization: project.organization,
            freed: ResourceCounts::default(),
        })
    }

    async fn create_network(
        &self,
        tenant: &Tenant,
        _request_id: &str,
        network: Network,
    ) -> Result<Network> {
        // A project the tenant cannot see is NOT_FOUND, as anywhere.
        self.visible_project(tenant, top_level(&network.name))
            .await?;
        Err(self.unsupported(ResourceKind::Network))
    }

    async fn get_network(&self, _tenant: &Tenant, name: &str) -> Result<Network> {
        Err(self.region.not_found(ResourceKind::Network, name))
    }

    async fn list_networks(&self, _filter: &Filter) -> Result<Vec<Network>> {
        // None here, ever: a list across regions goes on with the others.
        Ok(Vec::new())
    }

    async fn update_network(
        &self,
        _tenant: &Tenant,
        name: &str,
        _change: &NetworkChange,
    ) -> Result<Network> {
        Err(self.region.not_found(ResourceKind::Network, name))
    }

    async fn delete_network(&self, _tenant: &Tenant, name: &str) -> Result<Removed> {
        Err(self.region.not_found(ResourceKind::Network, name))
    }

    async fn create_access_rule(
        &self,
        tenant: &Tenant,
        request_id: &str,
        rule: AccessRule,
    ) -> Result<AccessRule> {
        let project_name = top_level(&rule.name).to_string();
        let (ns, project) = self.writable_project(tenant, &project_name).await?;
        let namespace = ns.metadata.name.clone().unwrap_or_default();
        let api = self.in_namespace::<NetworkPolicy>(&namespace);
        let key = (!request_id.is_empty())
            .then(|| super::request_key(ResourceKind::AccessRule, tenant, request_id));
        let np_name = Names::rule(leaf(&rule.name));
        let same = |np: &NetworkPolicy| {
            key.is_some() && annotation(&np.metadata, objects::REQUEST) == key.as_deref()
        };
        if let Some(key) = &key {
            if let Some(first) = self.made_by(&api, "access-rule", key).await? {
                return self
                    .rule_from(&project.name, &first)
                    .ok_or_else(|| self.region.exists(ResourceKind::AccessRule, &rule.name));
            }
        }
        if self.call(api.get_opt(&np_name)).await??.is_some() {
            return Err(self.region.exists(ResourceKind::AccessRule, &rule.name));
        }
        let admits = Admits {
            direction: Direction::try_from(rule.direction).unwrap_or(Direction::Ingress),
            protocol: Protocol::try_from(rule.protocol).unwrap_or(Protocol::Any),
            port_range_min: rule.port_range_min,
            port_range_max: rule.port_range_max,
            remote_cidr: rule.remote_cidr.clone(),
        };
        let spec = policy::encode(&admits)
            .map_err(|why| self.refused(Refusal::FailedPrecondition, why))?;
        let (org, id) = (org_id(&project.organization), leaf(&project.name));
        let mut np = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(np_name.clone()),
                labels: Some(self.names.labels(
                    "access-rule",
                    &[(objects::ORGANIZATION, org), (objects::PROJECT, id)],
                )),
                annotations: Some(annotations(&[
                    (objects::DESCRIPTION, rule.description.clone()),
                    (objects::CREATE_TIME, time_text(&rule.create_time)),
                ])),
                ..Default::default()
            },
            spec: Some(spec),
        };
        mark_request(&mut np.metadata, key.as_deref());
        match self.call(api.create(&PostParams::default(), &np)).await? {
            Ok(np) => self.rule_from(&project.name, &np).ok_or_else(|| {
                BackendError::Internal(format!("policy {np_name} reads back as no rule"))
            }),
            Err(e) if is_status(&e, 409) => match self.call(api.get_opt(&np_name)).await?? {
                Some(np) if same(&np) => self
                    .rule_from(&project.name, &np)
                    .ok_or_else(|| self.region.exists(ResourceKind::AccessRule, &rule.name)),
                _ => Err(self.region.exists(ResourceKind::AccessRule, &rule.name)),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn get_access_rule(&self, tenant: &Tenant, name: &str) -> Result<AccessRule> {
        Ok(self.visible_rule(tenant, name).await?.3)
    }

    async fn list_access_rules(&self, filter: &Filter) -> Result<Vec<AccessRule>> {
        let more = scope(filter);
        let rules = self
            .list_all::<NetworkPolicy>("access-rule", &more)
            .await?
            .iter()
            .filter_map(|np| {
                let org = format!(
                    "organizations/{}",
                    label(&np.metadata, objects::ORGANIZATION)?
                );
                let project = format!("projects/{}", label(&np.metadata, objects::PROJECT)?);
                let rule = self.rule_from(&project, np)?;
                filter.matches(&rule.name, &org).then_some(rule)
            })
            .collect();
        Ok(page(rules, filter, |r| &r.name))
    }

    async fn update_access_rule(
        &self,
        tenant: &Tenant,
        name: &str,
        change: &AccessRuleChange,
    ) -> Result<AccessRule> {
        let (namespace, project, np, _) = self.visible_rule(tenant, name).await?;
        let np_name = np.metadata.name.clone().unwrap_or_default();
        let region = self.region.to_string();
        let np = self
            .replace_with(
                &self.in_namespace::<NetworkPolicy>(&namespace),
                &np_name,
                |np: &mut NetworkPolicy| {
                    let mut rule = self
                        .rule_from(&project.name, np)
                        .ok_or_else(|| self.region.not_found(ResourceKind::AccessRule, name))?;
                    change.make(&mut rule, &region)?;
                    let kept = np.metadata.annotations.get_or_insert_with(BTreeMap::new);
                    if rule.description.is_empty() {
                        kept.remove(objects::DESCRIPTION);
                    } else {
                        kept.insert(objects::DESCRIPTION.to_string(), rule.description);
                    }
                    Ok(())
                },
            )
            .await
            .map_err(|e| match e {
                BackendError::Refused {
                    reason: Refusal::NotFound,
                    ..
                } => self.region.not_found(ResourceKind::AccessRule, name),
                other => other,
            })?;
        self.rule_from(&project.name, &np)
            .ok_or_else(|| self.region.not_found(ResourceKind::AccessRule, name))
    }

    async fn delete_access_rule(&self, tenant: &Tenant, name: &str) -> Result<Removed> {
        let (namespace, project, np, _) = self.visible_rule(tenant, name).await?;
        self.delete_if_there(
            &self.in_namespace::<NetworkPolicy>(&namespace),
            np.metadata.name.as_deref().unwrap_or_default(),
        )
        .await?;
        Ok(Removed {
            request_key: annotation(&np.metadata, objects::REQUEST)
                .unwrap_or_default()
                .to_string(),
            organization: project.organization,
            freed: ResourceCounts {
                access_rules: 1,
                ..Default::default()
            },
        })
    }
}
