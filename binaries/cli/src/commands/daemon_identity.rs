//! How `adora daemon` authenticates: its enrolled identity (`<state dir>/identity/<machine>/`),
//! else an enrollment with a join code (which creates that identity), else the admin token (a
//! daemon on the coordinator's machine, `adora up`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use adora_client::Auth;
use adora_pki::{Identity, JoinCode, IDENTITY_DIR};
use anyhow::{bail, Context};

/// Environment variable holding a join code.
pub const JOIN_CODE_ENV: &str = "ADORA_JOIN_CODE";
/// The labels a join code assigned, next to the identity.
const LABELS_FILE: &str = "labels";

/// What the daemon was given.
pub struct Trust<'a> {
    pub coordinator_addr: &'a str,
    pub machine_id: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
    pub join_code: Option<String>,
    pub join_code_file: Option<&'a Path>,
    pub token_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
}

/// How the daemon connects, and what its identity says about it.
pub struct Trusted {
    pub auth: Auth,
    /// The machine id of the identity (overrides none given; a different one is an error).
    pub machine_id: Option<String>,
    /// The labels the join code assigned at enrollment (they win over `--labels`).
    pub labels: Option<BTreeMap<String, String>>,
    /// Where the identity is (for Zenoh's TLS).
    pub identity_dir: Option<PathBuf>,
}

/// The identity directory of the daemon named `machine` (or `default`).
pub fn identity_dir(machine: Option<&str>) -> PathBuf {
    super::common::state_dir()
        .join(IDENTITY_DIR)
        .join(machine.unwrap_or("default"))
}

fn join_code(trust: &Trust<'_>) -> anyhow::Result<Option<JoinCode>> {
    let text = match (&trust.join_code, trust.join_code_file) {
        (Some(code), _) => Some(code.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("--join-code-file {}", file.display()))?,
        ),
        (None, None) => std::env::var(JOIN_CODE_ENV)
            .ok()
            .filter(|c| !c.trim().is_empty()),
    };
    // An empty code file (`cluster up` on an enrolled machine) is no code.
    text.filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse::<JoinCode>())
        .transpose()
        .map_err(Into::into)
}

/// Finds or creates the daemon's credentials.
pub async fn establish(trust: Trust<'_>) -> anyhow::Result<Trusted> {
    let dir = identity_dir(trust.machine_id);
    let code = join_code(&trust)?;
    if let Some(identity) = Identity::load(&dir)? {
        if let Some(code) = &code {
            if code.ca_hash != identity.ca_hash()? {
                bail!(
                    "this machine is enrolled with another cluster (CA {}) than the join code's \
                     ({}); remove {} to enroll again",
                    identity.ca_hash()?,
                    code.ca_hash,
                    dir.display()
                );
            }
            eprintln!(
                "already enrolled as `{}` ({}): the join code is not used",
                identity.machine_id,
                dir.display()
            );
        }
        return from_identity(identity, &dir, trust.machine_id);
    }
    if let Some(code) = code {
        let enrolled = adora_client::enroll::enroll(
            trust.coordinator_addr,
            &code,
            trust.machine_id,
            trust.labels,
        )
        .await?;
        // Only what the code assigned (what this daemon asked for comes from its flags).
        let labels: String = enrolled
            .labels
            .iter()
            .filter(|(k, v)| trust.labels.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        adora_pki::write_private(&dir.join(LABELS_FILE), &labels)?;
        // Last (its certificate marks a complete identity), where the next start with the same
        // flags looks (not where the machine id would put it).
        enrolled.identity.save(&dir)?;
        eprintln!(
            "enrolled as `{}`; identity in {}",
            enrolled.identity.machine_id,
            dir.display()
        );
        return from_identity(enrolled.identity, &dir, trust.machine_id);
    }
    let state = super::common::state_dir();
    let token = adora_client::find_token(trust.token_file, &state)?;
    if token.is_none() {
        bail!(
            "this daemon has no identity and no credentials: enroll it with a join code \
             (`adora cluster join-code create` on the admin machine, then --join-code-file or \
             {JOIN_CODE_ENV}), or give it the admin token (--token-file, ADORA_TOKEN)"
        );
    }
    let (path, pem) = adora_client::find_ca(trust.ca_file, &state)?;
    let auth =
        Auth::with_ca(&pem, token).with_context(|| format!("the cluster CA {}", path.display()))?;
    Ok(Trusted {
        auth,
        machine_id: None,
        labels: None,
        identity_dir: None,
    })
}

fn from_identity(
    identity: Identity,
    dir: &Path,
    requested: Option<&str>,
) -> anyhow::Result<Trusted> {
    if let Some(requested) = requested.filter(|r| *r != identity.machine_id) {
        bail!(
            "--machine-id {requested}: this machine is enrolled as `{}` ({})",
            identity.machine_id,
            dir.display()
        );
    }
    let tls = adora_pki::tls::client_config(
        &identity.ca_pem,
        Some((&identity.cert_pem, &identity.key_pem)),
    )?;
    // Written by `establish` in the `--labels` format.
    let file = dir.join(LABELS_FILE);
    let labels = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            super::common::parse_labels(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
        ),
        Err(_) => None,
    };
    Ok(Trusted {
        auth: Auth::tls(tls),
        machine_id: Some(identity.machine_id),
        labels: labels.filter(|l| !l.is_empty()),
        identity_dir: Some(dir.to_owned()),
    })
}
