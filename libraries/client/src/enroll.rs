//! Enrollment, the daemon's side: with a join code, fetch the cluster CA *without trusting it*,
//! check its SHA-256 against the code's, then — verifying the coordinator against that CA — send
//! the code's id and secret with a public key generated here, and receive a certificate for this
//! machine. The private key never leaves the machine.

use std::collections::BTreeMap;

use adora_message::enroll::{EnrollRefusal, EnrollRequest, EnrollResponse};
use adora_pki::{Identity, JoinCode};

use crate::{artifacts::ArtifactError, http::Exchange, tls::Auth};

/// Path of the CA certificate (public).
pub const CA_PATH: &str = "/api/v1/ca";
pub use adora_message::enroll::ENROLL_PATH;
/// Largest answer accepted from these routes.
const MAX_ANSWER: usize = 1 << 20;

/// Why an enrollment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The coordinator's CA is not the one the join code names.
    #[error("the coordinator at {addr} presents the CA {actual}, but the join code expects {expected}: this is not the coordinator that created the code (wrong address, or someone in between)")]
    WrongCa {
        /// `host:port`.
        addr: String,
        /// Hash in the code.
        expected: String,
        /// Hash of the CA served.
        actual: String,
    },
    /// The coordinator refused the code, saying why (expired, used, revoked, unknown, ...).
    #[error("the coordinator refused the join code: {0}")]
    Refused(String),
    /// The exchange failed.
    #[error("enrollment with the coordinator at {addr} failed: {source}")]
    Transport {
        /// `host:port`.
        addr: String,
        /// The error.
        source: ArtifactError,
    },
    /// A key or certificate could not be made or read.
    #[error(transparent)]
    Pki(#[from] adora_pki::PkiError),
    /// The answer is not what enrollment answers.
    #[error("unexpected answer from the coordinator: {0}")]
    Answer(String),
}

/// What enrollment gives: the identity to save, and the labels the code assigned (merged over
/// the requested ones).
#[derive(Debug)]
pub struct Enrolled {
    /// The identity (save it with [`Identity::save`]).
    pub identity: Identity,
    /// The machine's labels.
    pub labels: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Enrolls this machine with the coordinator at `addr` using `code`.
pub async fn enroll(
    addr: &str,
    code: &JoinCode,
    machine_id: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<Enrolled, EnrollError> {
    let transport = |source| EnrollError::Transport {
        addr: addr.to_owned(),
        source,
    };
    // 1. The CA, fetched without trusting anybody, then checked against the code.
    let untrusted = Auth::tls(adora_pki::tls::unverified_client_config());
    let (_, ca_pem) = Exchange::new(addr, &untrusted, "GET", CA_PATH, MAX_ANSWER)
        .run(Vec::new())
        .await
        .map_err(transport)?;
    let ca_pem = String::from_utf8_lossy(&ca_pem).into_owned();
    let served = adora_pki::certs_from_pem("the coordinator's CA", &ca_pem)?;
    let actual = adora_pki::fingerprint(&served[0]);
    if actual != code.ca_hash {
        return Err(EnrollError::WrongCa {
            addr: addr.to_owned(),
            expected: code.ca_hash.clone(),
            actual,
        });
    }
    // 2. From here on the coordinator is verified against that CA.
    let trusted = Auth::with_ca(&ca_pem, None)?;
    let (key_pem, spki) = adora_pki::new_key()?;
    let request = EnrollRequest {
        code_id: code.id.clone(),
        secret: code.secret().to_owned(),
        machine_id: machine_id.map(str::to_owned),
        labels: labels.clone(),
        public_key_der: hex(&spki),
    };
    let body = serde_json::to_vec(&request).map_err(|e| EnrollError::Answer(e.to_string()))?;
    let post = Exchange::new(addr, &trusted, "POST", ENROLL_PATH, MAX_ANSWER)
        .content_type("application/json");
    let answer = match post.run(body).await {
        Ok((_, answer)) => answer,
        Err(ArtifactError::Status { message, .. }) => {
            let reason = serde_json::from_str::<EnrollRefusal>(&message)
                .map(|r| format!("{} ({})", r.error, r.reason))
                .unwrap_or(message);
            return Err(EnrollError::Refused(reason));
        }
        Err(e) => return Err(transport(e)),
    };
    let answer: EnrollResponse =
        serde_json::from_slice(&answer).map_err(|e| EnrollError::Answer(e.to_string()))?;
    if adora_pki::fingerprint(&adora_pki::certs_from_pem("the issued CA", &answer.ca_pem)?[0])
        != code.ca_hash
    {
        return Err(EnrollError::Answer(
            "the certificate was issued by another CA than the code's".into(),
        ));
    }
    Ok(Enrolled {
        identity: Identity {
            machine_id: answer.machine_id,
            ca_pem: answer.ca_pem,
            cert_pem: answer.cert_pem,
            key_pem,
        },
        labels: answer.labels,
    })
}
