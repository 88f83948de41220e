//! Quota tiers across Neutron, Nova and Cinder: which service a tier's
//! quota name belongs to, and the Nova and Cinder quota-set calls.
//!
//! A tier is one flat table; each name belongs to exactly one service, so
//! nothing is ever set twice. Networking belongs to Neutron: Nova's retired
//! networking quotas (`floating_ips`, `security_groups`, ...; gone from its
//! API since microversion 2.36) are refused with the Neutron name to use.
//!
//! openstack_sdk has typed builders for these calls in its `compute` and
//! `block_storage` features, but they fix the set of names per microversion
//! and would double the SDK code compiled; the four calls here are small
//! [`RestEndpoint`]s sent through the same client as the Keystone and
//! Neutron calls (same token, renewal, retry on 401 and trace context).

use nordlys_proto::pb::nordlys::v1::CloudResources;
use std::borrow::Cow;
use std::collections::BTreeMap;

use openstack_sdk::api::{BodyError, QueryParams, RestEndpoint};
use openstack_sdk::types::ServiceType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cloud::QUOTA_NAMES as NEUTRON_NAMES;

/// The Nova quota names a tier may set (Nova's quota-set API, without the
/// retired networking ones).
pub(crate) const NOVA_NAMES: &[&str] = &[
    "cores",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
    "injected_files",
    "instances",
    "key_pairs",
    "metadata_items",
    "ram",
    "server_group_members",
    "server_groups",
];

/// The Cinder quota names a tier may set (the project-wide ones; quotas
/// per volume type need types that exist and are left out).
pub(crate) const CINDER_NAMES: &[&str] = &[
    "backup_gigabytes",
    "backups",
    "gigabytes",
    "groups",
    "per_volume_gigabytes",
    "snapshots",
    "volumes",
];

/// Nova's retired networking quotas and the Neutron quota to use instead.
const RETIRED_NOVA_NAMES: &[(&str, &str)] = &[
    ("fixed_ips", "port"),
    ("floating_ips", "floatingip"),
    ("networks", "network"),
    ("security_group_rules", "security_group_rule"),
    ("security_groups", "security_group"),
];

/// A tier's quotas, sorted by the service that keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TierQuotas {
    pub(crate) network: BTreeMap<String, i64>,
    pub(crate) compute: BTreeMap<String, i64>,
    pub(crate) volume: BTreeMap<String, i64>,
}

impl TierQuotas {
    /// Sorts a tier's table by service; a name no service knows is an
    /// error naming the known ones.
    pub(crate) fn split(tier: &str, values: &BTreeMap<String, i64>) -> Result<TierQuotas, String> {
        let mut quotas = TierQuotas::default();
        for (name, value) in values {
            let service = if NEUTRON_NAMES.contains(&name.as_str()) {
                &mut quotas.network
            } else if NOVA_NAMES.contains(&name.as_str()) {
                &mut quotas.compute
            } else if CINDER_NAMES.contains(&name.as_str()) {
                &mut quotas.volume
            } else if let Some((_, neutron)) = RETIRED_NOVA_NAMES.iter().find(|(n, _)| n == name) {
                return Err(format!(
                    "quota tier {tier}: {name} is a networking quota, which Neutron keeps: \
                     use {neutron}"
                ));
            } else {
                return Err(format!(
                    "quota tier {tier}: {name} is not a quota of Neutron, Nova or Cinder \
                     (known: Neutron {}; Nova {}; Cinder {})",
                    NEUTRON_NAMES.join(", "),
                    NOVA_NAMES.join(", "),
                    CINDER_NAMES.join(", ")
                ));
            };
            service.insert(name.clone(), *value);
        }
        Ok(quotas)
    }
}

/// Nova or Cinder, the services with `os-quota-sets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaSetService {
    /// Nova (`compute` in the catalog).
    Compute,
    /// Cinder (`volumev3` in the catalog; `block-storage` its official
    /// type).
    Volume,
}

impl QuotaSetService {
    /// The name errors and metrics use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QuotaSetService::Compute => "nova",
            QuotaSetService::Volume => "cinder",
        }
    }

    pub(crate) fn service_type(self) -> ServiceType {
        match self {
            QuotaSetService::Compute => ServiceType::Compute,
            QuotaSetService::Volume => ServiceType::BlockStorage,
        }
    }
}

/// The microversion whose quota detail has `in_use` (and no networking).
const COMPUTE_DETAIL_VERSION: &str = "compute 2.79";

/// `PUT os-quota-sets/{project}` with `{"quota_set": {...}}`, or `DELETE`
/// of it (back to the defaults), or the `GET` of its limits and usage.
pub(crate) struct QuotaSet<'a> {
    pub(crate) service: QuotaSetService,
    pub(crate) project_id: &'a str,
    pub(crate) call: QuotaSetCall<'a>,
    headers: http::HeaderMap,
}

/// What a [`QuotaSet`] request does.
pub(crate) enum QuotaSetCall<'a> {
    Set(&'a BTreeMap<String, i64>),
    Reset,
    Usage,
}

impl<'a> QuotaSet<'a> {
    pub(crate) fn new(
        service: QuotaSetService,
        project_id: &'a str,
        call: QuotaSetCall<'a>,
    ) -> QuotaSet<'a> {
        let mut headers = http::HeaderMap::new();
        if service == QuotaSetService::Compute && matches!(call, QuotaSetCall::Usage) {
            headers.insert(
                "OpenStack-API-Version",
                http::HeaderValue::from_static(COMPUTE_DETAIL_VERSION),
            );
        }
        QuotaSet {
            service,
            project_id,
            call,
            headers,
        }
    }
}

impl RestEndpoint for QuotaSet<'_> {
    fn method(&self) -> http::Method {
        match self.call {
            QuotaSetCall::Set(_) => http::Method::PUT,
            QuotaSetCall::Reset => http::Method::DELETE,
            QuotaSetCall::Usage => http::Method::GET,
        }
    }

    fn endpoint(&self) -> Cow<'static, str> {
        match (&self.call, self.service) {
            // Nova's usage is a sub-resource; Cinder's a query parameter.
            (QuotaSetCall::Usage, QuotaSetService::Compute) => {
                format!("os-quota-sets/{}/detail", self.project_id).into()
            }
            _ => format!("os-quota-sets/{}", self.project_id).into(),
        }
    }

    fn parameters(&self) -> QueryParams<'_> {
        let mut params = QueryParams::default();
        if let (QuotaSetCall::Usage, QuotaSetService::Volume) = (&self.call, self.service) {
            params.push("usage", "True");
        }
        params
    }

    fn body(&self) -> Result<Option<(&'static str, Vec<u8>)>, BodyError> {
        match self.call {
            QuotaSetCall::Set(values) => {
                let body = serde_json::json!({ "quota_set": values });
                Ok(Some(("application/json", serde_json::to_vec(&body)?)))
            }
            _ => Ok(None),
        }
    }

    fn service_type(&self) -> ServiceType {
        self.service.service_type()
    }

    fn response_key(&self) -> Option<Cow<'static, str>> {
        match self.call {
            QuotaSetCall::Reset => None,
            _ => Some("quota_set".into()),
        }
    }

    fn request_headers(&self) -> Option<&http::HeaderMap> {
        Some(&self.headers)
    }
}

/// One quota of a project: its limit (-1: unlimited) and what is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    /// The project's limit; -1 means none.
    pub limit: i64,
    /// What the project uses now.
    pub in_use: i64,
}

/// A project's Nova and Cinder quotas with their use, by quota name; a
/// service not in the region's catalog is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectQuotaUsage {
    /// Nova's (`instances`, `cores`, `ram` in MB, ...).
    pub compute: Option<BTreeMap<String, QuotaUse>>,
    /// Cinder's (`volumes`, `gigabytes`, `snapshots`, ...).
    pub volume: Option<BTreeMap<String, QuotaUse>>,
}

/// Reads a `quota_set` with usage (Nova's detail, Cinder's `usage=True`):
/// each quota is `{"limit", "in_use", "reserved"}`; the `id` and anything
/// else not shaped so is skipped, and a quota must have a numeric limit.
pub(crate) fn parse_usage(quota_set: &Value) -> Result<BTreeMap<String, QuotaUse>, String> {
    parse_limits(quota_set, "in_use")
}

/// Each `{"limit": .., <used>: ..}` of a quota document, by name; the rest
/// (an `id`) skipped. A quota without a numeric limit is an error.
fn parse_limits(quotas: &Value, used: &str) -> Result<BTreeMap<String, QuotaUse>, String> {
    let Some(fields) = quotas.as_object() else {
        return Err(format!("quotas are not an object: {quotas}"));
    };
    let mut usage = BTreeMap::new();
    for (name, value) in fields {
        let Some(entry) = value.as_object() else {
            continue;
        };
        let limit = entry
            .get("limit")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("quota {name} has no numeric limit: {value}"))?;
        let in_use = entry.get(used).and_then(Value::as_i64).unwrap_or(0);
        usage.insert(name.clone(), QuotaUse { limit, in_use });
    }
    Ok(usage)
}

/// Reads Neutron's quota details: each quota is `{"limit", "used",
/// "reserved"}`.
pub(crate) fn parse_neutron_usage(quota: &Value) -> Result<BTreeMap<String, QuotaUse>, String> {
    parse_limits(quota, "used")
}

/// One field of [`CloudResources`].
type Field = fn(&mut CloudResources) -> &mut i64;
/// Where one of those fields comes from: a service's quotas and a name.
type Source<'a> = (Option<&'a BTreeMap<String, QuotaUse>>, &'static str, Field);

/// A project's cloud quotas in the API's terms, from Nova's, Cinder's and
/// Neutron's own (a service the region lacks leaves its fields at 0).
pub(crate) fn cloud_resources(
    usage: &ProjectQuotaUsage,
    neutron: &BTreeMap<String, QuotaUse>,
) -> (CloudResources, CloudResources) {
    let mut limits = CloudResources::default();
    let mut used = CloudResources::default();
    let sources: [Source<'_>; 8] = [
        (usage.compute.as_ref(), "instances", |c| &mut c.instances),
        (usage.compute.as_ref(), "cores", |c| &mut c.cores),
        (usage.compute.as_ref(), "ram", |c| &mut c.ram_mb),
        (usage.volume.as_ref(), "volumes", |c| &mut c.volumes),
        (usage.volume.as_ref(), "gigabytes", |c| {
            &mut c.volume_gigabytes
        }),
        (usage.volume.as_ref(), "snapshots", |c| &mut c.snapshots),
        (Some(neutron), "floatingip", |c| &mut c.floating_ips),
        (Some(neutron), "security_group", |c| &mut c.security_groups),
    ];
    for (source, name, field) in sources {
        if let Some(q) = source.and_then(|m| m.get(name)) {
            *field(&mut limits) = q.limit;
            *field(&mut used) = q.in_use;
        }
    }
    (limits, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_resources_take_each_name_from_its_service() {
        let quota = serde_json::json!({
            "network": {"limit": 10, "used": 1, "reserved": 0},
            "floatingip": {"limit": 4, "used": 2, "reserved": 0},
            "security_group": {"limit": 5, "used": 1, "reserved": 0}
        });
        let neutron = parse_neutron_usage(&quota).expect("parses");
        let nova = serde_json::json!({
            "id": "p",
            "cores": {"limit": 8, "in_use": 2, "reserved": 0},
            "ram": {"limit": 16384, "in_use": 2048, "reserved": 0},
            "instances": {"limit": 5, "in_use": 1, "reserved": 0}
        });
        let usage = ProjectQuotaUsage {
            compute: Some(parse_usage(&nova).expect("parses")),
            volume: None,
        };
        let (limits, used) = cloud_resources(&usage, &neutron);
        assert_eq!((limits.cores, used.cores), (8, 2));
        assert_eq!((limits.ram_mb, used.ram_mb), (16384, 2048));
        assert_eq!((limits.instances, used.instances), (5, 1));
        assert_eq!((limits.floating_ips, used.floating_ips), (4, 2));
        assert_eq!((limits.security_groups, used.security_groups), (5, 1));
        assert_eq!((limits.volumes, used.volumes), (0, 0), "no Cinder here");
        assert!(parse_neutron_usage(&serde_json::json!({"network": {"used": 1}})).is_err());
    }

    fn tier(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn sorts_a_tier_by_service() {
        let quotas = TierQuotas::split(
            "small",
            &tier(&[
                ("network", 2),
                ("security_group", 4),
                ("instances", 5),
                ("cores", 8),
                ("ram", 16384),
                ("volumes", 7),
                ("gigabytes", 200),
                ("snapshots", 3),
            ]),
        )
        .expect("known names");
        assert_eq!(
            quotas.network,
            tier(&[("network", 2), ("security_group", 4)])
        );
        assert_eq!(
            quotas.compute,
            tier(&[("cores", 8), ("instances", 5), ("ram", 16384)])
        );
        assert_eq!(
            quotas.volume,
            tier(&[("gigabytes", 200), ("snapshots", 3), ("volumes", 7)])
        );
    }

    #[test]
    fn the_reference_deployment_tiers_size_every_service() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/nordlys/regiond-sto1.toml");
        let config = crate::config::Config::load(Some(&file), &crate::config::Overrides::default())
            .expect("deploy/nordlys/regiond-sto1.toml loads");
        assert_eq!(config.openstack.tier_of("bigcorp"), "large");
        for (tier, values) in &config.openstack.tiers {
            let quotas = TierQuotas::split(tier, values).expect("known names");
            assert!(
                !quotas.network.is_empty()
                    && quotas.compute.contains_key("instances")
                    && quotas.volume.contains_key("gigabytes"),
                "{tier}: {quotas:?}"
            );
        }
    }

    #[test]
    fn no_name_belongs_to_two_services() {
        for name in NOVA_NAMES.iter().chain(CINDER_NAMES) {
            assert!(!NEUTRON_NAMES.contains(name), "{name}");
        }
        for name in NOVA_NAMES {
            assert!(!CINDER_NAMES.contains(name), "{name}");
        }
    }

    #[test]
    fn refuses_unknown_and_retired_networking_names() {
        let e = TierQuotas::split("small", &tier(&[("vcpus", 4)])).expect_err("unknown");
        assert!(e.contains("vcpus is not a quota"), "{e}");
        assert!(
            e.contains("instances") && e.contains("gigabytes") && e.contains("network"),
            "{e}"
        );
        let e = TierQuotas::split("small", &tier(&[("security_groups", 4)])).expect_err("retired");
        assert!(e.contains("use security_group"), "{e}");
    }

    #[test]
    fn reads_nova_detail_and_cinder_usage() {
        // As Nova 26 (microversion 2.79) answers GET os-quota-sets/{id}/detail.
        let nova = serde_json::json!({
            "id": "8a7b",
            "cores": {"limit": 8, "in_use": 2, "reserved": 0},
            "instances": {"limit": 5, "in_use": 1, "reserved": 0},
            "ram": {"limit": 16384, "in_use": 2048, "reserved": 0},
            "key_pairs": {"limit": 100, "in_use": 0, "reserved": 0},
            "server_groups": {"limit": -1, "in_use": 0, "reserved": 0}
        });
        let usage = parse_usage(&nova).expect("parses");
        assert_eq!(
            usage["cores"],
            QuotaUse {
                limit: 8,
                in_use: 2
            }
        );
        assert_eq!(usage["ram"].in_use, 2048);
        assert_eq!(usage["server_groups"].limit, -1);
        assert!(!usage.contains_key("id"));
        // As Cinder 21 answers GET os-quota-sets/{id}?usage=True.
        let cinder = serde_json::json!({
            "id": "8a7b",
            "volumes": {"limit": 7, "in_use": 1, "reserved": 0, "allocated": 0},
            "gigabytes": {"limit": 200, "in_use": 5, "reserved": 0, "allocated": 0},
            "snapshots": {"limit": 3, "in_use": 0, "reserved": 0, "allocated": 0},
            "per_volume_gigabytes": {"limit": -1, "in_use": 0, "reserved": 0, "allocated": 0}
        });
        let usage = parse_usage(&cinder).expect("parses");
        assert_eq!(usage["gigabytes"].in_use, 5);
        assert_eq!(usage["volumes"].limit, 7);
        assert_eq!(usage.len(), 4);
    }

    #[test]
    fn refuses_usage_without_limits() {
        assert!(parse_usage(&serde_json::json!([1, 2])).is_err());
        let e = parse_usage(&serde_json::json!({"cores": {"in_use": 1}})).expect_err("no limit");
        assert!(e.contains("cores"), "{e}");
    }

    #[test]
    fn builds_the_requests() {
        let values = tier(&[("cores", 8)]);
        let set = QuotaSet::new(QuotaSetService::Compute, "p1", QuotaSetCall::Set(&values));
        assert_eq!(set.method(), http::Method::PUT);
        assert_eq!(set.endpoint(), "os-quota-sets/p1");
        let body = set.body().expect("body").expect("some").1;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).expect("json"),
            serde_json::json!({"quota_set": {"cores": 8}})
        );
        let detail = QuotaSet::new(QuotaSetService::Compute, "p1", QuotaSetCall::Usage);
        assert_eq!(detail.endpoint(), "os-quota-sets/p1/detail");
        assert_eq!(
            detail
                .request_headers()
                .and_then(|h| h.get("OpenStack-API-Version")),
            Some(&http::HeaderValue::from_static("compute 2.79"))
        );
        let usage = QuotaSet::new(QuotaSetService::Volume, "p1", QuotaSetCall::Usage);
        assert_eq!(usage.endpoint(), "os-quota-sets/p1");
        assert_eq!(usage.service_type(), ServiceType::BlockStorage);
        let reset = QuotaSet::new(QuotaSetService::Volume, "p1", QuotaSetCall::Reset);
        assert_eq!(reset.method(), http::Method::DELETE);
    }
}
