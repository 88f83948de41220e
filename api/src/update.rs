//! Updates (AIP-134) and etags (AIP-154): which fields an update mask names,
//! and the checksum a client sends back to make a change conditional.

use base64::Engine;
use nordlys_proto::pb::nordlys::v1::{AccessRule, Membership, Network, Project, User};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

use crate::validate::{check_email, check_text, MAX_DESCRIPTION, MAX_DISPLAY_NAME};
use crate::Violations;

/// The etag of `parts`: the same for the same fields in every region and
/// service that computes it.
fn etag_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
}

/// A project's etag: over what a client sees of it that is the same in
/// every region (not its per-region statuses).
pub fn project_etag(p: &Project) -> String {
    let mut regions = p.regions.clone();
    regions.sort();
    let created = stamp(p.create_time.as_ref());
    etag_of(&[
        p.name.as_bytes(),
        p.organization.as_bytes(),
        p.display_name.as_bytes(),
        p.description.as_bytes(),
        regions.join(",").as_bytes(),
        created.as_bytes(),
    ])
}

/// A user's etag: over its name, display name, e-mail and create time.
/// Not its regions: a grant on a project in another region places the user
/// there, so each region's record lists the regions it knew of, while the
/// user is the same everywhere.
pub fn user_etag(u: &User) -> String {
    etag_of(&[
        u.name.as_bytes(),
        u.display_name.as_bytes(),
        u.email.as_bytes(),
        stamp(u.create_time.as_ref()).as_bytes(),
    ])
}

/// A network's etag, likewise.
pub fn network_etag(n: &Network) -> String {
    etag_of(&[
        n.name.as_bytes(),
        n.region.as_bytes(),
        n.cidr.as_bytes(),
        n.gateway_ip.as_bytes(),
        n.dns_servers.join(",").as_bytes(),
        stamp(n.create_time.as_ref()).as_bytes(),
    ])
}

/// An access rule's etag, likewise.
pub fn access_rule_etag(r: &AccessRule) -> String {
    etag_of(&[
        r.name.as_bytes(),
        r.region.as_bytes(),
        &r.direction.to_be_bytes(),
        &r.protocol.to_be_bytes(),
        &r.port_range_min.to_be_bytes(),
        &r.port_range_max.to_be_bytes(),
        r.remote_cidr.as_bytes(),
        r.description.as_bytes(),
        stamp(r.create_time.as_ref()).as_bytes(),
    ])
}

/// A membership's etag: its user and role (not its create time, which
/// some clouds do not keep).
pub fn membership_etag(m: &Membership) -> String {
    etag_of(&[m.name.as_bytes(), m.user.as_bytes(), &m.role.to_be_bytes()])
}

fn stamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| format!("{}.{}", t.seconds, t.nanos))
        .unwrap_or_default()
}

/// The fields an update changes, from its mask: `mutable` lists the paths
/// that may change; `*` means all of them; no mask (or an empty one) means
/// those `given` says have a non-empty value. Unknown and output-only paths
/// are field violations of `update_mask`.
pub fn mask_paths<'a>(
    v: &mut Violations,
    mask: Option<&prost_types::FieldMask>,
    mutable: &[&'a str],
    given: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return mutable.iter().copied().filter(|p| given(p)).collect();
    }
    let mut out: Vec<&'a str> = Vec::new();
    for path in paths {
        if path == "*" {
            if paths.len() > 1 {
                v.add("update_mask", "`*` cannot be combined with other paths");
            }
            return mutable.to_vec();
        }
        match mutable.iter().find(|m| **m == path) {
            Some(m) if !out.contains(m) => out.push(m),
            Some(_) => v.add("update_mask", format!("{path:?} is named twice")),
            None => v.add(
                "update_mask",
                format!(
                    "{path:?} cannot be updated; the fields that can are {}",
                    mutable.join(", ")
                ),
            ),
        }
    }
    out
}

/// The fields an UpdateProject changes, each checked as a create checks
/// it; at least one.
pub fn project_paths(
    v: &mut Violations,
    project: &Project,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<&'static str> {
    let paths = mask_paths(
        v,
        mask,
        &["display_name", "description", "regions"],
        |path| !match path {
            "display_name" => project.display_name.is_empty(),
            "description" => project.description.is_empty(),
            _ => project.regions.is_empty(),
        },
    );
    for path in &paths {
        match *path {
            "display_name" => check_text(
                v,
                "project.display_name",
                &project.display_name,
                MAX_DISPLAY_NAME,
                true,
            ),
            "regions" => check_regions(v, "project.regions", &project.regions, "project"),
            _ => check_text(
                v,
                "project.description",
                &project.description,
                MAX_DESCRIPTION,
                false,
            ),
        }
    }
    check_etag(v, "project.etag", &project.etag);
    at_least_one(v, paths)
}

/// A new placement: at least one region, each a region id, none twice
/// (whether each is known is the gateway's to check).
fn check_regions(v: &mut Violations, field: &str, regions: &[String], what: &str) {
    v.check(
        !regions.is_empty(),
        field,
        format!("is required: the regions the {what} is placed in"),
    );
    for (i, region) in regions.iter().enumerate() {
        v.check(
            crate::validate::is_region(region),
            &format!("{field}[{i}]"),
            "must be a region id such as sto1",
        );
        v.check(
            !regions[..i].contains(region),
            &format!("{field}[{i}]"),
            "is named twice",
        );
    }
}

/// The fields an UpdateUser changes, each checked; at least one.
pub fn user_paths(
    v: &mut Violations,
    user: &User,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<&'static str> {
    let paths = mask_paths(
        v,
        mask,
        &["display_name", "email", "regions"],
        |path| !match path {
            "display_name" => user.display_name.is_empty(),
            "email" => user.email.is_empty(),
            _ => user.regions.is_empty(),
        },
    );
    for path in &paths {
        match *path {
            "display_name" => check_text(
                v,
                "user.display_name",
                &user.display_name,
                MAX_DISPLAY_NAME,
                true,
            ),
            "email" => check_email(v, "user.email", &user.email),
            _ => check_regions(v, "user.regions", &user.regions, "user"),
        }
    }
    check_etag(v, "user.etag", &user.etag);
    at_least_one(v, paths)
}

/// The fields an UpdateNetwork changes (its DNS servers: at most 5 IP
/// addresses; their IP version is the region's to check); at least one.
pub fn network_paths(
    v: &mut Violations,
    network: &Network,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<&'static str> {
    let paths = mask_paths(v, mask, &["dns_servers"], |_| {
        !network.dns_servers.is_empty()
    });
    v.check(
        network.dns_servers.len() <= 5,
        "network.dns_servers",
        "at most 5",
    );
    for (i, dns) in network.dns_servers.iter().enumerate() {
        v.check(
            dns.parse::<IpAddr>().is_ok(),
            &format!("network.dns_servers[{i}]"),
            "must be an IP address",
        );
    }
    check_etag(v, "network.etag", &network.etag);
    at_least_one(v, paths)
}

/// The fields an UpdateAccessRule changes: its description only (a rule
/// that admits other traffic is another rule); at least one.
pub fn access_rule_paths(
    v: &mut Violations,
    rule: &AccessRule,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<&'static str> {
    let paths = mask_paths(v, mask, &["description"], |_| !rule.description.is_empty());
    check_text(
        v,
        "access_rule.description",
        &rule.description,
        MAX_RULE_DESCRIPTION,
        false,
    );
    check_etag(v, "access_rule.etag", &rule.etag);
    at_least_one(v, paths)
}

/// The longest access rule description.
pub const MAX_RULE_DESCRIPTION: usize = 255;

/// An etag is ours only if it is this long at most (ours are 16).
pub const MAX_ETAG: usize = 64;

/// An etag sent back: at most [`MAX_ETAG`] characters.
pub fn check_etag(v: &mut Violations, field: &str, etag: &str) {
    v.check(
        etag.len() <= MAX_ETAG,
        field,
        format!("is at most {MAX_ETAG} characters (send back the etag a read returned)"),
    );
}

fn at_least_one(v: &mut Violations, paths: Vec<&'static str>) -> Vec<&'static str> {
    if paths.is_empty() {
        v.add("update_mask", "names no field to change");
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> prost_types::FieldMask {
        prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    const MUTABLE: &[&str] = &["display_name", "description"];

    #[test]
    fn masks_name_mutable_fields() {
        let mut v = Violations::new();
        assert_eq!(
            mask_paths(&mut v, Some(&mask(&["description"])), MUTABLE, |_| true),
            vec!["description"]
        );
        assert_eq!(
            mask_paths(&mut v, Some(&mask(&["*"])), MUTABLE, |_| false),
            MUTABLE.to_vec()
        );
        assert_eq!(
            mask_paths(&mut v, None, MUTABLE, |p| p == "display_name"),
            vec!["display_name"]
        );
        assert!(v.into_result().is_ok());
    }

    #[test]
    fn bad_masks_are_field_violations() {
        for bad in [
            &["name"][..],
            &["create_time"],
            &["description", "description"],
            &["*", "description"],
        ] {
            let mut v = Violations::new();
            mask_paths(&mut v, Some(&mask(bad)), MUTABLE, |_| true);
            let status = v.into_result().expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn updates_check_their_fields_and_etag() {
        let project = Project {
            name: "projects/web".into(),
            display_name: "Web".into(),
            etag: "x".repeat(MAX_ETAG + 1),
            ..Default::default()
        };
        let mut v = Violations::new();
        assert_eq!(project_paths(&mut v, &project, None), ["display_name"]);
        let status = v.into_result().expect_err("etag too long");
        assert!(status.message().contains("project.etag"), "{status:?}");

        let user = User {
            email: "not an address".into(),
            ..Default::default()
        };
        let mut v = Violations::new();
        assert_eq!(user_paths(&mut v, &user, None), ["email"]);
        assert!(v.into_result().is_err(), "bad email");

        let network = Network {
            dns_servers: vec!["10.0.0.2".into(), "nine".into()],
            ..Default::default()
        };
        let mut v = Violations::new();
        network_paths(&mut v, &network, None);
        let status = v.into_result().expect_err("bad server");
        assert!(status.message().contains("dns_servers[1]"), "{status:?}");

        let mut v = Violations::new();
        assert!(project_paths(&mut v, &Project::default(), None).is_empty());
        assert!(v.into_result().is_err(), "nothing to change");
    }

    #[test]
    fn etags_follow_the_fields_and_ignore_statuses() {
        let mut p = Project {
            name: "projects/web".into(),
            display_name: "Web".into(),
            regions: vec!["sto1".into(), "osl1".into()],
            ..Default::default()
        };
        let first = project_etag(&p);
        p.regions.reverse();
        assert_eq!(project_etag(&p), first, "region order does not matter");
        p.region_status.push(Default::default());
        assert_eq!(project_etag(&p), first, "statuses do not count");
        p.display_name = "Web 2".into();
        assert_ne!(project_etag(&p), first);
    }
}
