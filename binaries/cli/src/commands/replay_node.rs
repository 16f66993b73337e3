//! `adora replay-node` (hidden): the player `adora replay` puts in place of a replaced node. A
//! node like any other (it uses `adora-node-api`): it publishes the node's recorded outputs with
//! their recorded types, parameters and bytes, at the recorded pace divided by the speed, or at
//! speed 0 as fast as the receivers take them, waiting for room in their queues before each
//! message so that nothing is dropped. It stops early on `Stop`.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_node_api::{AdoraNode, Event, EventStream};
use anyhow::{bail, Context};

use super::{recording::format, replay::env};

/// The player (started by `adora replay`, not by hand).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (what `adora replay` puts in the dataflow):\n  path: /usr/bin/adora\n  args: replay-node"
)]
pub struct Args {}

/// The player's settings, from its environment.
struct Settings {
    file: PathBuf,
    speed: f64,
    /// `0`: until stopped.
    rounds: u32,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| format!("{name} is not set: run `adora replay`"))
        };
        let speed: f64 = var(env::SPEED)?.parse().context(env::SPEED)?;
        if !(speed.is_finite() && (0.0..=super::replay::MAX_SPEED).contains(&speed)) {
            bail!("{} is out of range: {speed}", env::SPEED);
        }
        Ok(Self {
            file: PathBuf::from(var(env::FILE)?),
            speed,
            rounds: var(env::ROUNDS)?.parse().context(env::ROUNDS)?,
        })
    }
}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(play)
        .await
        .context("the player panicked")?
}

fn play() -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    let (mut node, mut events) = AdoraNode::init_from_env().context("cannot start the player")?;
    let bytes = std::fs::read(&settings.file)
        .with_context(|| format!("cannot read {}", settings.file.display()))?;
    let mut sent = 0u64;
    let mut round = 0u32;
    while settings.rounds == 0 || round < settings.rounds {
        round += 1;
        match play_once(&mut node, &mut events, &bytes, settings.speed)? {
            Played::All(n) => sent += n,
            Played::Stopped(n) => {
                sent += n;
                println!("stopped: replayed {sent} message(s) in round {round}");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    println!("replayed {sent} message(s) in {round} round(s)");
    Ok(ExitCode::SUCCESS)
}

/// How a round ended.
enum Played {
    /// Every message of the node was sent (how many).
    All(u64),
    /// `Stop` came first (how many were sent).
    Stopped(u64),
}

/// Plays the node's messages of the recording once.
fn play_once(
    node: &mut AdoraNode,
    events: &mut EventStream,
    recording: &[u8],
    speed: f64,
) -> anyhow::Result<Played> {
    let me = node.id().to_string();
    let mut sent = 0u64;
    let mut clock: Option<(u64, Instant)> = None;
    for message in mcap::MessageStream::new(recording).context("not an MCAP file")? {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                // A recording whose recorder was killed ends in a partial chunk.
                eprintln!("the recording ends early ({e}): replayed up to there");
                break;
            }
        };
        let channel = &message.channel;
        if channel.metadata.get("node") != Some(&me) {
            continue;
        }
        let Some(output) = channel.metadata.get("output") else {
            continue;
        };
        let (metadata, payload) = format::decode(&message.data)?;
        let output = output.clone().into();
        if speed > 0.0 {
            let (first, start) = *clock.get_or_insert((message.log_time, Instant::now()));
            let offset = message.log_time.saturating_sub(first) as f64 / speed;
            let due = start + Duration::from_nanos(offset.min(u64::MAX as f64) as u64);
            if stop_before(events, Some(due)) {
                return Ok(Played::Stopped(sent));
            }
        } else {
            node.wait_for_room(&output)?;
            if stop_before(events, None) {
                return Ok(Played::Stopped(sent));
            }
        }
        node.send_recorded(&output, metadata.parameters, metadata.type_info, payload)
            .with_context(|| format!("cannot send {me}/{output}"))?;
        sent += 1;
    }
    Ok(Played::All(sent))
}

/// Waits until `due` (`None`: only looks) for a `Stop`; true if the player must stop.
fn stop_before(events: &mut EventStream, due: Option<Instant>) -> bool {
    loop {
        let left = due.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        });
        match events.recv_timeout(left) {
            Some(Event::Stop) => return true,
            Some(_) => continue, // the player has no inputs: nothing else matters
            None if events.is_ended() => return true,
            None if left.is_zero() => return false,
            None => continue,
        }
    }
}
