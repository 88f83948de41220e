//! Input rules. Each `check_*` function records field violations under the
//! field path the caller passes, so messages name the field as the caller
//! wrote it (`project.display_name`, `network.cidr`).

use std::net::IpAddr;

use ipnet::IpNet;
use nordlys_proto::pb::nordlys::v1::{AccessRule, Direction, Network, Protocol};

use crate::Violations;

/// The longest display name.
pub const MAX_DISPLAY_NAME: usize = 64;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 1024;
/// The longest request id.
pub const MAX_REQUEST_ID: usize = 64;

/// A resource id: 3 to 63 lowercase letters, digits and hyphens, starting
/// with a letter and not ending with a hyphen (a DNS label, as AIP-122 asks).
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A principal (organization member id): 1 to 128 of lowercase letters,
/// digits and `.`, `_`, `@`, `-`, starting with a letter or digit.
pub fn is_principal(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'@' | b'-')
        })
}

/// A region id: 1 to 32 lowercase letters, digits and hyphens, starting with
/// a letter (it becomes a NATS subject token).
pub fn is_region(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks a resource id field.
pub fn check_id(v: &mut Violations, field: &str, id: &str) {
    v.check(
        is_id(id),
        field,
        "must be 3 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
    );
}

/// Checks free text: at most `max` characters, no control characters;
/// `required` refuses the empty string.
pub fn check_text(v: &mut Violations, field: &str, text: &str, max: usize, required: bool) {
    if required && text.trim().is_empty() {
        v.add(field, "is required");
    } else if text.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if text.chars().any(char::is_control) {
        v.add(field, "must not contain control characters");
    }
}

/// Checks an idempotency key: empty, or 1 to 64 of letters, digits, `.`,
/// `_`, `:`, `-` (a UUID fits).
pub fn check_request_id(v: &mut Violations, field: &str, id: &str) {
    v.check(
        id.len() <= MAX_REQUEST_ID
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-')),
        field,
        "must be at most 64 letters, digits, '.', '_', ':' or '-'",
    );
}

/// Checks an e-mail address: one `@`, a dot in the domain, no spaces, at
/// most 254 characters.
pub fn check_email(v: &mut Violations, field: &str, email: &str) {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    v.check(
        ok,
        field,
        "must be an e-mail address such as ada@example.com",
    );
}

/// Parses a CIDR whose host bits are zero.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not in CIDR notation such as 10.0.0.0/24 or fd00::/64"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Checks a network: its CIDR (IPv4 prefix 8 to 29, IPv6 48 to 64), gateway
/// inside it and not its network or broadcast address, DNS servers of the
/// same family.
pub fn check_network(v: &mut Violations, field: &str, network: &Network) {
    let f = |name: &str| format!("{field}.{name}");
    v.check(
        is_region(&network.region),
        &f("region"),
        "is required: one of the project's regions",
    );
    let net = match parse_cidr(&network.cidr) {
        Ok(net) => net,
        Err(e) => {
            v.add(f("cidr"), e);
            return;
        }
    };
    let (min, max) = match net {
        IpNet::V4(_) => (8, 29),
        IpNet::V6(_) => (48, 64),
    };
    if net.prefix_len() < min || net.prefix_len() > max {
        v.add(f("cidr"), format!("prefix length must be {min} to {max}"));
    }
    if !network.gateway_ip.is_empty() {
        match network.gateway_ip.parse::<IpAddr>() {
            Ok(ip) if !net.contains(&ip) => v.add(f("gateway_ip"), format!("must be inside {net}")),
            Ok(ip) if ip == net.network() || (net.addr().is_ipv4() && ip == net.broadcast()) => v
                .add(
                    f("gateway_ip"),
                    "must be a host address, not the network or broadcast address",
                ),
            Ok(_) => {}
            Err(_) => v.add(f("gateway_ip"), "must be an IP address"),
        }
    }
    if network.dns_servers.len() > 5 {
        v.add(f("dns_servers"), "at most 5");
    }
    for (i, dns) in network.dns_servers.iter().enumerate() {
        match dns.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv4() != net.addr().is_ipv4() => v.add(
                format!("{field}.dns_servers[{i}]"),
                "must be of the CIDR's IP version",
            ),
            Ok(_) => {}
            Err(_) => v.add(format!("{field}.dns_servers[{i}]"), "must be an IP address"),
        }
    }
}

/// The gateway a network gets when it names none: the first host address.
pub fn default_gateway(cidr: &str) -> Option<String> {
    let net = parse_cidr(cidr).ok()?;
    // ipnet's IPv6 hosts() starts at the network address itself (the
    // subnet-router anycast address), which `check_network` refuses.
    let first = net.hosts().find(|ip| *ip != net.network())?;
    Some(first.to_string())
}

/// Checks an access rule: direction and protocol set; ports only for TCP and
/// UDP, `1 <= min <= max <= 65535` (or both 0 for all ports); remote CIDR valid.
pub fn check_access_rule(v: &mut Violations, field: &str, rule: &AccessRule) {
    let f = |name: &str| format!("{field}.{name}");
    v.check(
        is_region(&rule.region),
        &f("region"),
        "is required: one of the project's regions",
    );
    v.check(
        matches!(
            Direction::try_from(rule.direction),
            Ok(Direction::Ingress | Direction::Egress)
        ),
        &f("direction"),
        "must be INGRESS or EGRESS",
    );
    let protocol = Protocol::try_from(rule.protocol).unwrap_or(Protocol::Unspecified);
    let (min, max) = (rule.port_range_min, rule.port_range_max);
    match protocol {
        Protocol::Unspecified => v.add(f("protocol"), "must be ANY, TCP, UDP or ICMP"),
        Protocol::Tcp | Protocol::Udp => {
            if (min, max) != (0, 0) {
                if min == 0 || min > 65535 {
                    v.add(
                        f("port_range_min"),
                        "must be 1 to 65535 (or 0 with port_range_max 0 for all ports)",
                    );
                }
                if max == 0 || max > 65535 {
                    v.add(
                        f("port_range_max"),
                        "must be 1 to 65535 (or 0 with port_range_min 0 for all ports)",
                    );
                } else if max < min {
                    v.add(f("port_range_max"), "must not be below port_range_min");
                }
            }
        }
        Protocol::Any | Protocol::Icmp => {
            if (min, max) != (0, 0) {
                v.add(f("port_range_min"), "ports apply to TCP and UDP only");
            }
        }
    }
    if let Err(e) = parse_cidr(&rule.remote_cidr) {
        v.add(f("remote_cidr"), e);
    }
    check_text(
        v,
        &f("description"),
        &rule.description,
        crate::update::MAX_RULE_DESCRIPTION,
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(cidr: &str, gw: &str) -> Violations {
        let mut v = Violations::new();
        let n = Network {
            region: "sto1".into(),
            cidr: cidr.into(),
            gateway_ip: gw.into(),
            ..Default::default()
        };
        check_network(&mut v, "network", &n);
        v
    }

    #[test]
    fn ids() {
        assert!(is_id("web-1"));
        for bad in ["ab", "1abc", "abc-", "ABC", "a_b", &"a".repeat(64)] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn networks() {
        assert!(net("10.0.0.0/24", "").is_empty());
        assert!(net("fd00:1::/64", "fd00:1::1").is_empty());
        assert!(!net("10.0.0.1/24", "").is_empty(), "host bits");
        assert!(!net("10.0.0.0/30", "").is_empty(), "too small");
        assert!(
            !net("10.0.0.0/24", "10.0.1.1").is_empty(),
            "gateway outside"
        );
        assert!(!net("10.0.0.0/24", "10.0.0.255").is_empty(), "broadcast");
        assert!(!net("banana", "").is_empty());
        assert_eq!(default_gateway("10.1.0.0/16").as_deref(), Some("10.1.0.1"));
        assert_eq!(
            default_gateway("fd00:10::/64").as_deref(),
            Some("fd00:10::1")
        );
        assert!(net("fd00:10::/64", "fd00:10::1").is_empty());
    }

    #[test]
    fn access_rules() {
        let rule = |p: Protocol, min, max, cidr: &str| {
            let mut v = Violations::new();
            check_access_rule(
                &mut v,
                "access_rule",
                &AccessRule {
                    region: "sto1".into(),
                    direction: Direction::Ingress as i32,
                    protocol: p as i32,
                    port_range_min: min,
                    port_range_max: max,
                    remote_cidr: cidr.into(),
                    ..Default::default()
                },
            );
            v.is_empty()
        };
        assert!(rule(Protocol::Tcp, 22, 22, "0.0.0.0/0"));
        assert!(rule(Protocol::Udp, 0, 0, "::/0"));
        assert!(!rule(Protocol::Tcp, 443, 80, "0.0.0.0/0"), "reversed");
        assert!(!rule(Protocol::Tcp, 1, 70000, "0.0.0.0/0"), "out of range");
        assert!(!rule(Protocol::Icmp, 1, 2, "0.0.0.0/0"), "ports on icmp");
        assert!(!rule(Protocol::Tcp, 22, 22, "10.0.0.1/8"), "host bits");
    }
}
