//! Authentication: `authorization: Bearer <key>` to an [`Identity`].
//!
//! The operator key is compared here, in constant time. Organization keys
//! are resolved by the quota service and then trusted for a short while
//! (cached by the hash of the secret, never the secret itself), so a revoked
//! key or a changed role takes effect within that time.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nordlys_proto::pb::nordlys::quota::v1::{AuthenticateRequest, Principal};
use nordlys_proto::pb::nordlys::v1::OrganizationRole;
use nordlys_transport::{Identity, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Status;

use crate::routes::QuotaRoute;

/// An authenticated caller: the identity, and its `nordlys-caller` value
/// for internal calls, rendered once when the key is resolved rather than
/// on every call.
#[derive(Debug)]
pub struct Caller {
    identity: Identity,
    header: AsciiMetadataValue,
    /// The API key it called with, `organizations/{org}/apiKeys/{key}`;
    /// empty for the operator key of the configuration.
    api_key: String,
}

impl Caller {
    /// The caller `identity`; INTERNAL if it cannot be asserted (see
    /// [`Identity::header_value`]).
    pub fn new(identity: Identity) -> Result<Caller, Status> {
        let header = identity.header_value()?;
        Ok(Caller {
            identity,
            header,
            api_key: String::new(),
        })
    }

    /// The same caller, calling with API key `api_key`.
    pub fn with_api_key(mut self, api_key: String) -> Caller {
        self.api_key = api_key;
        self
    }

    /// The API key it called with (empty for the configured operator key).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The `nordlys-caller` value internal calls carry.
    pub fn header(&self) -> &AsciiMetadataValue {
        &self.header
    }
}

impl Deref for Caller {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// Resolves bearer keys to identities.
#[derive(Debug)]
pub struct Authenticator {
    operator: Option<([u8; 32], Arc<Caller>)>,
    quota: QuotaRoute,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// A resolved key's caller and until when it is trusted.
type Cached = (Arc<Caller>, Instant);

/// How long past its expiry a cached key is still honoured while the quota
/// service cannot be reached.
const STALE_GRACE: Duration = Duration::from_secs(300);

/// The most entries the cache keeps before it is cleared.
const CACHE_LIMIT: usize = 10_000;

impl Authenticator {
    /// An authenticator; an empty `operator_key` disables the operator role.
    pub(crate) fn new(
        operator_key: &str,
        quota: QuotaRoute,
        ttl: Duration,
    ) -> Result<Authenticator, Status> {
        let operator = if operator_key.is_empty() {
            None
        } else {
            Some((
                hash(operator_key),
                Arc::new(Caller::new(Identity::operator())?),
            ))
        };
        Ok(Authenticator {
            operator,
            quota,
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The caller of a public call; UNAUTHENTICATED without a valid key.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Arc<Caller>, Status> {
        let secret = bearer(metadata)?;
        let digest = hash(secret);
        if let Some((op, operator)) = &self.operator {
            if bool::from(op.ct_eq(&digest)) {
                return Ok(operator.clone());
            }
        }
        if let Some(caller) = self.cached(&digest, Duration::ZERO) {
            return Ok(caller);
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
                Some(caller) => {
                    tracing::warn!(error = %status, "quota service unreachable; using a recent authentication");
                    return Ok(caller);
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
        let caller = Arc::new(
            Caller::new(Identity {
                organization: principal.organization,
                member: principal.member,
                role,
            })?
            .with_api_key(principal.api_key),
        );
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest, (caller.clone(), Instant::now() + self.ttl));
        }
        Ok(caller)
    }

    /// A cached caller still fresh, or expired less than `grace` ago.
    fn cached(&self, digest: &[u8; 32], grace: Duration) -> Option<Arc<Caller>> {
        let cache = self.cache.lock().ok()?;
        let (caller, until) = cache.get(digest)?;
        (Instant::now() < *until + grace).then(|| caller.clone())
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
