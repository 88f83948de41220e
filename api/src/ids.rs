//! Ids the API makes up when the caller gives none.

use sha2::{Digest, Sha256};

/// An id for a new resource of `kind` (`prj`, `usr`, ...). With a request
/// id it is derived from it, so a retried create names the same resource
/// even through another gateway; without one it is random.
pub fn derive(kind: &str, organization: &str, request_id: &str) -> String {
    let seed = if request_id.is_empty() {
        random_hex(16)
    } else {
        let mut h = Sha256::new();
        h.update(organization.as_bytes());
        h.update([0]);
        h.update(request_id.as_bytes());
        hex::encode(&h.finalize()[..8])
    };
    format!("{kind}-{}", &seed[..16])
}

/// `n` (at most 32) random hex characters, from a v4 UUID (OS randomness).
pub fn random_hex(n: usize) -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(n.min(32));
    s
}

/// The reservation id of a create: stable for a request id, so repeating a
/// create never reserves quota twice.
pub fn reservation(organization: &str, resource: &str, request_id: &str) -> String {
    if request_id.is_empty() {
        return format!("r-{}", random_hex(24));
    }
    let mut h = Sha256::new();
    h.update(organization.as_bytes());
    h.update([0]);
    h.update(resource.as_bytes());
    h.update([0]);
    h.update(request_id.as_bytes());
    format!("r-{}", hex::encode(&h.finalize()[..12]))
}

/// The operation id of one resource's removal in a region: the region, the
/// name and the create time name exactly one resource that ever existed, so
/// a retried give-back of its quota counts once, and a resource created
/// again under the same name is a new removal.
pub fn removal(
    region: &str,
    resource: &str,
    create_time: Option<&prost_types::Timestamp>,
    incarnation: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(region.as_bytes());
    h.update([0]);
    h.update(resource.as_bytes());
    h.update([0]);
    if let Some(t) = create_time {
        h.update(t.seconds.to_be_bytes());
        h.update(t.nanos.to_be_bytes());
    }
    // What tells a resource from an earlier one of the same name and create
    // time in the region (a project moved out and back): without it, the
    // second removal would be taken for a retry of the first.
    if !incarnation.is_empty() {
        h.update([0]);
        h.update(incarnation.as_bytes());
    }
    format!("rm-{}", hex::encode(&h.finalize()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_valid() {
        let a = derive("prj", "organizations/acme", "req-1");
        assert_eq!(a, derive("prj", "organizations/acme", "req-1"));
        assert_ne!(a, derive("prj", "organizations/other", "req-1"));
        assert!(crate::validate::is_id(&a), "{a}");
        let r = derive("prj", "organizations/acme", "");
        assert!(crate::validate::is_id(&r), "{r}");
        assert_ne!(r, derive("prj", "organizations/acme", ""));
    }

    #[test]
    fn removals_name_one_resource_life() {
        let t1 = prost_types::Timestamp {
            seconds: 1,
            nanos: 2,
        };
        let t2 = prost_types::Timestamp {
            seconds: 1,
            nanos: 3,
        };
        let a = removal("sto1", "projects/web", Some(&t1), "");
        assert_eq!(a, removal("sto1", "projects/web", Some(&t1), ""));
        assert_ne!(a, removal("sto1", "projects/web", Some(&t2), ""));
        assert_ne!(a, removal("osl1", "projects/web", Some(&t1), ""));
        // The same project moved out of the region and back.
        let again = removal("sto1", "projects/web", Some(&t1), "request-2");
        assert_ne!(a, again);
        assert_eq!(
            again,
            removal("sto1", "projects/web", Some(&t1), "request-2")
        );
        assert!(a.len() <= 64);
    }
}
