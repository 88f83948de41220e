//! Authentication: `authorization: Bearer <key>` to an [`Identity`].
//!
//! The operator key is compared here, in constant time. Organization keys
//! are resolved by the quota service and then trusted for a short while
//! (cached by the hash of the secret, never the secret itself), so a revoked
//! key or a changed role takes effect within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::quota::v1::{AuthenticateRequest, Principal};
use nordlys_proto::pb::nordlys::v1::OrganizationRole;
use nordlys_transport::{Identity, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::routes::QuotaRoute;

/// Resolves bearer keys to identities.
#[derive(Debug)]
pub struct Authenticator {
    operator_key_hash: Option<[u8; 32]>,
    quota: QuotaRoute,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

/// How long past its expiry a cached key is still honoured while the quota
/// service cannot be reached.
const STALE_GRACE: Duration = Duration::from_secs(300);

/// The most entries the cache keeps before it is cleared.
const CACHE_LIMIT: usize = 10_000;

impl Authenticator {
    /// An authenticator; an empty `operator_key` disables the operator role.
    pub(crate) fn new(operator_key: &str, quota: QuotaRoute, ttl: Duration) -> Authenticator {
        Authenticator {
            operator_key_hash: (!operator_key.is_empty()).then(|| hash(operator_key)),
            quota,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a public call; UNAUTHENTICATED without a valid key.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, Status> {
        let secret = bearer(metadata)?;
        let digest = hash(secret);
        if let Some(op) = &self.operator_key_hash {
            if bool::from(op.ct_eq(&digest)) {
                return Ok(Identity::operator());
            }
        }
        if let Some(identity) = self.cached(&digest, Duration::ZERO) {
            return Ok(identity);
        }
        let principal: Principal = match self
            .quota
            .authenticate(AuthenticateRequest {
                secret: secret.to_string(),
            })
            .await
        {
            Ok(principal) => principal,
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(Status::unauthenticated("invalid API key"));
            }
            // The quota service is down or restarting: a key that was valid
            // a moment ago still is, for a while. Reads keep working
            // through a quota outage; writes need quota anyway.
            Err(status) => match self.cached(&digest, STALE_GRACE) {
                Some(identity) => {
                    tracing::warn!(error = %status, "quota service unreachable; using a recent authentication");
                    return Ok(identity);
                }
                None => return Err(status),
            },
        };
        let role = match OrganizationRole::try_from(principal.role) {
            Ok(OrganizationRole::Owner) => Role::Owner,
            Ok(OrganizationRole::Admin) => Role::Admin,
            Ok(OrganizationRole::Member) => Role::Member,
            Ok(OrganizationRole::Viewer) => Role::Viewer,
            _ => return Err(Status::unauthenticated("API key has no role")),
        };
        let identity = Identity {
            organization: principal.organization,
            member: principal.member,
            role,
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest, (identity.clone(), Instant::now() + self.ttl));
        }
        Ok(identity)
    }

    /// A cached identity still fresh, or expired less than `grace` ago.
    fn cached(&self, digest: &[u8; 32], grace: Duration) -> Option<Identity> {
        let cache = self.cache.lock().ok()?;
        let (identity, until) = cache.get(digest)?;
        (Instant::now() < *until + grace).then(|| identity.clone())
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The key of `authorization: Bearer <key>`.
fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <API key>` metadata")
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not ASCII"))?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <API key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(Status::unauthenticated(
            "authorization must be `Bearer <API key>`",
        ));
    }
    Ok(key.trim())
}

/// Refuses a caller that may not change resources.
pub fn require_write(caller: &Identity) -> Result<(), Status> {
    if caller.role.can_write() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "role {} may only read",
            caller.role.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn bearer_forms() {
        let mut md = MetadataMap::new();
        assert!(bearer(&md).is_err());
        md.insert("authorization", MetadataValue::from_static("Bearer abc"));
        assert_eq!(bearer(&md).ok(), Some("abc"));
        md.insert("authorization", MetadataValue::from_static("bearer  abc "));
        assert_eq!(bearer(&md).ok(), Some("abc"));
        md.insert("authorization", MetadataValue::from_static("Basic abc"));
        assert!(bearer(&md).is_err());
        md.insert("authorization", MetadataValue::from_static("Bearer "));
        assert!(bearer(&md).is_err());
    }
}
