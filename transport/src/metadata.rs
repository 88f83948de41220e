//! What travels beside a call: its deadline and the caller's identity.
//!
//! Both live in tonic metadata, so a handler reads them the same way whether
//! the call came over gRPC or over NATS (where each metadata entry is a NATS
//! header of the same name).

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;

/// The gRPC deadline header, `grpc-timeout`.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The caller's identity as the gateway asserts it, one entry
/// `{role};{organization};{member}` (see [`Identity::write`]).
pub const CALLER: &str = "nordlys-caller";
/// The idempotency key of a create, when the caller gave one.
pub const REQUEST_ID: &str = "nordlys-request-id";
/// The organization's quota tier as the quota service gave it with the
/// reservation of a create, for the region to size the cloud's quotas.
pub const TIER: &str = "nordlys-tier";
/// The W3C trace context, as gRPC metadata names.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace context's vendor part.
pub const TRACESTATE: &str = "tracestate";

/// Encodes a timeout the way gRPC does: at most 8 digits and a unit.
pub fn encode_timeout(timeout: Duration) -> String {
    timeout_text(timeout, &mut [0u8; 9]).to_owned()
}

/// `grpc-timeout`'s form of `timeout` (at most 8 digits and a unit), written
/// into `buf`; called on every internal call, so no formatting machinery and
/// no allocation.
pub(crate) fn timeout_text(timeout: Duration, buf: &mut [u8; 9]) -> &str {
    let len = encode_timeout_into(timeout, buf);
    // The buffer holds ASCII digits and a unit letter: always UTF-8.
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

fn encode_timeout_into(timeout: Duration, buf: &mut [u8; 9]) -> usize {
    let nanos = timeout.as_nanos();
    const UNITS: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let (mut value, unit) = UNITS
        .iter()
        .map(|&(scale, unit)| (nanos.div_ceil(scale), unit))
        .find(|&(value, _)| value < 100_000_000)
        .unwrap_or((99_999_999, b'H'));
    let mut digits = [0u8; 8];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (i, d) in digits[..n].iter().rev().enumerate() {
        buf[i] = *d;
    }
    buf[n] = unit;
    n + 1
}

/// Decodes a `grpc-timeout` value; `None` when it is malformed.
pub fn decode_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The timeout a call carries in its metadata, if any (and well formed).
pub fn timeout_of(metadata: &MetadataMap) -> Option<Duration> {
    metadata
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(decode_timeout)
}

/// Sets (or replaces) the `grpc-timeout` of a call.
pub fn set_timeout(metadata: &mut MetadataMap, timeout: Duration) {
    if let Ok(v) = AsciiMetadataValue::try_from(timeout_text(timeout, &mut [0u8; 9])) {
        metadata.insert(GRPC_TIMEOUT, v);
    }
}

/// A caller's role. Operators run the cloud; the others are roles in one
/// organization, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The cloud operator: every organization, organizations and quotas.
    Operator,
    /// Everything in the organization, including making owners.
    Owner,
    /// Everything in the organization but making owners.
    Admin,
    /// Creates, changes and deletes the organization's resources.
    Member,
    /// Reads the organization's resources.
    Viewer,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "operator" => Role::Operator,
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }

    /// May create, change and delete resources.
    pub fn can_write(self) -> bool {
        self <= Role::Member
    }

    /// May manage members and API keys.
    pub fn can_administer(self) -> bool {
        self <= Role::Admin
    }
}

/// Who a call is made for, as asserted by the gateway after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `organizations/{org}`; empty for operators.
    pub organization: String,
    /// `organizations/{org}/members/{principal}`, or `operator`.
    pub member: String,
    /// The role.
    pub role: Role,
}

impl Identity {
    /// The operator identity.
    pub fn operator() -> Identity {
        Identity {
            organization: String::new(),
            member: "operator".to_string(),
            role: Role::Operator,
        }
    }

    /// Whether this caller may see resources of `organization`.
    pub fn can_see(&self, organization: &str) -> bool {
        self.role == Role::Operator || self.organization == organization
    }

    /// Writes the identity into call metadata as one `nordlys-caller`
    /// entry (see [`Identity::header_value`]).
    pub fn write(&self, metadata: &mut MetadataMap) -> Result<(), Status> {
        metadata.insert(CALLER, self.header_value()?);
        Ok(())
    }

    /// The identity as its `nordlys-caller` value,
    /// `{role};{organization};{member}` (organization empty for
    /// operators). One entry rather than three: every internal call carries
    /// it, and over NATS each header costs the sender, nats-server and the
    /// receiver's parser about 2 us of CPU together (a raw NATS call is
    /// about 17); one value is also one assertion, never half of one.
    pub fn header_value(&self) -> Result<AsciiMetadataValue, Status> {
        if self.organization.contains(';') || self.member.contains(';') {
            return Err(Status::internal("identity holds a ';'"));
        }
        let role = self.role.as_str();
        let mut value =
            String::with_capacity(role.len() + self.organization.len() + self.member.len() + 2);
        value.push_str(role);
        value.push(';');
        value.push_str(&self.organization);
        value.push(';');
        value.push_str(&self.member);
        AsciiMetadataValue::try_from(value).map_err(|_| Status::internal("identity is not ASCII"))
    }

    /// Reads the identity the gateway asserted; UNAUTHENTICATED without one,
    /// or with one that is malformed.
    pub fn read(metadata: &MetadataMap) -> Result<Identity, Status> {
        let value = metadata
            .get(CALLER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("no caller identity on the call"))?;
        let mut fields = value.splitn(3, ';');
        let (Some(role), Some(organization), Some(member)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(Status::unauthenticated("malformed caller identity"));
        };
        let role = Role::parse(role)
            .ok_or_else(|| Status::unauthenticated("caller identity has no known role"))?;
        if role != Role::Operator && organization.is_empty() {
            return Err(Status::unauthenticated(
                "caller identity has no organization",
            ));
        }
        Ok(Identity {
            organization: organization.to_string(),
            member: member.to_string(),
            role,
        })
    }
}

/// The request id of a call, if the caller gave one.
pub fn request_id(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_round_trips() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(7200),
        ] {
            let decoded = decode_timeout(&encode_timeout(d)).expect("decodes");
            assert!(
                decoded >= d && decoded - d < Duration::from_millis(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn timeouts_encode_in_the_finest_unit_that_fits_eight_digits() {
        for (d, want) in [
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(250), "250000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(7200), "7200000m"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(u64::MAX), "99999999H"),
        ] {
            assert_eq!(encode_timeout(d), want, "{d:?}");
        }
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for bad in ["", "5", "S", "123456789S", "-1S", "1x", "1.5S"] {
            assert_eq!(decode_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn identity_round_trips_through_metadata() {
        let id = Identity {
            organization: "organizations/acme".into(),
            member: "organizations/acme/members/alice".into(),
            role: Role::Admin,
        };
        let mut md = MetadataMap::new();
        id.write(&mut md).expect("ascii");
        assert_eq!(md.len(), 1, "one entry");
        assert_eq!(Identity::read(&md).expect("present"), id);
        assert!(Identity::read(&MetadataMap::new()).is_err());

        let mut md = MetadataMap::new();
        Identity::operator().write(&mut md).expect("ascii");
        assert_eq!(
            md.get(CALLER).and_then(|v| v.to_str().ok()),
            Some("operator;;operator")
        );
        assert_eq!(Identity::read(&md).expect("present"), Identity::operator());
    }

    #[test]
    fn malformed_identities_are_unauthenticated() {
        for bad in [
            "",
            "admin",
            "admin;organizations/acme",
            "root;organizations/acme;organizations/acme/members/a",
            "admin;;organizations/acme/members/a",
        ] {
            let mut md = MetadataMap::new();
            md.insert(CALLER, AsciiMetadataValue::try_from(bad).expect("ascii"));
            let err = Identity::read(&md).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let semicolon = Identity {
            organization: "organizations/a;b".into(),
            member: "organizations/a;b/members/c".into(),
            role: Role::Admin,
        };
        assert!(semicolon.write(&mut MetadataMap::new()).is_err());
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Owner.can_administer());
        assert!(!Role::Member.can_administer());
        assert!(Role::Member.can_write());
        assert!(!Role::Viewer.can_write());
    }
}
