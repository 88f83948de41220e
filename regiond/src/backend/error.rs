//! What can go wrong in a backend; `crate::status` maps it to gRPC.

use std::fmt;

/// The kinds of resources a region keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A project.
    Project,
    /// A user.
    User,
    /// A membership.
    Membership,
    /// A network.
    Network,
    /// An access rule.
    AccessRule,
}

impl ResourceKind {
    /// The one-letter prefix of the kind in store keys.
    pub fn key_prefix(self) -> &'static str {
        match self {
            ResourceKind::Project => "p",
            ResourceKind::User => "u",
            ResourceKind::Membership => "m",
            ResourceKind::Network => "n",
            ResourceKind::AccessRule => "a",
        }
    }

    /// Every kind, in the API's order.
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Project,
        ResourceKind::User,
        ResourceKind::Membership,
        ResourceKind::Network,
        ResourceKind::AccessRule,
    ];

    /// The collection's name in resource names (`accessRules`).
    pub fn collection(self) -> &'static str {
        match self {
            ResourceKind::Project => "projects",
            ResourceKind::User => "users",
            ResourceKind::Membership => "memberships",
            ResourceKind::Network => "networks",
            ResourceKind::AccessRule => "accessRules",
        }
    }

    /// The protobuf message name, for google.rpc.ResourceInfo.
    pub fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Project => "nordlys.v1.Project",
            ResourceKind::User => "nordlys.v1.User",
            ResourceKind::Membership => "nordlys.v1.Membership",
            ResourceKind::Network => "nordlys.v1.Network",
            ResourceKind::AccessRule => "nordlys.v1.AccessRule",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Project => "project",
            ResourceKind::User => "user",
            ResourceKind::Membership => "membership",
            ResourceKind::Network => "network",
            ResourceKind::AccessRule => "access rule",
        })
    }
}

/// Why a region's infrastructure refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request was malformed for the region (HTTP 400).
    InvalidArgument,
    /// Something the call needs is not there (HTTP 404).
    NotFound,
    /// A conflicting resource exists (HTTP 409).
    AlreadyExists,
    /// The region's own quota is used up (Neutron `OverQuota`).
    ResourceExhausted,
    /// The region does not let Nordlys do this, even after a fresh token
    /// (HTTP 401 or 403).
    PermissionDenied,
    /// The region is not set up for this (a quota tier it does not define).
    FailedPrecondition,
}

/// A backend call that did not happen. Callers branch on the variant; the
/// messages are for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The resource (or the parent it needs) is not in this region, or
    /// belongs to another organization.
    #[error("{kind} {name} not found in region {region}")]
    NotFound {
        /// What was looked for.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// This region.
        region: String,
    },
    /// A resource of that name exists (and was not created with the
    /// request's id).
    #[error("{kind} {name} already exists in region {region}")]
    AlreadyExists {
        /// What exists.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// This region.
        region: String,
    },
    /// A membership names a user that is not placed in this region.
    #[error("user {user} is not in region {region}; create it there first")]
    UserNotInRegion {
        /// The user.
        user: String,
        /// This region.
        region: String,
    },
    /// A membership names a user of another organization than the project's.
    #[error("user {user} is not of the project's organization {organization}")]
    UserOfOtherOrganization {
        /// The user.
        user: String,
        /// The project's organization.
        organization: String,
    },
    /// The region's infrastructure refused the call (real backends); the
    /// message is the region's own, the service says whose.
    #[error("{service} refused the call: {message}")]
    Refused {
        /// What kind of refusal, which picks the gRPC code.
        reason: Refusal,
        /// The refusing service, for example `keystone` or `neutron`.
        service: String,
        /// The service's own words (never a credential).
        message: String,
    },
    /// The parent a create needs is being deleted.
    #[error("{kind} {name} is being deleted in region {region}")]
    BeingDeleted {
        /// What is going.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// This region.
        region: String,
    },
    /// The resource changed since the etag the caller sent.
    #[error("{kind} {name} changed since the etag given (region {region}); read it again")]
    EtagMismatch {
        /// What changed.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// This region.
        region: String,
    },
    /// This region's kind of cloud has no such resource (a Kubernetes
    /// region has no tenant networks).
    #[error("region {region} is a {region_kind} region, which has no {kind}s")]
    Unsupported {
        /// What it lacks.
        kind: ResourceKind,
        /// This region.
        region: String,
        /// What kind of region it is, as people call it (`Kubernetes`).
        region_kind: String,
    },
    /// The region's infrastructure did not answer (real backends).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message stays in the logs.
    #[error("backend failure: {0}")]
    Internal(String),
}
