//! API key secrets: `nlk_<keyid>_<secret>`, where `<keyid>` names the stored
//! key (`apikey.<keyid>`) and `<secret>` is 32 bytes of OS randomness in hex.
//! Only the SHA-256 of the secret is stored; it is compared in constant time.

use rand::rngs::OsRng;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every secret starts with, so leaked keys are easy to spot in logs
/// and by secret scanners.
pub const PREFIX: &str = "nlk_";
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Random bytes in a key id.
const ID_BYTES: usize = 10;

/// A freshly made key: its id, the full secret (shown once) and the hash to
/// store.
#[derive(Clone)]
pub struct NewKey {
    /// The key id, a valid resource id.
    pub id: String,
    /// `nlk_<id>_<secret>`, to hand to the caller once.
    pub secret: String,
    /// Hex SHA-256 of the secret part, to store.
    pub hash: String,
}

impl std::fmt::Debug for NewKey {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The OS random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomnessError(String);

fn random_hex(n: usize) -> Result<String, RandomnessError> {
    let mut buf = vec![0u8; n];
    OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| RandomnessError(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Makes a new key from OS randomness.
pub fn generate() -> Result<NewKey, RandomnessError> {
    // A leading letter keeps the id a valid resource id (AIP-122).
    let id = format!("k{}", random_hex(ID_BYTES)?);
    let secret_part = random_hex(SECRET_BYTES)?;
    Ok(NewKey {
        secret: format!("{PREFIX}{id}_{secret_part}"),
        hash: hash(&secret_part),
        id,
    })
}

/// Splits a presented secret into key id and secret part; `None` when it is
/// not of our shape.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let secret_ok = secret.len() == SECRET_BYTES * 2
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (nordlys_api::validate::is_id(id) && secret_ok).then_some((id, secret))
}

/// Hex SHA-256 of a secret part.
pub fn hash(secret_part: &str) -> String {
    hex::encode(Sha256::digest(secret_part.as_bytes()))
}

/// Whether `secret_part` hashes to `stored` (hex), compared in constant time
/// so the comparison leaks nothing about how much of the hash matched.
pub fn verify(secret_part: &str, stored: &str) -> bool {
    let Ok(stored) = hex::decode(stored) else {
        return false;
    };
    let presented = Sha256::digest(secret_part.as_bytes());
    presented.as_slice().ct_eq(stored.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate().expect("randomness");
        assert!(key.secret.starts_with(PREFIX));
        assert!(nordlys_api::validate::is_id(&key.id), "{}", key.id);
        let (id, secret) = parse(&key.secret).expect("our shape");
        assert_eq!(id, key.id);
        assert!(verify(secret, &key.hash));
        assert!(
            !format!("{key:?}").contains(secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn keys_are_unique() {
        let a = generate().expect("randomness");
        let b = generate().expect("randomness");
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn wrong_secrets_fail() {
        let key = generate().expect("randomness");
        let (_, secret) = parse(&key.secret).expect("our shape");
        let mut wrong = secret.to_string();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert!(!verify(&wrong, &key.hash));
        assert!(!verify(secret, "not hex"));
        assert!(!verify(secret, ""));
    }

    #[test]
    fn malformed_secrets_do_not_parse() {
        let hex64 = "a".repeat(64);
        for bad in [
            String::new(),
            "nlk_".to_string(),
            format!("nlk_kabc_{}", "a".repeat(63)),
            format!("nlk_kabc_{}", "A".repeat(64)),
            format!("nlx_kabc_{hex64}"),
            format!("nlk_KABC_{hex64}"),
            format!("nlk__{hex64}"),
            format!("nlk_kabc{hex64}"),
            format!("Bearer nlk_kabc_{hex64}"),
            format!("nlk_kabc_{hex64}_x"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
        assert_eq!(
            parse(&format!("nlk_kabc_{hex64}")),
            Some(("kabc", hex64.as_str()))
        );
    }
}
