//! `cluster.yml`: the coordinator address and the machines of a fleet, validated with every
//! problem reported at once (file, line, field), like dataflow files.
//!
//! ```yaml
//! coordinator: { addr: 10.0.0.1, port: 6013 }
//! machines:
//!   - { id: robot, host: 10.0.0.2, user: ubuntu, labels: { arch: arm64 } }
//!   - id: gpu-server
//!     host: gpu.example.org
//!     ssh_port: 2222
//!     identity_file: ~/.ssh/fleet_ed25519
//!     max_cpu_percent: 90       # thresholds above which it takes no new nodes
//!     max_memory_percent: 85
//!     min_disk_free: 5GiB
//! sites:                        # optional: networks joined by Zenoh routers (see `sites`)
//!   lab: { machines: [robot], router: { machine: robot } }
//! ```

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::{
    descriptor::ByteSize,
    ids::is_valid_id,
    resources::MachineLimits,
    validate::{describe, locate::Seg, read_file, unknown_field, Report, ValidationErrors},
};

/// Default coordinator port.
pub const DEFAULT_COORDINATOR_PORT: u16 = 6013;

/// A whole `cluster.yml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the coordinator listens (and is reachable by every machine).
    pub coordinator: CoordinatorAddr,
    /// The machines, each running one daemon (or only a site's router, see [`sites`]).
    pub machines: Vec<Machine>,
    /// Machines grouped by network, joined by Zenoh routers (see [`sites`]); none by default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, Site>,
}

/// The coordinator's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorAddr {
    /// IP address or host name the machines use to reach the coordinator.
    pub addr: String,
    /// TCP port (default 6013).
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    DEFAULT_COORDINATOR_PORT
}

/// One machine of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Machine id: the daemon's `--machine-id`, used by `_unstable_deploy.machine`.
    pub id: String,
    /// Host name or IP address to SSH to.
    pub host: String,
    /// SSH user (default: the current user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Labels of the daemon, for label scheduling.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// SSH port (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// SSH private key to use for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Directory holding the `adora` binary on the machine (default: found on `PATH`, and
    /// `~/.local/bin` for upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
    /// Directory for the daemon's token, logs and pid file on the machine
    /// (default `~/.local/state/adora`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Above this CPU use of the whole machine (percent, 1 to 100) it takes no new nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_percent: Option<u8>,
    /// Above this memory use (percent of the total, 1 to 100) it takes no new nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_percent: Option<u8>,
    /// Below this much free disk (daemon's state directory) it takes no new nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_disk_free: Option<ByteSize>,
}

impl Machine {
    /// The SSH user: the configured one or the current user.
    pub fn user(&self) -> String {
        self.user.clone().unwrap_or_else(|| {
            std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "root".into())
        })
    }

    /// `user@host`, as shown to people.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user(), self.host)
    }

    /// Its thresholds, as the daemon reports them.
    pub fn limits(&self) -> MachineLimits {
        MachineLimits {
            max_cpu_percent: self.max_cpu_percent,
            max_memory_percent: self.max_memory_percent,
            min_disk_free: self.min_disk_free.map(|b| b.0),
        }
    }

    /// Labels as `k1=v1,k2=v2` for `adora daemon --labels`.
    pub fn labels_arg(&self) -> Option<String> {
        (!self.labels.is_empty()).then(|| {
            self.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

const ROOT_FIELDS: &[&str] = &["coordinator", "machines", "sites"];
const COORDINATOR_FIELDS: &[&str] = &["addr", "port"];
const MACHINE_FIELDS: &[&str] = &[
    "id",
    "host",
    "user",
    "labels",
    "ssh_port",
    "identity_file",
    "install_dir",
    "state_dir",
    "max_cpu_percent",
    "max_memory_percent",
    "min_disk_free",
];

/// The largest cluster file read: parsing is linear but not fast (about 0.5 s per MiB of
/// deeply nested YAML), and no real cluster comes near it.
pub const MAX_CLUSTER_FILE: usize = 1 << 20;

impl ClusterConfig {
    /// Reads and validates a cluster file.
    pub fn read(path: &Path) -> Result<Self, ValidationErrors> {
        Self::parse(&read_file(path)?, path)
    }

    /// Parses and validates cluster YAML; `file` is only used in error messages.
    pub fn parse(yaml: &str, file: &Path) -> Result<Self, ValidationErrors> {
        let mut report = Report::new(file, yaml);
        if yaml.len() > MAX_CLUSTER_FILE {
            let message = format!(
                "the file is {:.1} MiB; a cluster file is at most {} MiB (a thousand machines \
                 take about 100 KiB)",
                yaml.len() as f64 / (1 << 20) as f64,
                MAX_CLUSTER_FILE >> 20
            );
            report.push(None, None, None, message);
            return Err(report.finish());
        }
        let root: Value = match crate::validate::yaml::parse_value(yaml) {
            Ok(root) => root,
            Err((line, message)) => {
                report.push(None, None, line, message);
                return Err(report.finish());
            }
        };
        check(&mut report, &root);
        if !report.is_empty() {
            return Err(report.finish());
        }
        let config: Self = match serde_yaml::from_value(root) {
            Ok(config) => config,
            Err(e) => {
                report.push(None, None, None, e.to_string());
                return Err(report.finish());
            }
        };
        for (field, message) in sites::check_router_ports(&config) {
            report.push(None, Some(field), None, message);
        }
        if report.is_empty() {
            Ok(config)
        } else {
            Err(report.finish())
        }
    }

    /// The machine with this id.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.id == id)
    }
}

fn err(report: &mut Report<'_>, path: &[Seg<'_>], field: String, message: String) {
    let line = report.line(path);
    report.push(None, Some(field), line, message);
}

fn unknown_keys(
    report: &mut Report<'_>,
    map: &serde_yaml::Mapping,
    path: &[Seg<'_>],
    prefix: &str,
    known: &[&str],
) {
    for key in map.keys() {
        let Some(name) = key.as_str() else {
            err(
                report,
                path,
                prefix.trim_end_matches('.').to_owned(),
                format!("keys must be strings, found {}", describe(key)),
            );
            continue;
        };
        if !known.contains(&name) {
            let mut p = path.to_vec();
            p.push(Seg::Key(name));
            err(
                report,
                &p,
                format!("{prefix}{name}"),
                unknown_field(name, known),
            );
        }
    }
}

fn check(report: &mut Report<'_>, root: &Value) {
    let Value::Mapping(map) = root else {
        err(
            report,
            &[],
            "cluster".into(),
            format!(
                "expected a mapping with `coordinator` and `machines`, found {}",
                describe(root)
            ),
        );
        return;
    };
    unknown_keys(report, map, &[], "", ROOT_FIELDS);
    match map.get("coordinator") {
        None => report.push(
            None,
            Some("coordinator".into()),
            None,
            "missing required field `coordinator` (e.g. `coordinator: { addr: 10.0.0.1 }`)".into(),
        ),
        Some(Value::Mapping(c)) => check_coordinator(report, c),
        Some(other) => err(
            report,
            &[Seg::Key("coordinator")],
            "coordinator".into(),
            format!(
                "expected a mapping with `addr` and `port`, found {}",
                describe(other)
            ),
        ),
    }
    match map.get("machines") {
        None => report.push(
            None,
            Some("machines".into()),
            None,
            "missing required field `machines`: a cluster needs at least one machine".into(),
        ),
        Some(Value::Sequence(ms)) if ms.is_empty() => err(
            report,
            &[Seg::Key("machines")],
            "machines".into(),
            "a cluster needs at least one machine".into(),
        ),
        Some(Value::Sequence(ms)) => {
            check_machines(report, ms);
            if let Some(sites) = map.get("sites") {
                let ids: Vec<String> = ms
                    .iter()
                    .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
                    .collect();
                sites::check_sites(report, sites, &ids);
            }
        }
        Some(Value::Null) => err(
            report,
            &[Seg::Key("machines")],
            "machines".into(),
            "a cluster needs at least one machine".into(),
        ),
        Some(other) => err(
            report,
            &[Seg::Key("machines")],
            "machines".into(),
            format!("expected a list of machines, found {}", describe(other)),
        ),
    }
}

fn check_coordinator(report: &mut Report<'_>, c: &serde_yaml::Mapping) {
    let base = [Seg::Key("coordinator")];
    unknown_keys(report, c, &base, "coordinator.", COORDINATOR_FIELDS);
    match c.get("addr") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        None => err(
            report,
            &base,
            "coordinator.addr".into(),
            "missing required field `addr`".into(),
        ),
        Some(other) => err(
            report,
            &[Seg::Key("coordinator"), Seg::Key("addr")],
            "coordinator.addr".into(),
            format!(
                "expected a non-empty host or IP address, found {}",
                describe(other)
            ),
        ),
    }
    check_port(
        report,
        c.get("port"),
        &[Seg::Key("coordinator"), Seg::Key("port")],
        "coordinator.port",
    );
}

fn check_port(report: &mut Report<'_>, value: Option<&Value>, path: &[Seg<'_>], field: &str) {
    match value {
        None => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(other) => err(
            report,
            path,
            field.into(),
            format!(
                "expected a port number between 1 and 65535, found {}",
                describe(other)
            ),
        ),
    }
}

fn check_machines(report: &mut Report<'_>, machines: &[Value]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in machines.iter().enumerate() {
        let base = [Seg::Key("machines"), Seg::Index(i)];
        let prefix = format!("machines[{i}].");
        let Value::Mapping(map) = m else {
            err(
                report,
                &base,
                format!("machines[{i}]"),
                format!(
                    "expected a machine mapping with `id` and `host`, found {}",
                    describe(m)
                ),
            );
            continue;
        };
        unknown_keys(report, map, &base, &prefix, MACHINE_FIELDS);
        let machine = MachineAt { i, prefix: &prefix };
        check_machine_id(report, &machine, map.get("id"), &mut seen);
        check_host(report, &machine, map.get("host"));
        for key in ["user", "identity_file", "install_dir", "state_dir"] {
            match map.get(key) {
                None | Some(Value::String(_)) => {}
                Some(other) => err(
                    report,
                    &machine.at(key),
                    format!("{prefix}{key}"),
                    format!("expected a string, found {}", describe(other)),
                ),
            }
        }
        check_port(
            report,
            map.get("ssh_port"),
            &machine.at("ssh_port"),
            &format!("{prefix}ssh_port"),
        );
        check_labels(report, &machine, map.get("labels"));
        limits::check_limits(report, &machine, map);
    }
}

/// Where in cluster.yml one machine is: `machines[i]`.
struct MachineAt<'a> {
    i: usize,
    /// `machines[i].`, the prefix of its fields' names in messages.
    prefix: &'a str,
}

impl MachineAt<'_> {
    /// The machine's own path.
    fn base(&self) -> [Seg<'static>; 2] {
        [Seg::Key("machines"), Seg::Index(self.i)]
    }

    /// The path of one of its fields.
    fn at(&self, key: &'static str) -> [Seg<'static>; 3] {
        [Seg::Key("machines"), Seg::Index(self.i), Seg::Key(key)]
    }
}

/// `id`: present, valid and unique (`seen`: id → the first machine with it).
fn check_machine_id(
    report: &mut Report<'_>,
    machine: &MachineAt<'_>,
    id: Option<&Value>,
    seen: &mut BTreeMap<String, usize>,
) {
    let prefix = machine.prefix;
    let at = machine.at("id");
    match id {
        Some(Value::String(id)) if is_valid_id(id) => {
            if let Some(first) = seen.get(id) {
                err(
                    report,
                    &at,
                    format!("{prefix}id"),
                    format!("duplicate machine id `{id}` (also machines[{first}])"),
                );
            } else {
                seen.insert(id.clone(), machine.i);
            }
        }
        Some(Value::String(id)) if id.is_empty() => err(
            report,
            &at,
            format!("{prefix}id"),
            "machine id must not be empty".into(),
        ),
        Some(Value::String(id)) => err(
            report,
            &at,
            format!("{prefix}id"),
            format!(
                "invalid machine id `{id}`: ids may only contain letters, digits, `_`, `.` and `-`"
            ),
        ),
        None => err(
            report,
            &machine.base(),
            format!("{prefix}id"),
            "missing required field `id`".into(),
        ),
        Some(other) => err(
            report,
            &at,
            format!("{prefix}id"),
            format!("expected a string, found {}", describe(other)),
        ),
    }
}

/// `host`: a non-empty string.
fn check_host(report: &mut Report<'_>, machine: &MachineAt<'_>, host: Option<&Value>) {
    let prefix = machine.prefix;
    match host {
        Some(Value::String(h)) if !h.trim().is_empty() => {}
        Some(Value::String(_)) => err(
            report,
            &machine.at("host"),
            format!("{prefix}host"),
            "host must not be empty".into(),
        ),
        None => err(
            report,
            &machine.base(),
            format!("{prefix}host"),
            "missing required field `host`".into(),
        ),
        Some(other) => err(
            report,
            &machine.at("host"),
            format!("{prefix}host"),
            format!(
                "expected a host name or IP address, found {}",
                describe(other)
            ),
        ),
    }
}

/// `labels`: a mapping of strings to strings.
fn check_labels(report: &mut Report<'_>, machine: &MachineAt<'_>, labels: Option<&Value>) {
    let prefix = machine.prefix;
    match labels {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(labels)) => {
            for (k, v) in labels {
                let name = k.as_str().unwrap_or("?");
                if !matches!((k, v), (Value::String(_), Value::String(_))) {
                    let path = [
                        Seg::Key("machines"),
                        Seg::Index(machine.i),
                        Seg::Key("labels"),
                        Seg::Key(name),
                    ];
                    err(report, &path, format!("{prefix}labels.{name}"), format!("label keys and values must be strings (quote them: \"true\"), found {}", describe(v)));
                }
            }
        }
        Some(other) => err(
            report,
            &machine.at("labels"),
            format!("{prefix}labels"),
            format!("expected a mapping of strings, found {}", describe(other)),
        ),
    }
}

mod limits;
pub mod sites;
pub use sites::{Site, SiteRouter, DEFAULT_ROUTER_PORT};
#[cfg(test)]
mod tests;
