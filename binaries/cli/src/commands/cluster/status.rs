//! `adora cluster status`: the daemons of the cluster with their machines' figures (version, OS,
//! kernel, architecture, uptime, load, CPU cores and use, memory, free disk, GPUs, from their
//! heartbeats), whether they take new nodes (`full: cpu 93% > 90%` above a threshold), a warning
//! when they run different Adora versions, and the active dataflows.

use std::{collections::BTreeMap, process::ExitCode};

use adora_core::resources::{MachineLimits, Reserved};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::Labels,
    coordinator_to_cli::{ControlReply, DataflowInfo},
    maintenance::{MachineMaintenance, MachineState},
    stats::MachineTelemetry,
};
use anyhow::bail;
use serde::Serialize;

use crate::{
    commands::client::{Client, ClientArgs},
    table::Table,
};

/// Show every daemon of the cluster with its last heartbeat, its machine's figures (Adora
/// version, OS, kernel, architecture, uptime, load, CPU cores and use, available memory, free
/// disk, GPUs), whether it takes new nodes (`full: ...` above a threshold) and labels, and the
/// active dataflows. Warns when the connected daemons and the coordinator run different Adora
/// versions.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster status\n  \
adora cluster status --coordinator-addr 10.0.0.1 --coordinator-port 6013 --json
  \
adora cluster status --links --json")]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show each daemon's Zenoh data links instead (peer, daemon or router, up or down, since
    /// when).
    #[arg(long)]
    links: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `--json` output.
#[derive(Debug, Serialize)]
struct ClusterStatus {
    coordinator: String,
    adora_version: String,
    daemons: Vec<Daemon>,
    active_dataflows: Vec<Dataflow>,
    /// Problems worth acting on (different versions), also printed to stderr.
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Daemon {
    /// Machine id, or the hostname of a daemon without one.
    id: String,
    machine_id: Option<String>,
    hostname: String,
    labels: Labels,
    connected: bool,
    last_heartbeat_ms: u64,
    /// The version the daemon registered with (`cluster upgrade` checks it).
    adora_version: String,
    /// Its machine's figures from its latest heartbeat (`null` until one carried them).
    machine: Option<MachineTelemetry>,
    /// `ready`, `cordoned`, `draining` or `upgrading`.
    state: MachineState,
    /// Its cordon, update locks, claim and drain (`null` when there are none).
    maintenance: Option<MachineMaintenance>,
    /// Its thresholds (`max_cpu_percent`, `max_memory_percent`, `min_disk_free`; unset ones
    /// left out).
    limits: MachineLimits,
    /// What the nodes of running dataflows placed on it asked for (`deploy.resources`).
    reserved: Reserved,
    /// The thresholds its machine is above (`cpu 93% > 90%`); empty when it takes new nodes.
    over_limits: Vec<String>,
}

impl Daemon {
    /// Its lifecycle state when not `ready` (`cordoned`, `draining`, `upgrading`); else `ready`,
    /// `full: <thresholds>`, or `-` for a lost daemon; `+locked` while it has update locks.
    fn state_cell(&self) -> String {
        let state = if self.state != MachineState::Ready {
            self.state.to_string()
        } else if !self.connected {
            "-".to_owned()
        } else if self.over_limits.is_empty() {
            "ready".to_owned()
        } else {
            format!("full: {}", self.over_limits.join(", "))
        };
        let locked = self
            .maintenance
            .as_ref()
            .is_some_and(|m| !m.locks.is_empty());
        if locked {
            format!("{state}+locked")
        } else {
            state
        }
    }
}

#[derive(Debug, Serialize)]
struct Dataflow {
    id: String,
    name: String,
    machines: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = args.client.addr();
    let mut client = Client::connect(&args.client).await?;
    let ControlReply::Status(status) = client.call(ControlRequest::Status).await? else {
        bail!("unexpected reply to Status");
    };
    if args.links {
        let report = super::links::report(&status);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!(
                "{}",
                super::links::render(&report, super::maintenance::now_ms())
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ControlReply::List(flows) = client.call(ControlRequest::List).await? else {
        bail!("unexpected reply to List");
    };
    let mut report = ClusterStatus {
        coordinator: addr,
        adora_version: status.adora_version,
        daemons: status
            .daemons
            .into_iter()
            .map(|d| Daemon {
                id: d.machine_id.clone().unwrap_or_else(|| d.hostname.clone()),
                over_limits: d
                    .machine
                    .as_ref()
                    .map(|m| d.limits.exceeded(&m.figures()))
                    .unwrap_or_default(),
                machine_id: d.machine_id,
                hostname: d.hostname,
                labels: d.labels,
                connected: d.connected,
                last_heartbeat_ms: d.last_heartbeat_ms,
                adora_version: d.adora_version,
                machine: d.machine,
                state: d.state,
                maintenance: d.maintenance,
                limits: d.limits,
                reserved: d.reserved,
            })
            .collect(),
        active_dataflows: flows
            .iter()
            .filter(|f| !f.status.is_done())
            .map(dataflow)
            .collect(),
        warnings: Vec::new(),
    };
    report.warnings = version_warnings(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    } else {
        print!("{}", render(&report, super::maintenance::now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

fn dataflow(f: &DataflowInfo) -> Dataflow {
    Dataflow {
        id: f.id.to_string(),
        name: f.name.clone(),
        machines: f.machines(),
    }
}

/// A warning when the connected daemons and the coordinator do not all run one Adora version,
/// naming each version with its daemons.
fn version_warnings(report: &ClusterStatus) -> Vec<String> {
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    versions
        .entry(report.adora_version.as_str())
        .or_default()
        .push("the coordinator");
    for d in report.daemons.iter().filter(|d| d.connected) {
        let version = match d.adora_version.as_str() {
            "" => "unknown",
            v => v,
        };
        versions.entry(version).or_default().push(&d.id);
    }
    if versions.len() < 2 {
        return Vec::new();
    }
    let list: Vec<String> = versions
        .iter()
        .map(|(version, who)| format!("{version} on {}", who.join(", ")))
        .collect();
    vec![format!(
        "the cluster runs different Adora versions: {}; roll one version out with \
         `adora cluster upgrade cluster.yml --binary PATH`",
        list.join("; ")
    )]
}

/// A figure, or `-` when the daemon did not report it.
fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

/// The machine columns of a daemon's row (all `-` before its first heartbeat with figures).
fn machine_cells(d: &Daemon) -> [String; 10] {
    let version = match d.adora_version.as_str() {
        "" => "-".to_owned(),
        v => v.to_owned(),
    };
    let Some(m) = &d.machine else {
        let mut cells: [String; 10] = Default::default();
        cells.fill("-".into());
        cells[0] = version;
        return cells;
    };
    let text = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let bytes = |b: u64| crate::commands::top::human_bytes(b);
    [
        version,
        text(&m.os),
        text(&m.kernel),
        text(&m.arch),
        or_dash(m.uptime_secs, |s| {
            crate::commands::top::human_uptime(s as f64)
        }),
        or_dash(m.load, |[one, five, fifteen]| {
            format!("{one:.2} {five:.2} {fifteen:.2}")
        }),
        match (m.cpus, m.cpu_percent) {
            (Some(cores), Some(used)) => format!("{cores} × {used:.0}%"),
            (cores, _) => or_dash(cores, |c| c.to_string()),
        },
        match (m.memory_available_bytes, m.memory_total_bytes) {
            (Some(free), Some(total)) => format!("{} / {}", bytes(free), bytes(total)),
            (free, _) => or_dash(free, bytes),
        },
        or_dash(m.disk_free_bytes, bytes),
        or_dash(m.gpus, |g| g.to_string()),
    ]
}

/// The human-readable table.
fn render(report: &ClusterStatus, now_ms: u64) -> String {
    let mut out = format!(
        "Coordinator at {} (adora {})\n\n",
        report.coordinator, report.adora_version
    );
    if report.daemons.is_empty() {
        out.push_str("No daemons connected (start them with `adora cluster up cluster.yml`).\n");
    } else {
        let mut table = Table::new([
            "DAEMON ID",
            "LAST HEARTBEAT",
            "VERSION",
            "OS",
            "KERNEL",
            "ARCH",
            "UPTIME",
            "LOAD",
            "CPUS",
            "MEM AVAILABLE",
            "DISK FREE",
            "GPUS",
            "STATE",
            "LABELS",
        ])
        .min_width(1, 16);
        for d in &report.daemons {
            let secs = d.last_heartbeat_ms / 1000;
            let heartbeat = if d.connected {
                format!("{secs}s ago")
            } else {
                format!("lost ({secs}s ago)")
            };
            let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![d.id.clone(), heartbeat];
            row.extend(machine_cells(d));
            row.push(d.state_cell());
            row.push(labels.join(","));
            table.row(row);
        }
        out.push_str(&table.render());
        out.push_str(&super::maintenance::describe(
            report.daemons.iter().filter_map(|d| d.maintenance.as_ref()),
            now_ms,
        ));
    }
    out.push_str(&format!(
        "\nActive dataflows: {}\n",
        report.active_dataflows.len()
    ));
    for f in &report.active_dataflows {
        out.push_str(&format!(
            "  {} ({}) on {}\n",
            f.name,
            f.id,
            f.machines.join(", ")
        ));
    }
    for w in &report.warnings {
        out.push_str(&format!("\nwarning: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineTelemetry {
        MachineTelemetry {
            adora_version: "0.1.0".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            uptime_secs: Some(3720),
            load: Some([0.5, 0.25, 0.0]),
            memory_total_bytes: Some(8 << 30),
            memory_available_bytes: Some(3 << 30),
            disk_free_bytes: Some(20 << 30),
            cpus: Some(8),
            cpu_percent: Some(93.0),
            gpus: Some(2),
        }
    }

    fn report(gpu_version: &str, gpu_connected: bool) -> ClusterStatus {
        let mut report = ClusterStatus {
            coordinator: "10.0.0.1:6013".into(),
            adora_version: "0.1.0".into(),
            daemons: vec![
                Daemon {
                    id: "robot".into(),
                    machine_id: Some("robot".into()),
                    hostname: "r".into(),
                    labels: [("arch".into(), "arm64".into())].into(),
                    connected: true,
                    last_heartbeat_ms: 2300,
                    adora_version: "0.1.0".into(),
                    machine: Some(machine()),
                    state: MachineState::Ready,
                    maintenance: Some(MachineMaintenance {
                        machine: "robot".into(),
                        locks: vec![adora_message::maintenance::UpdateLock {
                            holder: adora_message::maintenance::LockHolder::Operator,
                            reason: "calibrating".into(),
                            since_ms: 1_000,
                        }],
                        ..Default::default()
                    }),
                    limits: MachineLimits {
                        max_cpu_percent: Some(90),
                        ..MachineLimits::default()
                    },
                    reserved: Reserved::default(),
                    over_limits: vec!["cpu 93% > 90%".into()],
                },
                Daemon {
                    id: "gpu-server".into(),
                    machine_id: Some("gpu-server".into()),
                    hostname: "g".into(),
                    labels: Labels::new(),
                    connected: gpu_connected,
                    last_heartbeat_ms: 25_000,
                    adora_version: gpu_version.into(),
                    machine: None,
                    state: MachineState::Cordoned,
                    maintenance: Some(MachineMaintenance {
                        machine: "gpu-server".into(),
                        cordon: Some(adora_message::maintenance::Cordon {
                            reason: "battery swap".into(),
                            since_ms: 0,
                        }),
                        ..Default::default()
                    }),
                    limits: MachineLimits::default(),
                    reserved: Reserved::default(),
                    over_limits: Vec::new(),
                },
            ],
            active_dataflows: vec![Dataflow {
                id: "u".into(),
                name: "demo".into(),
                machines: vec!["gpu-server".into(), "robot".into()],
            }],
            warnings: Vec::new(),
        };
        report.warnings = version_warnings(&report);
        report
    }

    #[test]
    fn renders_daemons_machines_and_dataflows() {
        let report = report("0.1.0", false);
        assert_eq!(report.warnings, Vec::<String>::new());
        assert_eq!(
            render(&report, 4_000),
            "Coordinator at 10.0.0.1:6013 (adora 0.1.0)\n\n\
             DAEMON ID   LAST HEARTBEAT    VERSION  OS                              KERNEL          \
             ARCH    UPTIME  LOAD            CPUS     MEM AVAILABLE      DISK FREE  GPUS  \
             STATE                       LABELS\n\
             robot       2s ago            0.1.0    Debian GNU/Linux 12 (bookworm)  6.1.0-18-amd64  \
             x86_64  1h02m   0.50 0.25 0.00  8 × 93%  3.0 GiB / 8.0 GiB  20.0 GiB   2     \
             full: cpu 93% > 90%+locked  arch=arm64\n\
             gpu-server  lost (25s ago)    0.1.0    -                               -               \
             -       -       -               -        -                  -          -     cordoned\n\
             \nMaintenance:\n  robot: update lock by an operator (calibrating), held 3s\n  \
             gpu-server: cordoned 4s ago: battery swap\n\
             \nActive dataflows: 1\n  demo (u) on gpu-server, robot\n"
        );
    }

    #[test]
    fn warns_when_connected_daemons_run_another_version() {
        let report = report("0.2.0", true);
        assert_eq!(
            report.warnings,
            [
                "the cluster runs different Adora versions: 0.1.0 on the coordinator, robot; \
              0.2.0 on gpu-server; roll one version out with \
              `adora cluster upgrade cluster.yml --binary PATH`"
            ]
        );
        assert!(render(&report, 4_000).ends_with(&format!("\nwarning: {}\n", report.warnings[0])));
        // A lost daemon's version is stale: no warning for it.
        assert!(report_of_lost_daemon().warnings.is_empty());
    }

    #[test]
    fn json_carries_cores_gpus_thresholds_and_what_is_over() {
        let json = serde_json::to_value(report("0.1.0", false)).expect("serializes");
        let robot = &json["daemons"][0];
        assert_eq!(robot["machine"]["cpus"], 8);
        assert_eq!(robot["machine"]["cpu_percent"], 93.0);
        assert_eq!(robot["machine"]["gpus"], 2);
        assert_eq!(
            robot["limits"],
            serde_json::json!({ "max_cpu_percent": 90 })
        );
        assert_eq!(robot["over_limits"], serde_json::json!(["cpu 93% > 90%"]));
        assert_eq!(robot["reserved"]["memory"], 0);
        assert_eq!(json["daemons"][1]["over_limits"], serde_json::json!([]));
    }

    fn report_of_lost_daemon() -> ClusterStatus {
        report("0.2.0", false)
    }
}
