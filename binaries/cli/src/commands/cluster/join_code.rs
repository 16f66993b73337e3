//! `adora cluster join-code create|list|revoke`: the one-time codes new daemons enroll with.
//!
//! A code (`ADORA1.<ca-hash>.<id>.<secret>`) carries the hash of the cluster CA, so the daemon
//! checks the coordinator before trusting it, and a secret the coordinator keeps only the hash
//! of. `create` is the one time the secret is shown: it prints the code alone on stdout (for
//! `CODE=$(adora cluster join-code create)`), what it allows on stderr.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    enroll::{CreateJoinCode, JoinCodeInfo},
};
use anyhow::bail;
use clap::Subcommand;

use crate::{
    commands::{
        client::{Client, ClientArgs},
        common::parse_labels,
    },
    output::print_json,
    table::Table,
};

/// Create, list and revoke the join codes new daemons enroll with.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  CODE=$(adora cluster join-code create --ttl 1h --machine robot-1)\n  \
adora cluster join-code create --uses 5 --labels site=lab,gpu=true\n  \
adora cluster join-code list\n  adora cluster join-code revoke 0a1b2c3d\n\n\
A daemon joins with `adora daemon --coordinator-addr ADDR --join-code-file FILE` (or \
ADORA_JOIN_CODE); it checks the coordinator against the CA hash in the code, then gets its own \
certificate and needs no code again."
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Create(CreateArgs),
    List(ListArgs),
    Revoke(RevokeArgs),
}

/// Create a join code and print it on stdout (its expiry on stderr). The code is shown only
/// this once: the coordinator keeps a hash of its secret.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  CODE=$(adora cluster join-code create)\n  \
adora cluster join-code create --ttl 2h --uses 3 --labels site=lab\n  \
adora cluster join-code create --machine robot-1 --json\n\n\
Exits 1 when the coordinator refuses (no cluster CA, a bad value).")]
pub struct CreateArgs {
    /// How long the code is valid (at most 30 days), e.g. `30m`, `2h`, `1d`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    ttl: Duration,
    /// How many daemons can enroll with it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    uses: u32,
    /// Only the daemon of this machine id can use it (the id it gets if it names none).
    #[arg(long, value_name = "ID")]
    machine: Option<String>,
    /// Labels every daemon enrolled with it gets (over the daemon's own), e.g. `gpu=true,site=lab`.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// Print `{ code, id, expires_ms }` as JSON instead of the code alone.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// List the join codes the coordinator remembers (never their secrets), with their state:
/// valid, expired, used or revoked.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster join-code list\n  adora cluster join-code list --json"
)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Revoke a join code: no daemon can enroll with it any more (daemons already enrolled with it
/// keep their certificates; see `adora cluster revoke`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster join-code revoke 0a1b2c3d\n\n\
Exits 1 when no code has that id."
)]
pub struct RevokeArgs {
    /// The code's id (`adora cluster join-code list`), the third part of the code.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs a `join-code` subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Create(args) => create(args).await,
        Command::List(args) => list(args).await,
        Command::Revoke(args) => revoke(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let request = CreateJoinCode {
        ttl: args.ttl,
        uses: args.uses,
        machine: args.machine.clone(),
        labels: args.labels,
    };
    let created = request_code(&mut client, request).await?;
    if args.json {
        print_json(&created)?;
    } else {
        println!("{}", created.code);
    }
    let uses = match args.uses {
        1 => "1 use".to_owned(),
        n => format!("{n} uses"),
    };
    let machine = args
        .machine
        .map(|m| format!(", machine `{m}` only"))
        .unwrap_or_default();
    eprintln!(
        "join code {} ({uses}{machine}) expires {} ({})",
        created.id,
        rfc3339(created.expires_ms),
        relative(created.expires_ms, now_ms())
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let ControlReply::JoinCodes(codes) = client.call(ControlRequest::ListJoinCodes).await? else {
        bail!("unexpected reply to ListJoinCodes");
    };
    if args.json {
        print_json(&codes)?;
    } else {
        print!("{}", render(&codes, now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let request = ControlRequest::RevokeJoinCode { id: args.id };
    let ControlReply::JoinCodeRevoked { id } = client.call(request).await? else {
        bail!("unexpected reply to RevokeJoinCode");
    };
    println!("join code {id} revoked");
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A time (milliseconds since the Unix epoch) as UTC RFC 3339, to the second.
pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `in 29m` or `3h 2m ago`: to the minute from a minute on, to the second below.
pub(super) fn relative(ms: u64, now: u64) -> String {
    let (secs, future) = if ms >= now {
        ((ms - now) / 1000, true)
    } else {
        ((now - ms) / 1000, false)
    };
    let secs = if secs >= 60 { secs / 60 * 60 } else { secs };
    let text = humantime::format_duration(Duration::from_secs(secs)).to_string();
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// The human-readable table.
fn render(codes: &[JoinCodeInfo], now: u64) -> String {
    if codes.is_empty() {
        return "No join codes (create one with `adora cluster join-code create`).\n".into();
    }
    let mut table = Table::new([
        "ID", "STATE", "USES", "CREATED", "EXPIRES", "MACHINE", "LABELS",
    ]);
    for c in codes {
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.row([
            c.id.clone(),
            c.state.to_string(),
            format!("{}/{}", c.uses, c.uses_allowed),
            relative(c.created_ms, now),
            relative(c.expires_ms, now),
            c.machine.clone().unwrap_or_else(|| "-".into()),
            labels.join(","),
        ]);
    }
    table.render()
}

/// How long a code `cluster up` / `cluster install` hands to a machine stays valid: its daemon
/// enrolls within seconds of starting; a code left unused expires soon.
pub(crate) const MACHINE_CODE_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// One single-use join code per machine of `machines`, bound to its id (what `cluster up` and
/// `cluster install` hand over SSH stdin instead of the admin token).
pub(crate) async fn machine_codes<'a>(
    client: &mut Client,
    machines: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut codes = std::collections::BTreeMap::new();
    for machine in machines {
        let request = CreateJoinCode {
            ttl: MACHINE_CODE_TTL,
            uses: 1,
            machine: Some(machine.to_owned()),
            labels: Default::default(),
        };
        let created = request_code(client, request).await?;
        codes.insert(machine.to_owned(), created.code);
    }
    Ok(codes)
}

/// Asks the coordinator for a join code.
async fn request_code(
    client: &mut Client,
    request: CreateJoinCode,
) -> anyhow::Result<adora_message::enroll::JoinCodeCreated> {
    // Not `call_idempotent`: its answer would be remembered, with the secret, in the store.
    let request = ControlRequest::CreateJoinCode(request);
    let ControlReply::JoinCodeCreated(created) = client.call(request).await? else {
        bail!("unexpected reply to CreateJoinCode");
    };
    Ok(created)
}

#[cfg(test)]
mod tests {
    use adora_message::enroll::JoinCodeState;

    use super::*;

    #[test]
    fn lists_codes_with_their_state_and_relative_times() {
        let now = 10_000_000;
        let code = |id: &str, state, uses, machine: Option<&str>| JoinCodeInfo {
            id: id.into(),
            created_ms: now - 125_000,
            expires_ms: now + 1_800_000,
            uses,
            uses_allowed: 1,
            machine: machine.map(str::to_owned),
            labels: [("gpu".to_owned(), "true".to_owned())].into(),
            state,
        };
        let codes = [
            code("0a1b2c3d", JoinCodeState::Valid, 0, Some("robot-1")),
            code("ffff0000", JoinCodeState::Used, 1, None),
        ];
        assert_eq!(
            render(&codes, now),
            "ID        STATE  USES  CREATED  EXPIRES  MACHINE  LABELS\n\
             0a1b2c3d  valid  0/1   2m ago   in 30m   robot-1  gpu=true\n\
             ffff0000  used   1/1   2m ago   in 30m   -        gpu=true\n"
        );
        assert!(render(&[], now).contains("join-code create"));
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(61_000, 0), "in 1m");
        assert_eq!(relative(0, 45_000), "45s ago");
        assert_eq!(relative(0, 0), "in 0s");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
