//! Which environment manages a resource, so that a Project, Network,
//! AccessRule, User or Membership read on its own says so (`managed_by`).
//!
//! An apply writes a marker (`res.{name}` in the environments bucket, the
//! name's `/` as `.`) for each resource once it is known to be the
//! environment's: made by a step that succeeded, or found by the plan and
//! already its own (so an apply cut short between a create and its mark
//! marks it next time). It removes a resource's marker before the record
//! that drops the resource. So a marker never names an environment for a
//! resource it did not make; one left on a deleted resource whose id
//! another organization then takes is not shown there (see `Api::mark`).
//! Every gateway follows the markers into memory, so reads cost a map
//! lookup, not a KV round trip.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv;

/// The markers' keys start with this.
const PREFIX: &str = "res.";

/// The key of `resource`'s marker. Resource names hold letters, digits,
/// `-` and `/`, all valid in a key but `/`, a token separator there.
pub(super) fn key(resource: &str) -> String {
    format!("{PREFIX}{}", resource.replace('/', "."))
}

fn resource_of(key: &str) -> Option<String> {
    key.strip_prefix(PREFIX).map(|rest| rest.replace('.', "/"))
}

/// The markers as this gateway last saw them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Markers {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Resource name → environment name.
    by_resource: RwLock<HashMap<String, String>>,
    /// The last bucket revision applied.
    applied: RwLock<u64>,
}

impl Markers {
    /// The environment managing `resource`, as last seen.
    pub(crate) fn managed_by(&self, resource: &str) -> Option<String> {
        self.shared
            .by_resource
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(resource)
            .cloned()
    }

    fn applied(&self) -> u64 {
        *self
            .shared
            .applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some(resource) = resource_of(&entry.key) else {
            return;
        };
        let mut map = self
            .shared
            .by_resource
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match entry.operation {
            kv::Operation::Put => {
                map.insert(resource, String::from_utf8_lossy(&entry.value).into_owned());
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&resource);
            }
        }
        *self
            .shared
            .applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = entry.revision;
    }

    /// Follows the markers for as long as the gateway runs
    /// ([`nordlys_transport::follow_kv`]).
    pub(super) async fn follow(&self, kv: kv::Store) {
        nordlys_transport::follow_kv(
            &kv,
            &format!("{PREFIX}>"),
            "environment markers",
            || self.applied(),
            |entry| self.apply(entry),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_resource_names() {
        for name in [
            "projects/web",
            "projects/web/networks/backend",
            "projects/web/accessRules/ssh",
            "projects/web/members/ada",
            "organizations/acme/users/ada",
        ] {
            let k = key(name);
            assert!(k.starts_with("res.") && !k.contains('/'), "{k}");
            assert_eq!(resource_of(&k).as_deref(), Some(name));
        }
        assert_eq!(resource_of("env.acme.staging"), None);
    }
}
