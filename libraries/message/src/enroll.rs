//! Enrollment of a daemon with a join code: `POST /api/v1/enroll` on the coordinator, JSON both
//! ways. The daemon sends the code's id and secret with the public half of a key it generated;
//! the coordinator answers with a certificate for the daemon's machine id (and the CA), or
//! refuses with a typed reason (HTTP 403, 503 without a CA).
//!
//! Also the join-code types of the control plane (`adora cluster join-code create|list|revoke`,
//! `adora cluster revoke`), shared by the CLI and the coordinator.

use serde::{Deserialize, Serialize};

use crate::control::Labels;

/// The coordinator's enrollment endpoint.
pub const ENROLL_PATH: &str = "/api/v1/enroll";

/// Longest machine id an enrollment (or a join code bound to a machine) accepts.
pub const MAX_MACHINE_ID_CHARS: usize = 128;

/// What a daemon sends to enroll.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The join code's id (`ADORA1.<ca-hash>.<id>.<secret>`).
    pub code_id: String,
    /// The join code's secret.
    pub secret: String,
    /// The machine id the daemon wants; required unless the code names one (then it must be
    /// that one or absent).
    #[serde(default)]
    pub machine_id: Option<String>,
    /// The daemon's own labels; the code's labels override them key by key.
    #[serde(default)]
    pub labels: Labels,
    /// Lowercase hex of the DER SubjectPublicKeyInfo of the daemon's new key
    /// (`adora_pki::new_key`); the private half never leaves the daemon.
    pub public_key_der: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("code_id", &self.code_id)
            .field("secret", &"<redacted>")
            .field("machine_id", &self.machine_id)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// The coordinator's answer to an accepted enrollment (HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The machine id the certificate was issued for.
    pub machine_id: String,
    /// The daemon's labels: the code's over the requested ones.
    pub labels: Labels,
    /// The daemon's certificate, PEM.
    pub cert_pem: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EnrollRefusalReason {
    /// No join code has this id (never created, or forgotten).
    Unknown,
    /// The secret does not match the code's.
    WrongSecret,
    /// The code's time to live has passed.
    Expired,
    /// Every use of the code was taken.
    Used,
    /// `adora cluster join-code revoke` revoked the code.
    Revoked,
    /// The code is bound to another machine id than the requested one.
    MachineMismatch,
    /// The machine id is missing or not acceptable.
    InvalidMachineId,
    /// The public key is not a hex DER SubjectPublicKeyInfo the CA can sign.
    InvalidPublicKey,
    /// The request is not an enrollment request (malformed JSON, missing fields).
    Malformed,
    /// The coordinator has no CA (HTTP 503).
    NoCa,
    /// The coordinator could not issue or store the certificate (HTTP 500).
    Internal,
}

impl EnrollRefusalReason {
    /// The HTTP status the coordinator answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::NoCa => 503,
            Self::Internal => 500,
            Self::InvalidMachineId | Self::InvalidPublicKey | Self::Malformed => 400,
            _ => 403,
        }
    }
}

impl std::fmt::Display for EnrollRefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::WrongSecret => "wrong_secret",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Revoked => "revoked",
            Self::MachineMismatch => "machine_mismatch",
            Self::InvalidMachineId => "invalid_machine_id",
            Self::InvalidPublicKey => "invalid_public_key",
            Self::Malformed => "malformed",
            Self::NoCa => "no_ca",
            Self::Internal => "internal",
        })
    }
}

/// The body of a refused enrollment: `{ "error": "...", "reason": "expired" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct EnrollRefusal {
    /// What went wrong, for a user.
    pub error: String,
    /// Why, for a program.
    pub reason: EnrollRefusalReason,
}

impl EnrollRefusal {
    /// A refusal for `reason` saying `error`.
    pub fn new(reason: EnrollRefusalReason, error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            reason,
        }
    }
}

/// Checks a machine id: non-empty, at most [`MAX_MACHINE_ID_CHARS`] characters, no control
/// characters, no leading or trailing whitespace. The error says which rule it breaks.
pub fn validate_machine_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the machine id is empty".into());
    }
    if id.chars().count() > MAX_MACHINE_ID_CHARS {
        return Err(format!(
            "the machine id is longer than {MAX_MACHINE_ID_CHARS} characters"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("the machine id contains control characters".into());
    }
    if id.trim() != id {
        return Err("the machine id starts or ends with whitespace".into());
    }
    Ok(())
}

/// Where a join code stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinCodeState {
    /// It can enroll a daemon.
    Valid,
    /// Its time to live has passed.
    Expired,
    /// Every use was taken.
    Used,
    /// It was revoked.
    Revoked,
}

impl std::fmt::Display for JoinCodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Revoked => "revoked",
        })
    }
}

/// Parameters of `ControlRequest::CreateJoinCode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateJoinCode {
    /// How long the code is valid.
    pub ttl: std::time::Duration,
    /// How many daemons it can enroll (at least 1).
    pub uses: u32,
    /// Only a daemon with this machine id can use it (the id it gets when it asks for none).
    pub machine: Option<String>,
    /// Labels every daemon enrolled with it gets (over its own).
    pub labels: Labels,
}

/// Answer to `CreateJoinCode`: the one time the code's text (with its secret) is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCodeCreated {
    /// The whole code, `ADORA1.<ca-hash>.<id>.<secret>`.
    pub code: String,
    /// Its id (for `list` and `revoke`).
    pub id: String,
    /// When it expires (milliseconds since the Unix epoch).
    pub expires_ms: u64,
}

impl std::fmt::Debug for JoinCodeCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinCodeCreated")
            .field("code", &"<redacted>")
            .field("id", &self.id)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// One row of `adora cluster join-code list` (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCodeInfo {
    /// The code's id.
    pub id: String,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// When it expires (milliseconds since the Unix epoch).
    pub expires_ms: u64,
    /// How many daemons it enrolled.
    pub uses: u32,
    /// How many it can enroll.
    pub uses_allowed: u32,
    /// The machine id it is bound to.
    pub machine: Option<String>,
    /// Labels it gives.
    pub labels: Labels,
    /// Where it stands now.
    pub state: JoinCodeState,
}

/// Answer to `RevokeMachine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRevoked {
    /// The machine id.
    pub machine: String,
    /// How many of its certificates were revoked now (0 when all already were, or it has
    /// none).
    pub certificates: usize,
    /// True when its daemon was connected and was disconnected.
    pub disconnected: bool,
}

/// One certificate the coordinator issued (answer to `ListCertificates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// The machine id it was issued for.
    pub machine_id: String,
    /// SHA-256 of the certificate, lowercase hex.
    pub fingerprint: String,
    /// When it was issued (milliseconds since the Unix epoch).
    pub issued_ms: u64,
    /// The id of the join code it was issued for.
    pub join_code: String,
    /// When it was revoked (milliseconds since the Unix epoch).
    pub revoked_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    #[test]
    fn enrollment_messages_round_trip_and_hide_secrets() {
        let request = EnrollRequest {
            code_id: "0a1b2c3d".into(),
            secret: "5e".repeat(16),
            machine_id: Some("robot-1".into()),
            labels: [("gpu".into(), "true".into())].into(),
            public_key_der: "3059".into(),
        };
        assert!(!format!("{request:?}").contains(&request.secret));
        round_trip(request);
        round_trip(EnrollResponse {
            machine_id: "robot-1".into(),
            labels: Labels::new(),
            cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
        });
        let refusal = EnrollRefusal::new(EnrollRefusalReason::Expired, "the code expired");
        let json = serde_json::to_string(&refusal).expect("serializes");
        assert_eq!(json, r#"{"error":"the code expired","reason":"expired"}"#);
        round_trip(refusal);
        let created = JoinCodeCreated {
            code: "ADORA1.x.y.secret".into(),
            id: "y".into(),
            expires_ms: 1,
        };
        assert!(!format!("{created:?}").contains("secret"));
    }

    #[test]
    fn reasons_print_as_they_serialize() {
        for reason in [
            EnrollRefusalReason::Unknown,
            EnrollRefusalReason::WrongSecret,
            EnrollRefusalReason::MachineMismatch,
            EnrollRefusalReason::Malformed,
            EnrollRefusalReason::NoCa,
        ] {
            let json = serde_json::to_string(&reason).expect("serializes");
            assert_eq!(json, format!("\"{reason}\""));
        }
        assert_eq!(EnrollRefusalReason::Used.http_status(), 403);
        assert_eq!(EnrollRefusalReason::NoCa.http_status(), 503);
    }

    #[test]
    fn machine_ids_are_checked() {
        assert!(validate_machine_id("robot-1").is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("a\nb", "control"),
            (" robot", "whitespace"),
            (&"x".repeat(129), "longer"),
        ] {
            let err = validate_machine_id(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
