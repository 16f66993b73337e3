//! Join codes: `ADORA1.<ca-hash>.<id>.<secret>`, what a daemon needs to enroll.
//!
//! The CA hash (64 hex digits, SHA-256 of the CA certificate) lets the daemon check the
//! coordinator before trusting it; the id names the code (for `list` and `revoke`); the secret
//! (128 bits, 32 hex digits) proves the daemon was given the code. The coordinator keeps only the
//! secret's SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The first part of every join code (its format version).
pub const JOIN_CODE_PREFIX: &str = "ADORA1";
const ID_BYTES: usize = 4;
const SECRET_BYTES: usize = 16;

/// A join code.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCode {
    /// SHA-256 of the cluster CA certificate, lowercase hex.
    pub ca_hash: String,
    /// The code's id, lowercase hex.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for JoinCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinCode")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a text is not a join code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a join code: {0} (expected {JOIN_CODE_PREFIX}.<ca-hash>.<id>.<secret>, as printed by `adora cluster join-code create`)")]
pub struct JoinCodeError(String);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl JoinCode {
    /// A new code for the CA with hash `ca_hash`, with a random id and secret.
    pub fn generate(ca_hash: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            ca_hash: ca_hash.to_owned(),
            id: hex(&id),
            secret: hex(&secret),
        }
    }

    /// The code's secret (sent once, at enrollment).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// What the coordinator stores instead of the secret.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

/// The SHA-256 of a join code's secret, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two secret hashes without an early exit.
pub fn secret_hash_matches(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl std::fmt::Display for JoinCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{JOIN_CODE_PREFIX}.{}.{}.{}",
            self.ca_hash, self.id, self.secret
        )
    }
}

impl std::str::FromStr for JoinCode {
    type Err = JoinCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [prefix, ca_hash, id, secret] = parts[..] else {
            return Err(JoinCodeError(format!(
                "it has {} parts, not 4",
                parts.len()
            )));
        };
        if prefix != JOIN_CODE_PREFIX {
            return Err(JoinCodeError(format!("it starts with `{prefix}`")));
        }
        if !is_hex(ca_hash, 64) {
            return Err(JoinCodeError("its CA hash is not 64 hex digits".into()));
        }
        if !is_hex(id, 2 * ID_BYTES) {
            return Err(JoinCodeError(format!(
                "its id is not {} hex digits",
                2 * ID_BYTES
            )));
        }
        if !is_hex(secret, 2 * SECRET_BYTES) {
            return Err(JoinCodeError(format!(
                "its secret is not {} hex digits",
                2 * SECRET_BYTES
            )));
        }
        Ok(Self {
            ca_hash: ca_hash.to_ascii_lowercase(),
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_code_parses_back_and_hides_its_secret() {
        let code = JoinCode::generate(&"ab".repeat(32));
        let text = code.to_string();
        assert!(text.starts_with("ADORA1.abab"), "{text}");
        let back: JoinCode = text.parse().expect("valid");
        assert_eq!(back, code);
        assert!(secret_hash_matches(
            &back.secret_hash(),
            &code.secret_hash()
        ));
        assert!(!format!("{code:?}").contains(code.secret()));
    }

    #[test]
    fn malformed_codes_say_what_is_wrong() {
        let good = JoinCode::generate(&"ab".repeat(32)).to_string();
        for (bad, why) in [
            ("hello", "1 parts"),
            (&good.replace("ADORA1", "DORA1"), "starts with `DORA1`"),
            (&good.replacen("abab", "zzzz", 1), "CA hash"),
            (&format!("{good}0"), "secret"),
        ] {
            let err = bad.parse::<JoinCode>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
