//! `adora stop`: stop a running dataflow and wait until its nodes have ended.
//!
//! Stopping a dataflow that has already ended (say, after `adora start --attach` returned) is a
//! success that says so, so a `set -e` CI script can always stop what it started; an unknown
//! name stays an error.

use std::{process::ExitCode, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{ControlError, ErrorKind},
    coordinator_to_cli::{ControlReply, DataflowInfo},
};
use anyhow::bail;

use super::client::{Client, ClientArgs};

/// How long `stop` waits beyond the grace period for the daemons to report the end.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// Stop a running dataflow: Stop event, then SIGTERM after the grace period, then SIGKILL.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora stop demo\n  adora stop 4f1c2a7e-0a8c-4a51-9b7e-3d2f5c6e7a8b --grace 10s"
)]
pub struct Args {
    /// Name or uuid of the dataflow (see `adora list`).
    dataflow: String,
    /// Time nodes get after the Stop event before SIGTERM [default: the daemon's, 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let wait = args.grace.unwrap_or(adora_daemon::DEFAULT_STOP_GRACE) + STOP_MARGIN;
    let request = ControlRequest::Stop {
        dataflow: args.dataflow.clone(),
        grace: args.grace,
    };
    let reply = tokio::time::timeout(wait, client.call_idempotent(request)).await;
    match reply {
        Err(_) => bail!(
            "dataflow `{}` did not stop within {wait:?}; is its daemon connected? (`adora status`)",
            args.dataflow
        ),
        Ok(Err(e)) => match refused_as_ended(&e) {
            true => already_ended(&mut client, &args.dataflow, e).await,
            false => Err(e),
        },
        Ok(Ok(ControlReply::Stopped { id, outcome })) => {
            super::start::report(&args.dataflow, id, &outcome);
            eprintln!("stopped {id}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(other)) => bail!("unexpected reply {other:?}"),
    }
}

/// True when the coordinator refused the stop for a reason other than an unknown name: the
/// dataflow may have ended already, which [`already_ended`] checks.
fn refused_as_ended(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ControlError>()
        .is_some_and(|e| e.kind == ErrorKind::InvalidRequest)
}

/// Answers a refused stop: success when no dataflow of that name or uuid is running any more
/// and one has ended, the refusal otherwise.
async fn already_ended(
    client: &mut Client,
    target: &str,
    refusal: anyhow::Error,
) -> anyhow::Result<ExitCode> {
    let ControlReply::List(list) = client.call(ControlRequest::List).await? else {
        bail!("unexpected reply to List");
    };
    match ended_run(&list, target) {
        Some(flow) => {
            eprintln!(
                "dataflow `{}` ({}) already {}; nothing to stop",
                flow.name, flow.id, flow.status
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Err(refusal),
    }
}

/// The latest ended run named (or with the uuid) `target`, if none of that name still runs.
fn ended_run<'a>(list: &'a [DataflowInfo], target: &str) -> Option<&'a DataflowInfo> {
    let matching = || {
        list.iter()
            .filter(move |f| f.name == target || f.id.to_string() == target)
    };
    if matching().any(|f| !f.status.is_done()) {
        return None;
    }
    matching().rfind(|f| f.status.is_done())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adora_message::control::DataflowStatus;

    fn flow(name: &str, status: DataflowStatus) -> DataflowInfo {
        DataflowInfo {
            id: uuid::Uuid::new_v4(),
            name: name.into(),
            status,
            nodes: Default::default(),
            restarts: Default::default(),
            remote_dropped: Default::default(),
            degraded: Vec::new(),
        }
    }

    #[test]
    fn an_ended_run_is_found_by_name_or_uuid() {
        let list = [
            flow("ci", DataflowStatus::Failed),
            flow("ci", DataflowStatus::Finished),
            flow("other", DataflowStatus::Running),
        ];
        let found = ended_run(&list, "ci").expect("ended");
        assert_eq!(found.status, DataflowStatus::Finished);
        let by_id = ended_run(&list, &list[0].id.to_string()).expect("ended");
        assert_eq!(by_id.status, DataflowStatus::Failed);
    }

    #[test]
    fn a_running_or_unknown_dataflow_is_not_ended() {
        let list = [
            flow("ci", DataflowStatus::Finished),
            flow("ci", DataflowStatus::Stopping),
        ];
        assert!(ended_run(&list, "ci").is_none());
        assert!(ended_run(&list, "nope").is_none());
    }
}
