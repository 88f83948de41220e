//! How Nordlys names, labels and reads back the Kubernetes objects it owns.
//! Pure: no calls to the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace,
};
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use nordlys_proto::pb::nordlys::v1::ProjectRole;
use sha2::{Digest, Sha256};

use crate::config::KubeTier;

/// `app.kubernetes.io/managed-by`: the label every tool reads.
pub(super) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Which installation (the configured namespace) made the object.
pub(super) const INSTALLATION: &str = "nordlys.io/installation";
/// What the object stands for (`project`, `user`, `membership`,
/// `access-rule`, `default-deny`, `tier`).
pub(super) const KIND: &str = "nordlys.io/kind";
/// The organization id the object belongs to.
pub(super) const ORGANIZATION: &str = "nordlys.io/organization";
/// The project id (on a namespace and what is in it).
pub(super) const PROJECT: &str = "nordlys.io/project";
/// The user id (on a user's ConfigMap and its RoleBindings).
pub(super) const USER: &str = "nordlys.io/user";
/// A hash of the request that made the object: annotations cannot be
/// selected on, so a retried create finds its object by this label.
pub(super) const REQUEST_HASH: &str = "nordlys.io/request-hash";
/// The quota tier a namespace is sized with.
pub(super) const TIER: &str = "nordlys.io/tier";

/// Annotations: the Nordlys fields Kubernetes has no place for.
pub(super) const DISPLAY_NAME: &str = "nordlys.io/display-name";
pub(super) const DESCRIPTION: &str = "nordlys.io/description";
pub(super) const REGIONS: &str = "nordlys.io/regions";
pub(super) const CREATE_TIME: &str = "nordlys.io/create-time";
/// The key of the request that made the object, so a retried create finds
/// it.
pub(super) const REQUEST: &str = "nordlys.io/request";
/// On a namespace whose default-deny policy and tier are not set yet.
pub(super) const INCOMPLETE: &str = "nordlys.io/incomplete";
/// On a namespace whose delete has begun.
pub(super) const DELETING: &str = "nordlys.io/deleting";
/// On a namespace sized by the tier the quota service granted, which this
/// region's `organization_tiers` no longer overrides.
pub(super) const TIER_GRANTED: &str = "nordlys.io/tier-granted";

/// The policy that denies whatever no access rule admits.
pub(super) const DEFAULT_DENY: &str = "nordlys-default-deny";
/// The ResourceQuota and LimitRange of a namespace's tier.
pub(super) const TIER_OBJECT: &str = "nordlys-tier";
/// The field manager of server-side applies.
pub(super) const FIELD_MANAGER: &str = "nordlys-regiond";

/// Object names and label selectors of one installation.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// The configured namespace: the installation's name.
    pub(super) installation: String,
}

impl Names {
    /// The namespace of project `id`: `{installation}-{id}`, shortened with
    /// a hash when that is longer than a DNS label (63).
    pub(super) fn namespace(&self, id: &str) -> String {
        let name = format!("{}-{id}", self.installation);
        if name.len() <= 63 {
            return name;
        }
        let hash = hex::encode(Sha256::digest(id.as_bytes()));
        let keep = 63 - self.installation.len() - 1 - 9;
        let head = id.get(..keep).unwrap_or(id).trim_end_matches('-');
        format!("{}-{head}-{}", self.installation, &hash[..8])
    }

    /// The namespace that keeps users.
    pub(super) fn users_namespace(&self) -> &str {
        &self.installation
    }

    /// The ConfigMap of user `id` of organization `org`.
    pub(super) fn user(org: &str, id: &str) -> String {
        format!("{org}.{id}")
    }

    /// The RoleBinding of user `id` in a project namespace.
    pub(super) fn membership(id: &str) -> String {
        format!("member-{id}")
    }

    /// The NetworkPolicy of access rule `id`.
    pub(super) fn rule(id: &str) -> String {
        format!("rule-{id}")
    }

    /// A label selector of this installation's objects of `kind`, narrowed
    /// by more `label=value` pairs.
    pub(super) fn selector(&self, kind: &str, more: &[(&str, &str)]) -> String {
        let mut parts = vec![
            format!("{INSTALLATION}={}", self.installation),
            format!("{KIND}={kind}"),
        ];
        parts.extend(more.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join(",")
    }

    /// The labels every object of this installation carries.
    pub(super) fn labels(&self, kind: &str, more: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.to_string(), "nordlys".to_string()),
            (INSTALLATION.to_string(), self.installation.clone()),
            (KIND.to_string(), kind.to_string()),
        ]);
        labels.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    /// Whether an object carries this installation's labels for `kind`.
    pub(super) fn owns(&self, meta: &ObjectMeta, kind: &str) -> bool {
        label(meta, INSTALLATION) == Some(self.installation.as_str())
            && label(meta, KIND) == Some(kind)
    }

    /// The namespace of a new project, marked incomplete until its
    /// default-deny policy and tier are in place.
    pub(super) fn new_namespace(
        &self,
        org: &str,
        id: &str,
        annotations: BTreeMap<String, String>,
    ) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace(id)),
                labels: Some(self.labels("project", &[(ORGANIZATION, org), (PROJECT, id)])),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The policy that selects every pod of the namespace for both
    /// directions and admits nothing: NetworkPolicies only add, so each
    /// access rule then admits exactly its traffic.
    pub(super) fn default_deny(&self, org: &str, id: &str) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(DEFAULT_DENY.to_string()),
                labels: Some(self.labels("default-deny", &[(ORGANIZATION, org), (PROJECT, id)])),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ..Default::default()
            }),
        }
    }

    /// The ResourceQuota of a tier.
    pub(super) fn resource_quota(&self, org: &str, id: &str, tier: &KubeTier) -> ResourceQuota {
        ResourceQuota {
            metadata: ObjectMeta {
                name: Some(TIER_OBJECT.to_string()),
                labels: Some(self.labels("tier", &[(ORGANIZATION, org), (PROJECT, id)])),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some(quantities(&tier.quota)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The LimitRange of a tier; `None` when it sets no container defaults.
    pub(super) fn limit_range(&self, org: &str, id: &str, tier: &KubeTier) -> Option<LimitRange> {
        if tier.default_limits.is_empty() && tier.default_requests.is_empty() {
            return None;
        }
        let some = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| quantities(m));
        Some(LimitRange {
            metadata: ObjectMeta {
                name: Some(TIER_OBJECT.to_string()),
                labels: Some(self.labels("tier", &[(ORGANIZATION, org), (PROJECT, id)])),
                ..Default::default()
            },
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".to_string(),
                    default: some(&tier.default_limits),
                    default_request: some(&tier.default_requests),
                    ..Default::default()
                }],
            }),
        })
    }

    /// A user's ConfigMap: what Nordlys knows of a user the cluster's
    /// identity provider has.
    pub(super) fn user_config_map(
        &self,
        org: &str,
        id: &str,
        data: BTreeMap<String, String>,
    ) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(Names::user(org, id)),
                namespace: Some(self.installation.clone()),
                labels: Some(self.labels("user", &[(ORGANIZATION, org), (USER, id)])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    /// The RoleBinding of a membership.
    pub(super) fn role_binding(
        &self,
        membership: (&str, &str, &str),
        cluster_role: &str,
        subject: &str,
        annotations: BTreeMap<String, String>,
    ) -> RoleBinding {
        let (org, project, user) = membership;
        RoleBinding {
            metadata: ObjectMeta {
                name: Some(Names::membership(user)),
                labels: Some(self.labels(
                    "membership",
                    &[(ORGANIZATION, org), (PROJECT, project), (USER, user)],
                )),
                annotations: Some(annotations),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_string(),
                kind: "ClusterRole".to_string(),
                name: cluster_role.to_string(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".to_string()),
                kind: "User".to_string(),
                name: subject.to_string(),
                namespace: None,
            }]),
        }
    }
}

fn quantities(values: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect()
}

/// The [`REQUEST_HASH`] of a request key: a label value (at most 63).
pub(super) fn request_hash(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// A label's value.
pub(super) fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// An annotation's value.
pub(super) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The built-in ClusterRole a Nordlys role binds: Kubernetes' user-facing
/// roles `admin`, `edit` and `view`.
pub(super) fn cluster_role(role: i32) -> Option<&'static str> {
    match ProjectRole::try_from(role) {
        Ok(ProjectRole::Admin) => Some("admin"),
        Ok(ProjectRole::Member) => Some("edit"),
        Ok(ProjectRole::Reader) => Some("view"),
        _ => None,
    }
}

/// The Nordlys role a ClusterRole stands for.
pub(super) fn role_of(cluster_role: &str) -> Option<ProjectRole> {
    match cluster_role {
        "admin" => Some(ProjectRole::Admin),
        "edit" => Some(ProjectRole::Member),
        "view" => Some(ProjectRole::Reader),
        _ => None,
    }
}

/// The subject name of a user, from the configured template.
pub(super) fn subject(template: &str, org: &str, user: &str, email: &str) -> String {
    template
        .replace("{organization}", org)
        .replace("{user}", user)
        .replace("{email}", email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_dns_labels_however_long_the_id() {
        let names = Names {
            installation: "nordlys".into(),
        };
        assert_eq!(names.namespace("web"), "nordlys-web");
        let long = format!("a{}", "b-".repeat(31));
        let long = long.trim_end_matches('-');
        let ns = names.namespace(long);
        assert!(ns.len() <= 63, "{ns}");
        assert!(ns.starts_with("nordlys-ab-b"));
        assert!(!ns.contains("--"), "{ns}");
        // Two long ids with the same head get different namespaces.
        let other = format!("{long}x");
        assert_ne!(names.namespace(&other), ns);
    }

    #[test]
    fn roles_map_to_the_user_facing_cluster_roles_and_back() {
        for role in [ProjectRole::Admin, ProjectRole::Member, ProjectRole::Reader] {
            let cluster = cluster_role(role as i32).expect("mapped");
            assert_eq!(role_of(cluster), Some(role));
        }
        assert_eq!(cluster_role(0), None);
        assert_eq!(role_of("cluster-admin"), None);
    }

    #[test]
    fn subjects_come_from_the_template() {
        assert_eq!(
            subject("{organization}:{user}", "acme", "ada", ""),
            "acme:ada"
        );
        assert_eq!(
            subject("oidc:{email}", "acme", "ada", "ada@acme.example"),
            "oidc:ada@acme.example"
        );
    }

    #[test]
    fn selectors_narrow_to_the_installation_and_kind() {
        let names = Names {
            installation: "t1".into(),
        };
        assert_eq!(
            names.selector("project", &[(ORGANIZATION, "acme")]),
            "nordlys.io/installation=t1,nordlys.io/kind=project,nordlys.io/organization=acme"
        );
    }
}
