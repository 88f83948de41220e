//! How Nordlys resources are written into Keystone and Neutron fields and
//! read back: project tags, user attributes, network and rule descriptions.
//!
//! Everything a resource needs to be rebuilt lives in the cloud itself, so a
//! restarted (or another) regiond sees what the first one did, request ids
//! included.

use nordlys_proto::pb::nordlys::v1::{Direction, Protocol};
use sha2::{Digest, Sha256};

/// The tag names of one Nordlys installation (its namespace, `nordlys` by
/// default): `{ns}` marks its projects, `{ns}-project:{id}` names one.
#[derive(Debug, Clone)]
pub(crate) struct Tags {
    ns: String,
}

/// A Keystone project tag may hold neither `/` nor `,` (and neither may a
/// Neutron filter value hold a `,`), so those and `%` are percent-encoded.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '/' | ',' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]; a malformed escape is kept as it is.
pub(crate) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Tags {
    pub(crate) fn new(namespace: &str) -> Tags {
        Tags {
            ns: namespace.to_string(),
        }
    }

    /// The namespace itself: the tag on every project (and domain) of this
    /// installation.
    pub(crate) fn managed(&self) -> &str {
        &self.ns
    }

    /// The Keystone domain of an organization.
    pub(crate) fn domain(&self, org_id: &str) -> String {
        format!("{}-{org_id}", self.ns)
    }

    /// The organization id of a domain name of this installation.
    pub(crate) fn org_of_domain<'a>(&self, domain: &'a str) -> Option<&'a str> {
        domain
            .strip_prefix(self.ns.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
    }

    pub(crate) fn tag(&self, key: &str, value: &str) -> String {
        format!("{}-{key}:{value}", self.ns)
    }

    /// The value of the `{ns}-{key}:` tag, if any.
    pub(crate) fn find<'a>(&self, tags: &'a [String], key: &str) -> Option<&'a str> {
        let prefix = format!("{}-{key}:", self.ns);
        tags.iter().find_map(|t| t.strip_prefix(prefix.as_str()))
    }

    /// The filter value that finds tagged projects (Keystone's `tags`
    /// query: all of them).
    pub(crate) fn all_of(&self, tags: &[String]) -> String {
        std::iter::once(self.ns.clone())
            .chain(tags.iter().cloned())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The key that scopes a request id to its tenant: `{org}:{id}` (or
    /// `operator:{id}`); request ids hold no `/` or `,`.
    pub(crate) fn request_key(tenant_key: &str, request_id: &str) -> String {
        let tenant =
            tenant_key
                .strip_prefix("organizations/")
                .unwrap_or(if tenant_key.is_empty() {
                    "operator"
                } else {
                    tenant_key
                });
        format!("{tenant}:{request_id}")
    }

    /// A Neutron network's description: marks it as this installation's,
    /// with the request key it was created with.
    pub(crate) fn network_description(&self, request_key: Option<&str>) -> String {
        match request_key {
            Some(key) => format!("{}-request:{key}", self.ns),
            None => self.ns.clone(),
        }
    }

    /// The request key a network description carries, if any.
    pub(crate) fn network_request<'a>(&self, description: &'a str) -> Option<&'a str> {
        description
            .strip_prefix(self.ns.as_str())?
            .strip_prefix("-request:")
    }

    /// Whether a network description is one of ours.
    pub(crate) fn is_our_network(&self, description: &str) -> bool {
        description == self.ns
            || description
                .strip_prefix(self.ns.as_str())
                .is_some_and(|rest| rest.starts_with("-request:"))
    }
}

/// What a security group rule's description carries: the Nordlys rule id,
/// a short hash of the request key it was created with, and the rule's own
/// description. Neutron rules have no name or tags, and their description is
/// set in the same call that creates them, so a crash never leaves a rule
/// without its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleLabel {
    pub(crate) id: String,
    pub(crate) request: Option<String>,
    pub(crate) description: String,
}

/// Neutron keeps at most this many characters of a description.
pub(crate) const MAX_NEUTRON_DESCRIPTION: usize = 255;

impl RuleLabel {
    /// 16 hex digits of SHA-256 of the request key: enough to tell retries
    /// apart, short enough to leave room for the rule's description.
    pub(crate) fn hash(request_key: &str) -> String {
        hex::encode(&Sha256::digest(request_key.as_bytes())[..8])
    }

    pub(crate) fn encode(&self, ns: &str) -> String {
        let mut out = format!("{ns}:{}", self.id);
        if let Some(request) = &self.request {
            out.push('#');
            out.push_str(request);
        }
        if !self.description.is_empty() {
            out.push(' ');
            out.push_str(&self.description);
        }
        out
    }

    pub(crate) fn decode(ns: &str, text: &str) -> Option<RuleLabel> {
        let rest = text.strip_prefix(ns)?.strip_prefix(':')?;
        let (head, description) = rest.split_once(' ').unwrap_or((rest, ""));
        let (id, request) = match head.split_once('#') {
            Some((id, request)) => (id, Some(request.to_string())),
            None => (head, None),
        };
        if id.is_empty() {
            return None;
        }
        Some(RuleLabel {
            id: id.to_string(),
            request,
            description: description.to_string(),
        })
    }
}

/// Neutron's `direction`.
pub(crate) fn direction(d: i32) -> &'static str {
    match Direction::try_from(d) {
        Ok(Direction::Egress) => "egress",
        _ => "ingress",
    }
}

pub(crate) fn direction_from(d: &str) -> Direction {
    if d == "egress" {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// Neutron's `protocol` (none for any); ICMP is `ipv6-icmp` for IPv6.
pub(crate) fn protocol(p: i32, ipv6: bool) -> Option<&'static str> {
    match Protocol::try_from(p) {
        Ok(Protocol::Tcp) => Some("tcp"),
        Ok(Protocol::Udp) => Some("udp"),
        Ok(Protocol::Icmp) if ipv6 => Some("ipv6-icmp"),
        Ok(Protocol::Icmp) => Some("icmp"),
        _ => None,
    }
}

pub(crate) fn protocol_from(p: Option<&str>) -> Protocol {
    match p {
        Some("tcp" | "6") => Protocol::Tcp,
        Some("udp" | "17") => Protocol::Udp,
        Some("icmp" | "1" | "ipv6-icmp" | "icmpv6" | "58") => Protocol::Icmp,
        _ => Protocol::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_tags_may_not_hold() {
        let text = "Web/Shop, 100% done";
        assert_eq!(escape(text), "Web%2FShop%2C 100%25 done");
        assert_eq!(unescape(&escape(text)), text);
        assert_eq!(unescape("50%"), "50%");
    }

    #[test]
    fn names_domains_tags_and_request_keys() {
        let tags = Tags::new("nordlys");
        assert_eq!(tags.domain("acme"), "nordlys-acme");
        assert_eq!(tags.org_of_domain("nordlys-acme"), Some("acme"));
        assert_eq!(tags.org_of_domain("Default"), None);
        let list = vec!["nordlys".to_string(), tags.tag("project", "web")];
        assert_eq!(tags.find(&list, "project"), Some("web"));
        assert_eq!(
            tags.all_of(&[tags.tag("project", "web")]),
            "nordlys,nordlys-project:web"
        );
        assert_eq!(Tags::request_key("organizations/acme", "r-1"), "acme:r-1");
        assert_eq!(Tags::request_key("", "r-1"), "operator:r-1");
        assert!(tags.is_our_network(&tags.network_description(Some("acme:r-1"))));
        assert!(tags.is_our_network("nordlys"));
        assert!(!tags.is_our_network("nordlys2"));
    }

    #[test]
    fn rule_labels_round_trip() {
        let label = RuleLabel {
            id: "ssh".into(),
            request: Some(RuleLabel::hash("acme:r-1")),
            description: "SSH from the office".into(),
        };
        let text = label.encode("nordlys");
        assert!(text.starts_with("nordlys:ssh#"));
        assert_eq!(RuleLabel::decode("nordlys", &text), Some(label));
        let bare = RuleLabel {
            id: "any".into(),
            request: None,
            description: String::new(),
        };
        assert_eq!(
            RuleLabel::decode("nordlys", &bare.encode("nordlys")),
            Some(bare)
        );
        assert_eq!(RuleLabel::decode("nordlys", "other:ssh"), None);
    }

    #[test]
    fn maps_protocols_both_ways() {
        assert_eq!(protocol(Protocol::Icmp as i32, true), Some("ipv6-icmp"));
        assert_eq!(protocol(Protocol::Any as i32, false), None);
        assert_eq!(protocol_from(Some("ipv6-icmp")), Protocol::Icmp);
        assert_eq!(protocol_from(None), Protocol::Any);
    }
}
