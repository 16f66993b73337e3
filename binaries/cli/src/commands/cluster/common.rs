//! Helpers shared by the `adora cluster` subcommands: reading `cluster.yml` and reporting how
//! each machine fared. A leaf: it imports no cluster subcommand.

use std::{path::Path, process::ExitCode};

use adora_core::cluster::{ClusterConfig, Machine};

use crate::commands::common::EXIT_INVALID;

/// Reads and validates a cluster file, or prints every problem and returns the exit code.
pub(crate) fn load_cluster(path: &Path) -> Result<ClusterConfig, ExitCode> {
    ClusterConfig::read(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        let n = errors.0.len();
        eprintln!(
            "{n} problem{} found in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        );
        ExitCode::from(EXIT_INVALID)
    })
}

/// Prints `N/M <verb>` and the failed machines with reason and hint; exit code 1 on failure.
pub(crate) fn print_outcomes(
    machines: &[Machine],
    outcomes: &[Option<Outcome>],
    verb: &str,
) -> ExitCode {
    let failed = failed_machines(machines, outcomes);
    let n = machines.len();
    println!("{}/{n} {verb}.", n - failed.len());
    for (m, reason, hint) in &failed {
        println!("  {} ({}): {reason}", m.id, m.destination());
        if let Some(hint) = hint {
            println!("    hint: {hint}");
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One machine in the JSON outcome of `cluster install|uninstall --json`.
#[derive(Debug, serde::Serialize)]
struct MachineOutcome<'a> {
    id: &'a str,
    destination: String,
    /// `ok`, `not_installed` (uninstall: nothing to remove), `failed`, or `not_reached` (the
    /// command ended before this machine reported).
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

/// The JSON outcome of `cluster install|uninstall --json`.
#[derive(Debug, serde::Serialize)]
struct OutcomesJson<'a> {
    ok: bool,
    machines: Vec<MachineOutcome<'a>>,
}

/// Prints the per-machine outcome as one JSON object on stdout; exit code 1 on failure.
pub(crate) fn print_outcomes_json(machines: &[Machine], outcomes: &[Option<Outcome>]) -> ExitCode {
    let json = outcomes_json(machines, outcomes);
    match serde_json::to_string_pretty(&json) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write the outcome as JSON: {e}"),
    }
    if json.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn outcomes_json<'a>(machines: &'a [Machine], outcomes: &'a [Option<Outcome>]) -> OutcomesJson<'a> {
    let machines: Vec<MachineOutcome<'a>> = machines
        .iter()
        .zip(outcomes)
        .map(|(m, o)| {
            let (outcome, reason, hint) = match o {
                Some(Outcome::Failed { reason, hint }) => {
                    ("failed", Some(reason.as_str()), hint.as_deref())
                }
                Some(Outcome::NotInstalled) => ("not_installed", None, None),
                Some(_) => ("ok", None, None),
                None => ("not_reached", None, None),
            };
            MachineOutcome {
                id: &m.id,
                destination: m.destination(),
                outcome,
                reason,
                hint,
            }
        })
        .collect();
    let ok = machines
        .iter()
        .all(|m| matches!(m.outcome, "ok" | "not_installed"));
    OutcomesJson { ok, machines }
}

/// How one machine fared, for the per-machine outcome every cluster command ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The daemon was started (and, after the wait, registered).
    Started,
    /// The machine's daemon is a systemd service: it was started (or left running), not
    /// doubled by an ad-hoc daemon (and, after the wait, registered).
    ServiceStarted,
    /// A daemon with this machine id was already connected: left alone.
    AlreadyConnected,
    /// The operation (install, uninstall) succeeded.
    Done,
    /// `uninstall`: there was no unit to remove.
    NotInstalled,
    /// Something went wrong: what, and what to do about it.
    Failed {
        /// What went wrong.
        reason: String,
        /// What to try.
        hint: Option<String>,
    },
}

impl Outcome {
    /// A failure with a hint.
    pub(crate) fn failed(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The machines whose outcome is a failure, with the reason and hint.
pub(crate) fn failed_machines<'a>(
    machines: &'a [Machine],
    outcomes: &'a [Option<Outcome>],
) -> Vec<(&'a Machine, &'a String, &'a Option<String>)> {
    machines
        .iter()
        .zip(outcomes)
        .filter_map(|(m, o)| match o {
            Some(Outcome::Failed { reason, hint }) => Some((m, reason, hint)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use adora_core::cluster::ClusterConfig;

    use super::*;

    #[test]
    fn the_json_outcome_names_every_machine_and_fails_on_any_failure() {
        let cluster = ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: a, host: 10.0.0.2 }\n  \
             - { id: b, host: 10.0.0.3, user: ops }\n  - { id: c, host: 10.0.0.4 }\n",
            Path::new("cluster.yml"),
        )
        .expect("a valid cluster file");
        let outcomes = vec![
            Some(Outcome::Done),
            Some(Outcome::failed(
                "sudo: a password is required",
                "allow passwordless sudo",
            )),
            None,
        ];
        let json =
            serde_json::to_value(outcomes_json(&cluster.machines, &outcomes)).expect("serializes");
        assert_eq!(json["ok"], false);
        let m = &json["machines"];
        assert_eq!(m[0]["id"], "a");
        assert_eq!(m[0]["outcome"], "ok");
        assert!(m[0].get("reason").is_none());
        assert_eq!(m[1]["outcome"], "failed");
        assert_eq!(m[1]["destination"], "ops@10.0.0.3");
        assert_eq!(m[1]["reason"], "sudo: a password is required");
        assert_eq!(m[1]["hint"], "allow passwordless sudo");
        assert_eq!(m[2]["outcome"], "not_reached");

        let done = vec![
            Some(Outcome::Done),
            Some(Outcome::NotInstalled),
            Some(Outcome::Done),
        ];
        let json = serde_json::to_value(outcomes_json(&cluster.machines, &done)).expect("json");
        assert_eq!(json["ok"], true);
    }
}
