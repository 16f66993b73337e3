//! `adora cluster revoke MACHINE`: the coordinator refuses the machine's daemon certificates
//! from now on and disconnects its daemon.

use std::process::ExitCode;

use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, enroll::MachineRevoked,
};
use anyhow::bail;

use crate::{
    commands::client::{Client, ClientArgs},
    output::print_json,
};

/// Revoke every certificate issued to a machine's daemon and disconnect it. The daemon cannot
/// connect again with its identity; it joins again only with a new join code.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster revoke robot-1\n  \
adora cluster revoke robot-1 --json\n\n\
To let the machine back in: CODE=$(adora cluster join-code create --machine robot-1), then start \
its daemon with that code. Exits 1 when no certificate was ever issued to the machine.")]
pub struct Args {
    /// The machine id.
    machine: String,
    /// Print `{ machine, certificates, disconnected }` as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let request = ControlRequest::RevokeMachine {
        machine: args.machine,
    };
    let ControlReply::MachineRevoked(revoked) = client.call(request).await? else {
        bail!("unexpected reply to RevokeMachine");
    };
    if args.json {
        print_json(&revoked)?;
    } else {
        println!("{}", summary(&revoked));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line saying what happened.
fn summary(r: &MachineRevoked) -> String {
    let certs = match r.certificates {
        0 => format!(
            "machine `{}`: its certificates were already revoked",
            r.machine
        ),
        1 => format!("machine `{}` revoked: 1 certificate", r.machine),
        n => format!("machine `{}` revoked: {n} certificates", r.machine),
    };
    if r.disconnected {
        format!("{certs}; its daemon was disconnected")
    } else {
        format!("{certs}; its daemon was not connected")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_was_revoked_and_disconnected() {
        let r = |certificates, disconnected| MachineRevoked {
            machine: "robot".into(),
            certificates,
            disconnected,
        };
        assert_eq!(
            summary(&r(2, true)),
            "machine `robot` revoked: 2 certificates; its daemon was disconnected"
        );
        assert_eq!(
            summary(&r(0, false)),
            "machine `robot`: its certificates were already revoked; its daemon was not connected"
        );
    }
}
