//! Join codes, enrollment and revocation, run by the coordinator actor.
//!
//! - `adora cluster join-code create|list|revoke`: a code is a random id and secret bound to the
//!   cluster CA's hash ([`adora_pki::JoinCode`]); only the secret's SHA-256 is kept
//!   ([`JoinCodeRecord`]). A code enrolls at most `uses_allowed` daemons before it expires.
//! - Enrollment (`POST /api/v1/enroll`, [`crate::enroll`]): a daemon presents a code's id and
//!   secret with a public key; the CA issues it a certificate for its machine id, recorded here
//!   ([`CertRecord`]) and in the [`CertRegistry`] the HTTP side checks connections against.
//! - `adora cluster revoke MACHINE`: every certificate of the machine is revoked and its daemon,
//!   if connected, disconnected.
//!
//! A state change is answered only once the store has it (`Store::sync`, on a blocking thread
//! owned by the coordinator's tasks): an enrollment that could not be stored is refused, so a
//! single-use code cannot enroll twice across a coordinator restart.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use adora_message::{
    control::{ErrorKind, Labels},
    coordinator_to_cli::ControlReply,
    enroll::{
        validate_machine_id, CertificateInfo, CreateJoinCode, EnrollRefusal,
        EnrollRefusalReason as Reason, EnrollRequest, EnrollResponse, JoinCodeCreated,
        JoinCodeInfo, JoinCodeState, MachineRevoked,
    },
};
use adora_store::{now_ms, CertRecord, JoinCodeRecord, StoreError};
use tokio::sync::oneshot;

use crate::{
    actor::{ClientTx, Coordinator, Outgoing},
    certs::{CertEntry, CertRegistry},
    requests::error,
};

/// The longest time to live a join code can have.
pub const MAX_JOIN_CODE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A join code that can no longer enroll anyone is still listed this long after it expired,
/// then forgotten.
pub const JOIN_CODE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The answer to an enrollment.
pub(crate) type EnrollResult = Result<EnrollResponse, EnrollRefusal>;

/// The coordinator's join codes and issued certificates.
#[derive(Debug, Default)]
pub(crate) struct Enrollment {
    /// Join codes by id.
    codes: BTreeMap<String, JoinCodeRecord>,
    /// Issued certificates by fingerprint.
    certs: BTreeMap<String, CertRecord>,
    /// The same certificates as the HTTP side sees them (shared with [`crate::AppState`]).
    pub registry: Arc<CertRegistry>,
}

impl Enrollment {
    /// Adopts the stored codes and certificates (at startup).
    pub fn load(&mut self, codes: Vec<JoinCodeRecord>, certs: Vec<CertRecord>) {
        self.codes = codes.into_iter().map(|c| (c.id.clone(), c)).collect();
        for cert in certs {
            self.registry.insert(cert.fingerprint.clone(), entry(&cert));
            self.certs.insert(cert.fingerprint.clone(), cert);
        }
    }
}

fn entry(cert: &CertRecord) -> CertEntry {
    CertEntry {
        machine_id: cert.machine_id.clone(),
        revoked: cert.revoked_ms.is_some(),
    }
}

fn info(code: &JoinCodeRecord, now: u64) -> JoinCodeInfo {
    JoinCodeInfo {
        id: code.id.clone(),
        created_ms: code.created_ms,
        expires_ms: code.expires_ms,
        uses: code.uses,
        uses_allowed: code.uses_allowed,
        machine: code.machine.clone(),
        labels: code.labels.clone(),
        state: code.state(now),
    }
}

fn refuse(reason: Reason, message: impl Into<String>) -> EnrollRefusal {
    EnrollRefusal::new(reason, message)
}

/// Checks a `create` request's parameters.
fn check_create(request: &CreateJoinCode) -> Result<(), String> {
    if request.uses == 0 {
        return Err("a join code needs at least 1 use".into());
    }
    if request.ttl.is_zero() || request.ttl > MAX_JOIN_CODE_TTL {
        return Err(format!(
            "a join code's time to live must be between 1s and {}",
            humanize(MAX_JOIN_CODE_TTL)
        ));
    }
    if let Some(machine) = &request.machine {
        validate_machine_id(machine)?;
    }
    if let Some(key) = request.labels.keys().find(|k| k.trim().is_empty()) {
        return Err(format!("label key `{key}` is empty"));
    }
    Ok(())
}

fn humanize(d: Duration) -> String {
    format!("{} days", d.as_secs() / (24 * 3600))
}

/// The lowercase or uppercase hex text as bytes.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Coordinator {
    /// Loads the stored join codes and certificates, off the async runtime.
    pub(crate) async fn load_enrollment(&mut self) {
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((store.join_codes()?, store.certs()?))
        })
        .await;
        match loaded {
            Ok(Ok((codes, certs))) => self.enrollment.load(codes, certs),
            Ok(Err(e)) => tracing::error!("cannot load the join codes and certificates: {e}"),
            Err(e) => tracing::error!("cannot load the join codes and certificates: {e}"),
        }
    }

    /// `adora cluster join-code create`.
    pub(crate) fn create_join_code(&mut self, request: CreateJoinCode, tx: ClientTx, id: u64) {
        if self.current_request.is_some() {
            let why = "join codes are not created by idempotent requests (their answer, with the secret, would be stored)";
            return error(&tx, id, ErrorKind::InvalidRequest, why);
        }
        let Some(ca) = self.config.ca.clone() else {
            let why = "this coordinator has no cluster CA, so it cannot enroll daemons";
            return error(&tx, id, ErrorKind::InvalidRequest, why);
        };
        if let Err(why) = check_create(&request) {
            return error(&tx, id, ErrorKind::InvalidRequest, why);
        }
        let now = now_ms();
        self.prune_join_codes(now);
        let code = loop {
            let code = adora_pki::JoinCode::generate(&ca.hash());
            if !self.enrollment.codes.contains_key(&code.id) {
                break code;
            }
        };
        let record = JoinCodeRecord {
            id: code.id.clone(),
            secret_hash: code.secret_hash(),
            created_ms: now,
            expires_ms: now.saturating_add(request.ttl.as_millis() as u64),
            uses_allowed: request.uses,
            uses: 0,
            machine: request.machine,
            labels: request.labels,
            revoked: false,
        };
        if let Err(e) = self.store.put_join_code(&record) {
            let why = format!("cannot store the join code: {e}");
            return error(&tx, id, ErrorKind::Internal, why);
        }
        tracing::info!(
            "join code {} created ({} use(s), machine {:?})",
            record.id,
            record.uses_allowed,
            record.machine
        );
        let answer = ControlReply::JoinCodeCreated(JoinCodeCreated {
            code: code.to_string(),
            id: record.id.clone(),
            expires_ms: record.expires_ms,
        });
        self.enrollment.codes.insert(record.id.clone(), record);
        self.reply_when_stored(tx, id, answer);
    }

    /// `adora cluster join-code list`: oldest first.
    pub(crate) fn join_codes(&self) -> Vec<JoinCodeInfo> {
        let now = now_ms();
        let mut codes: Vec<JoinCodeInfo> = self
            .enrollment
            .codes
            .values()
            .map(|c| info(c, now))
            .collect();
        codes.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        codes
    }

    /// `adora cluster join-code revoke ID`.
    pub(crate) fn revoke_join_code(&mut self, code_id: &str, tx: ClientTx, id: u64) {
        let Some(code) = self.enrollment.codes.get_mut(code_id) else {
            let why =
                format!("no join code with id `{code_id}` (see `adora cluster join-code list`)");
            return error(&tx, id, ErrorKind::NotFound, why);
        };
        if !code.revoked {
            code.revoked = true;
            if let Err(e) = self.store.put_join_code(code) {
                let why = format!("cannot store the revocation: {e}");
                return error(&tx, id, ErrorKind::Internal, why);
            }
            tracing::info!("join code {code_id} revoked");
        }
        let answer = ControlReply::JoinCodeRevoked {
            id: code_id.to_owned(),
        };
        self.reply_when_stored(tx, id, answer);
    }

    /// `adora cluster revoke MACHINE`: revokes the machine's certificates and disconnects its
    /// daemon.
    pub(crate) fn revoke_machine(&mut self, machine: &str, tx: ClientTx, id: u64) {
        let now = now_ms();
        let mut known = false;
        let mut revoked = Vec::new();
        for cert in self.enrollment.certs.values_mut() {
            if cert.machine_id != machine {
                continue;
            }
            known = true;
            if cert.revoked_ms.is_none() {
                cert.revoked_ms = Some(now);
                revoked.push(cert.clone());
            }
        }
        if !known {
            let why = format!(
                "no certificate was issued to machine `{machine}` (see `adora cluster status`)"
            );
            return error(&tx, id, ErrorKind::NotFound, why);
        }
        self.enrollment.registry.revoke_machine(machine);
        for cert in &revoked {
            if let Err(e) = self.store.put_cert(cert) {
                let why = format!("cannot store the revocation: {e}");
                return error(&tx, id, ErrorKind::Internal, why);
            }
        }
        let disconnected = self.disconnect(machine);
        tracing::warn!(
            "machine `{machine}` revoked: {} certificate(s){}",
            revoked.len(),
            if disconnected {
                ", daemon disconnected"
            } else {
                ""
            }
        );
        let answer = ControlReply::MachineRevoked(MachineRevoked {
            machine: machine.to_owned(),
            certificates: revoked.len(),
            disconnected,
        });
        self.reply_when_stored(tx, id, answer);
    }

    /// Closes the connection of the daemon named `machine`; true when it was connected.
    fn disconnect(&mut self, machine: &str) -> bool {
        let mut disconnected = false;
        for d in self.daemons.iter_mut().filter(|d| d.name() == machine) {
            if let Some(tx) = d.tx.take() {
                let reason = format!("the certificate of machine `{machine}` was revoked");
                let _ = tx.send(Outgoing::Close(reason));
                disconnected = true;
            }
        }
        disconnected
    }

    /// Every issued certificate, oldest first.
    pub(crate) fn certificates(&self) -> Vec<CertificateInfo> {
        let mut certs: Vec<CertificateInfo> = self
            .enrollment
            .certs
            .values()
            .map(|c| CertificateInfo {
                machine_id: c.machine_id.clone(),
                fingerprint: c.fingerprint.clone(),
                issued_ms: c.issued_ms,
                join_code: c.join_code.clone(),
                revoked_ms: c.revoked_ms,
            })
            .collect();
        certs.sort_by(|a, b| (a.issued_ms, &a.fingerprint).cmp(&(b.issued_ms, &b.fingerprint)));
        certs
    }

    /// Forgets the codes that expired more than [`JOIN_CODE_RETENTION`] ago.
    pub(crate) fn prune_join_codes(&mut self, now: u64) {
        let keep_for = JOIN_CODE_RETENTION.as_millis() as u64;
        let old: Vec<String> = self
            .enrollment
            .codes
            .values()
            .filter(|c| c.expires_ms.saturating_add(keep_for) < now)
            .map(|c| c.id.clone())
            .collect();
        if old.is_empty() {
            return;
        }
        for id in &old {
            self.enrollment.codes.remove(id);
        }
        tracing::debug!("forgot {} expired join code(s)", old.len());
        if let Err(e) = self.store.remove_join_codes(&old) {
            tracing::error!("cannot remove expired join codes from the store: {e}");
        }
    }

    /// An enrollment (`POST /api/v1/enroll`): answered on `answer` once the certificate is
    /// stored.
    pub(crate) fn handle_enroll(
        &mut self,
        request: EnrollRequest,
        answer: oneshot::Sender<EnrollResult>,
    ) {
        match self.enroll(request) {
            Ok(response) => {
                let store = self.store.clone();
                self.tasks.spawn_blocking("storing an enrollment", move || {
                    let result = store.sync().map(|()| response).map_err(|e| {
                        tracing::error!("an enrollment could not be stored: {e}");
                        refuse(
                            Reason::Internal,
                            format!("the enrollment could not be stored: {e}"),
                        )
                    });
                    let _ = answer.send(result);
                });
            }
            Err(refusal) => {
                let _ = answer.send(Err(refusal));
            }
        }
    }

    /// Checks the code and issues the certificate; the writes are queued.
    fn enroll(&mut self, request: EnrollRequest) -> EnrollResult {
        let Some(ca) = self.config.ca.clone() else {
            return Err(refuse(
                Reason::NoCa,
                "this coordinator has no cluster CA, so it cannot enroll daemons",
            ));
        };
        let now = now_ms();
        let code = self.usable_code(&request, now)?;
        let machine = enrolled_machine(code, request.machine_id.as_deref())?;
        let labels: Labels = request
            .labels
            .into_iter()
            .chain(code.labels.clone())
            .collect();
        let spki = from_hex(&request.public_key_der).ok_or_else(|| {
            refuse(
                Reason::InvalidPublicKey,
                "the public key is not hex (of a DER SubjectPublicKeyInfo)",
            )
        })?;
        let issued = ca.issue_daemon(&machine, &spki).map_err(|e| match e {
            adora_pki::PkiError::Invalid { .. } => refuse(Reason::InvalidPublicKey, e.to_string()),
            e => refuse(
                Reason::Internal,
                format!("cannot issue the certificate: {e}"),
            ),
        })?;
        let code = self
            .enrollment
            .codes
            .get_mut(&request.code_id)
            .expect("usable_code found it");
        code.uses += 1;
        let cert = CertRecord {
            fingerprint: issued.fingerprint.clone(),
            machine_id: machine.clone(),
            issued_ms: now,
            join_code: code.id.clone(),
            revoked_ms: None,
        };
        let stored = self
            .store
            .put_join_code(code)
            .and_then(|()| self.store.put_cert(&cert));
        if let Err(e) = stored {
            return Err(refuse(
                Reason::Internal,
                format!("cannot store the enrollment: {e}"),
            ));
        }
        tracing::info!(
            "machine `{machine}` enrolled with join code {} (use {} of {})",
            code.id,
            code.uses,
            code.uses_allowed
        );
        self.enrollment
            .registry
            .insert(cert.fingerprint.clone(), entry(&cert));
        self.enrollment.certs.insert(cert.fingerprint.clone(), cert);
        Ok(EnrollResponse {
            machine_id: machine,
            labels,
            cert_pem: issued.cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        })
    }

    /// The code of `request` if its secret matches and it can still enroll a daemon.
    fn usable_code(
        &self,
        request: &EnrollRequest,
        now: u64,
    ) -> Result<&JoinCodeRecord, EnrollRefusal> {
        let id = &request.code_id;
        let Some(code) = self.enrollment.codes.get(id) else {
            return Err(refuse(
                Reason::Unknown,
                format!("the coordinator knows no join code with id `{id}`; create one with `adora cluster join-code create`"),
            ));
        };
        let hash = adora_pki::hash_secret(&request.secret);
        if !adora_pki::secret_hash_matches(&hash, &code.secret_hash) {
            tracing::warn!("enrollment refused: wrong secret for join code {id}");
            return Err(refuse(
                Reason::WrongSecret,
                format!("the secret of join code `{id}` is wrong (copy the whole code)"),
            ));
        }
        match code.state(now) {
            JoinCodeState::Valid => Ok(code),
            JoinCodeState::Revoked => Err(refuse(
                Reason::Revoked,
                format!("join code `{id}` was revoked; create a new one with `adora cluster join-code create`"),
            )),
            JoinCodeState::Used => Err(refuse(
                Reason::Used,
                format!("join code `{id}` was already used ({} of {} uses); create a new one with `adora cluster join-code create`", code.uses, code.uses_allowed),
            )),
            JoinCodeState::Expired => Err(refuse(
                Reason::Expired,
                format!("join code `{id}` expired; create a new one with `adora cluster join-code create`"),
            )),
        }
    }
}

/// The machine id a daemon enrolls with: the code's if it names one (a different requested id
/// is refused), else the requested one (then required and checked).
fn enrolled_machine(
    code: &JoinCodeRecord,
    requested: Option<&str>,
) -> Result<String, EnrollRefusal> {
    match (code.machine.as_deref(), requested) {
        (Some(bound), Some(asked)) if bound != asked => Err(refuse(
            Reason::MachineMismatch,
            format!("join code `{}` is for machine `{bound}`, not `{asked}`", code.id),
        )),
        (Some(bound), _) => Ok(bound.to_owned()),
        (None, Some(asked)) => match validate_machine_id(asked) {
            Ok(()) => Ok(asked.to_owned()),
            Err(why) => Err(refuse(Reason::InvalidMachineId, why)),
        },
        (None, None) => Err(refuse(
            Reason::InvalidMachineId,
            format!("join code `{}` names no machine: the daemon must give its machine id (--machine-id)", code.id),
        )),
    }
}

#[cfg(test)]
mod tests;
