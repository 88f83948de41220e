//! An access rule as a NetworkPolicy, and back. Pure.
//!
//! A rule is one NetworkPolicy selecting every pod of the project's
//! namespace, with one ingress (or egress) rule: the remote CIDR as an
//! `ipBlock`, the protocol and port range as its one port (`endPort` for a
//! range). NetworkPolicy has no ICMP: such a rule is refused.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nordlys_proto::pb::nordlys::v1::{Direction, Protocol};

/// What a rule admits, as the API has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Admits {
    pub(super) direction: Direction,
    pub(super) protocol: Protocol,
    pub(super) port_range_min: u32,
    pub(super) port_range_max: u32,
    pub(super) remote_cidr: String,
}

/// Why a rule cannot be a NetworkPolicy.
pub(super) const NO_ICMP: &str =
    "Kubernetes NetworkPolicies admit TCP, UDP and SCTP only: an ICMP rule needs an OpenStack region";

/// The policy spec of a rule.
pub(super) fn encode(rule: &Admits) -> Result<NetworkPolicySpec, &'static str> {
    let protocol = match rule.protocol {
        Protocol::Tcp => Some("TCP"),
        Protocol::Udp => Some("UDP"),
        Protocol::Any | Protocol::Unspecified => None,
        Protocol::Icmp => return Err(NO_ICMP),
    };
    let ports = protocol.map(|protocol| {
        let (port, end_port) = match (rule.port_range_min, rule.port_range_max) {
            (_, 0) => (None, None),
            (min, max) if min.max(1) == max => (Some(max), None),
            (min, max) => (Some(min.max(1)), Some(max)),
        };
        vec![NetworkPolicyPort {
            protocol: Some(protocol.to_string()),
            port: port.map(|p| IntOrString::Int(p as i32)),
            end_port: end_port.map(|p| p as i32),
        }]
    });
    // An empty CIDR admits every address: 0.0.0.0/0 would leave IPv6 out,
    // and a rule with no peers matches all of them.
    let peers = (!rule.remote_cidr.is_empty()).then(|| {
        vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: rule.remote_cidr.clone(),
                except: None,
            }),
            ..Default::default()
        }]
    });
    let mut spec = NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    };
    if rule.direction == Direction::Egress {
        spec.policy_types = Some(vec!["Egress".to_string()]);
        spec.egress = Some(vec![NetworkPolicyEgressRule { to: peers, ports }]);
    } else {
        spec.policy_types = Some(vec!["Ingress".to_string()]);
        spec.ingress = Some(vec![NetworkPolicyIngressRule { from: peers, ports }]);
    }
    Ok(spec)
}

/// The rule a policy spec stands for; `None` when it is not one Nordlys
/// writes.
pub(super) fn decode(spec: &NetworkPolicySpec) -> Option<Admits> {
    let (direction, peers, ports) = match (&spec.ingress, &spec.egress) {
        (Some(ingress), None) => {
            let [rule] = ingress.as_slice() else {
                return None;
            };
            (Direction::Ingress, &rule.from, &rule.ports)
        }
        (None, Some(egress)) => {
            let [rule] = egress.as_slice() else {
                return None;
            };
            (Direction::Egress, &rule.to, &rule.ports)
        }
        _ => return None,
    };
    let remote_cidr = match peers.as_deref() {
        None | Some([]) => String::new(),
        Some([peer]) => peer.ip_block.as_ref()?.cidr.clone(),
        Some(_) => return None,
    };
    let (protocol, port_range_min, port_range_max) = match ports.as_deref() {
        None | Some([]) => (Protocol::Any, 0, 0),
        Some([port]) => {
            let protocol = match port.protocol.as_deref() {
                Some("TCP") | None => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                _ => return None,
            };
            let first = match &port.port {
                None => 0,
                Some(IntOrString::Int(p)) => u32::try_from(*p).ok()?,
                Some(IntOrString::String(_)) => return None,
            };
            let last = match port.end_port {
                Some(end) => u32::try_from(end).ok()?,
                None => first,
            };
            (protocol, first, last)
        }
        Some(_) => return None,
    };
    Some(Admits {
        direction,
        protocol,
        port_range_min,
        port_range_max,
        remote_cidr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(direction: Direction, protocol: Protocol, ports: (u32, u32), cidr: &str) -> Admits {
        Admits {
            direction,
            protocol,
            port_range_min: ports.0,
            port_range_max: ports.1,
            remote_cidr: cidr.into(),
        }
    }

    #[test]
    fn rules_round_trip_through_their_policy() {
        for rule in [
            admits(Direction::Ingress, Protocol::Tcp, (22, 22), "10.0.0.0/8"),
            admits(
                Direction::Ingress,
                Protocol::Tcp,
                (8000, 8080),
                "10.0.0.0/8",
            ),
            admits(Direction::Egress, Protocol::Udp, (53, 53), "2001:db8::/32"),
            admits(Direction::Ingress, Protocol::Tcp, (0, 0), "192.0.2.0/24"),
            admits(Direction::Egress, Protocol::Any, (0, 0), ""),
        ] {
            let spec = encode(&rule).expect("encodes");
            assert_eq!(decode(&spec), Some(rule));
        }
    }

    #[test]
    fn a_range_is_a_port_and_an_end_port() {
        let spec = encode(&admits(
            Direction::Ingress,
            Protocol::Tcp,
            (8000, 8080),
            "10.0.0.0/8",
        ))
        .expect("encodes");
        let ingress = spec.ingress.expect("ingress");
        let port = &ingress[0].ports.as_ref().expect("ports")[0];
        assert_eq!(port.port, Some(IntOrString::Int(8000)));
        assert_eq!(port.end_port, Some(8080));
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    }

    #[test]
    fn icmp_is_refused() {
        let err =
            encode(&admits(Direction::Ingress, Protocol::Icmp, (0, 0), "")).expect_err("no ICMP");
        assert!(err.contains("ICMP"));
    }

    #[test]
    fn foreign_policies_are_not_rules() {
        let spec = NetworkPolicySpec {
            ingress: Some(vec![Default::default(), Default::default()]),
            ..Default::default()
        };
        assert_eq!(decode(&spec), None);
    }
}
