//! Who may do what, from the identity the gateway asserts in the call's
//! metadata (the gateway authenticated the caller; NATS permissions keep
//! anyone else from calling us).
//!
//! A caller outside an organization gets PERMISSION_DENIED for anything in
//! it, whether or not it exists (AIP-211), so probing names reveals nothing.
//! NOT_FOUND is only for callers who could see the resource if it existed.

use nordlys_proto::pb::nordlys::v1::OrganizationRole;
use nordlys_transport::{Identity, Role};
use tonic::{Request, Status};

use crate::status::permission_denied;

/// The caller's identity; UNAUTHENTICATED without one.
pub(crate) fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    Identity::read(request.metadata())
}

/// Only operators.
pub(crate) fn require_operator(caller: &Identity, what: &str) -> Result<(), Status> {
    if caller.role == Role::Operator {
        Ok(())
    } else {
        Err(permission_denied(what))
    }
}

/// Operators, or a role of at least `min` in organization `org` (an id).
pub(crate) fn require_role(
    caller: &Identity,
    org: &str,
    min: Role,
    what: &str,
) -> Result<(), Status> {
    if caller.role == Role::Operator {
        return Ok(());
    }
    let same_org = caller.organization == nordlys_api::names::organization(org);
    // Roles are ordered from most to least powerful.
    if same_org && caller.role <= min {
        Ok(())
    } else {
        Err(permission_denied(what))
    }
}

/// Whether the caller may hand out or take away the owner role: operators
/// and owners.
pub(crate) fn may_manage_owners(caller: &Identity) -> bool {
    matches!(caller.role, Role::Operator | Role::Owner)
}

/// A stored role name to the API enum.
pub(crate) fn to_proto(role: Role) -> OrganizationRole {
    match role {
        Role::Owner => OrganizationRole::Owner,
        Role::Admin => OrganizationRole::Admin,
        Role::Member => OrganizationRole::Member,
        Role::Viewer => OrganizationRole::Viewer,
        // Operators are not members; never stored.
        Role::Operator => OrganizationRole::Unspecified,
    }
}

/// An API role to the transport role; `None` when unset or unknown.
pub(crate) fn from_proto(role: i32) -> Option<Role> {
    match OrganizationRole::try_from(role).ok()? {
        OrganizationRole::Owner => Some(Role::Owner),
        OrganizationRole::Admin => Some(Role::Admin),
        OrganizationRole::Member => Some(Role::Member),
        OrganizationRole::Viewer => Some(Role::Viewer),
        OrganizationRole::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_of(org: &str, role: Role) -> Identity {
        Identity {
            organization: format!("organizations/{org}"),
            member: format!("organizations/{org}/members/x"),
            role,
        }
    }

    #[test]
    fn roles_and_tenancy() {
        let op = Identity::operator();
        assert!(require_operator(&op, "x").is_ok());
        assert!(require_role(&op, "acme", Role::Owner, "x").is_ok());
        let admin = member_of("acme", Role::Admin);
        assert!(require_operator(&admin, "x").is_err());
        assert!(require_role(&admin, "acme", Role::Admin, "x").is_ok());
        assert!(require_role(&admin, "acme", Role::Owner, "x").is_err());
        assert!(require_role(&admin, "other", Role::Viewer, "x").is_err());
        let viewer = member_of("acme", Role::Viewer);
        assert!(require_role(&viewer, "acme", Role::Viewer, "x").is_ok());
        assert!(require_role(&viewer, "acme", Role::Member, "x").is_err());
        assert!(may_manage_owners(&member_of("acme", Role::Owner)));
        assert!(!may_manage_owners(&admin));
    }

    #[test]
    fn roles_convert() {
        for r in [Role::Owner, Role::Admin, Role::Member, Role::Viewer] {
            assert_eq!(from_proto(to_proto(r) as i32), Some(r));
        }
        assert_eq!(from_proto(0), None);
        assert_eq!(from_proto(99), None);
    }
}
