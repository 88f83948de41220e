//! Page tokens (AIP-158). A token holds the last name returned and a
//! fingerprint of the query, so it cannot be replayed against another query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

/// The page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page; larger asks are lowered to it (AIP-158).
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Serialize, Deserialize)]
struct Token {
    /// Names after this one come next.
    a: String,
    /// Fingerprint of the query.
    q: String,
}

/// A stable fingerprint of the query parameters other than paging.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Makes the token that continues after `last_name`.
pub fn encode(last_name: &str, fingerprint: &str) -> String {
    let token = Token {
        a: last_name.to_string(),
        q: fingerprint.to_string(),
    };
    // Serializing two strings cannot fail.
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Reads a token: the name to continue after (empty for the first page), or
/// INVALID_ARGUMENT on `page_token` when it is malformed or was made for
/// another query.
pub fn decode(token: &str, fingerprint: &str) -> Result<String, Status> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| crate::invalid("page_token", why);
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("is not a token this API issued"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|_| bad("is not a token this API issued"))?;
    if token.q != fingerprint {
        return Err(bad(
            "was issued for a different query; keep the other parameters the same",
        ));
    }
    Ok(token.a)
}

/// Checks and resolves `page_size`: negative is INVALID_ARGUMENT, 0 is the
/// default, above the maximum is lowered to it.
pub fn size(page_size: i32) -> Result<usize, Status> {
    match page_size {
        n if n < 0 => Err(crate::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let fp = fingerprint(&["organizations/acme", ""]);
        let t = encode("projects/b", &fp);
        assert_eq!(decode(&t, &fp).expect("valid"), "projects/b");
        assert_eq!(decode("", &fp).expect("first page"), "");
        assert_eq!(
            decode(&t, &fingerprint(&["organizations/other", ""])).map_err(|s| s.code()),
            Err(tonic::Code::InvalidArgument)
        );
        assert!(decode("%%%", &fp).is_err());
        assert!(decode("aGVsbG8", &fp).is_err());
        assert_eq!(size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(size(5000).ok(), Some(MAX_PAGE_SIZE));
        assert!(size(-1).is_err());
    }
}
