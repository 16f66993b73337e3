//! Fleet commands on hosts that boot a real systemd (`adora_test_support::systemd_hosts`): each
//! host has its own filesystem, `systemctl`, `journalctl` and reboots are real.
//!
//! The `adora` binary and the test node are put on each host's filesystem by the test (the hosts
//! run the same Debian release as this machine, so the debug build runs there); everything else
//! goes through the CLI as a user runs it: `cluster up`, `cluster install`, `start`, `logs`,
//! `cluster status`, `cluster restart`, `cluster down --services`, `cluster uninstall`.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use adora_test_support::{
    bin, require_systemd_hosts,
    systemd_hosts::{SystemdHost, SystemdHosts, SUDO_USER},
    temp_dir, wait_until, MarkedCli,
};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(90);
/// How long a rebooted host has to reach `running`.
const BOOT_WAIT: Duration = Duration::from_secs(60);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_FLEET_SYSTEMD_TEST";
/// The sink prints a progress line every this many messages.
const PROGRESS: u64 = 10;
/// Where the hosts have `adora` (on root's and the sudo user's PATH).
const REMOTE_ADORA: &str = "/usr/local/bin/adora";
/// Where the test node goes on the hosts: not the path it has here, which may be under `/tmp`
/// (a tmpfs on a booted host hides what was put there before the boot).
const REMOTE_NODE: &str = "/usr/local/bin/adora-test-node";

/// The test's CLI; brings the cluster down (services included) when the test fails half-way.
struct Cli {
    cli: MarkedCli,
    cluster: PathBuf,
    ssh_config: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> adora_test_support::Output {
        self.cli.run(args)
    }

    fn ok(&self, args: &[&str]) -> adora_test_support::Output {
        self.cli.ok(args)
    }

    /// `adora cluster <sub> cluster.yml --ssh-config <hosts' config> <extra>`.
    fn cluster(&self, sub: &str, extra: &[&str]) -> adora_test_support::Output {
        let cluster = self.cluster.display().to_string();
        let mut args = vec!["cluster", sub, &cluster, "--ssh-config", &self.ssh_config];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Machine id → connected, from `cluster status --json`.
    fn connected(&self) -> Vec<(String, bool)> {
        let out = self.run(&["cluster", "status", "--json"]);
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            return Vec::new();
        };
        let mut v: Vec<(String, bool)> = json["daemons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        let id = d["id"].as_str().unwrap_or_default().to_owned();
                        (id, d["connected"] == true)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn is_connected(&self, id: &str) -> Option<bool> {
        self.connected()
            .into_iter()
            .find(|(m, _)| m == id)
            .map(|(_, c)| c)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if !self.cli.leftovers().is_empty() {
            let _ = self.cluster("down", &["--services"]);
        }
    }
}

/// `(machine id, outcome)` of `cluster install|uninstall --json` (stdout is the JSON only).
fn json_outcomes(stdout: &str) -> Vec<(String, String)> {
    let json: serde_json::Value = serde_json::from_str(stdout).expect("stdout is JSON");
    assert_eq!(json["ok"], true, "{stdout}");
    json["machines"]
        .as_array()
        .expect("a machines array")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn both_ok() -> Vec<(String, String)> {
    vec![("h0".into(), "ok".into()), ("h1".into(), "ok".into())]
}

/// `systemctl is-active <unit>` on `host`: `active`, `inactive`, ...
fn unit_state(host: &SystemdHost, unit: &str) -> String {
    let out = host.ssh(&["systemctl", "is-active", unit]);
    out.stdout.trim().to_owned()
}

/// Two machines: `h0` reached as root, `h1` as the passwordless-sudo user (so `install`, the
/// service start of `up` and `down --services` go through `sudo -n` there).
fn cluster_file(dir: &Path, hosts: &SystemdHosts, port: u16) -> PathBuf {
    let yaml = format!(
        "coordinator: {{ addr: {}, port: {port} }}\nmachines:\n  \
         - {{ id: h0, host: h0, user: root, state_dir: /var/lib/adora }}\n  \
         - {{ id: h1, host: h1, user: {SUDO_USER} }}\n",
        hosts.gateway_ip()
    );
    let path = dir.join("cluster.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A sequence source on h0 (a message every 20 ms), its sink on h1.
fn dataflow(dir: &Path, node: &Path) -> PathBuf {
    let node = node.display();
    let yaml = format!(
        "nodes:
  - id: source
    path: {node}
    env: {{ MODE: seq-source, COUNT: 1000000 }}
    inputs: {{ tick: adora/timer/millis/20 }}
    outputs: [data]
    _unstable_deploy: {{ machine: h0 }}
  - id: sink
    path: {node}
    env: {{ MODE: seq-sink, PROGRESS: {PROGRESS} }}
    inputs: {{ data: source/data }}
    _unstable_deploy: {{ machine: h1 }}
"
    );
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// How many sink instances have received their first `PROGRESS` messages (the sink's log is
/// appended to by every instance, each counting from zero).
fn sink_starts(cli: &Cli) -> usize {
    let out = cli.run(&["logs", "reboot", "sink"]);
    let first = format!("received={PROGRESS} ");
    out.stdout.lines().filter(|l| l.contains(&first)).count()
}

#[test]
fn installed_daemons_are_never_doubled_and_survive_a_reboot() {
    let hosts = require_systemd_hosts!("fleet_systemd", 2);
    let dir = temp_dir();
    let port = hosts.free_gateway_port();
    let node = Path::new(REMOTE_NODE);
    for h in hosts.hosts() {
        h.put_file(&bin("adora"), Path::new(REMOTE_ADORA));
        h.put_file(&bin("adora-test-node"), node);
    }
    let cli = Cli {
        cli: MarkedCli::new(&dir.path().join("local"), MARKER, TIMEOUT),
        cluster: cluster_file(dir.path(), &hosts, port),
        ssh_config: hosts.ssh_config().display().to_string(),
    };
    let (h0, h1) = (hosts.host(0), hosts.host(1));

    // Ad-hoc daemons first, then `install` turns them into services.
    let up = cli.cluster("up", &[]);
    assert!(up.status.success(), "{up}");
    let install = cli.cluster("install", &["--json"]);
    assert!(install.status.success(), "{install}");
    assert_eq!(json_outcomes(&install.stdout), both_ok(), "{install}");
    for h in [h0, h1] {
        let unit = format!("adora-daemon-{}.service", h.name());
        assert_eq!(unit_state(h, &unit), "active", "{install}");
    }
    let both = vec![("h0".to_owned(), true), ("h1".to_owned(), true)];
    assert!(
        wait_until(WAIT, || cli.connected() == both),
        "{:?}",
        cli.connected()
    );

    // `cluster up` on a machine with the unit starts the unit, not a second daemon.
    h1.ssh(&["systemctl", "stop", "adora-daemon-h1.service"]);
    assert!(wait_until(WAIT, || cli.is_connected("h1") == Some(false)));
    let up = cli.cluster("up", &[]);
    assert!(up.status.success(), "{up}");
    assert!(
        up.stdout
            .contains("Daemon on h0 (root@h0) already connected."),
        "{up}"
    );
    assert!(
        up.stdout
            .contains("OK (systemd service adora-daemon-h1.service)"),
        "{up}"
    );
    assert_eq!(unit_state(h1, "adora-daemon-h1.service"), "active");
    let pid_file = h1
        .root()
        .join("home")
        .join(SUDO_USER)
        .join(".local/state/adora/daemon.pid");
    assert!(!pid_file.exists(), "an ad-hoc daemon was started on h1");

    // A second daemon for h0, started by hand, is refused and exits non-zero naming h0's.
    let by_hand = format!(
        "set -a; . /etc/adora/adora-daemon-h0.env; set +a; exec timeout 20 {REMOTE_ADORA} daemon \
         --machine-id h0 --coordinator-addr {} --coordinator-port {port}",
        hosts.gateway_ip()
    );
    let second = h0.ssh(&[&by_hand]);
    let stderr = &second.stderr;
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    eprintln!("a second daemon for h0, by hand:\n{stderr}");
    assert!(
        stderr.contains("machine id `h0` is taken: a daemon on h0 ("),
        "{stderr}"
    );
    assert!(stderr.contains(&h0.ip().to_string()), "{stderr}");
    assert_eq!(cli.connected(), both, "the connected daemon was kept");

    reboot_survival(&cli, dir.path(), node, h1);

    // `down` leaves the services running (and stops the coordinator); `down --services` then
    // stops them over SSH.
    let down = cli.run(&["cluster", "down", &cli.cluster.display().to_string()]);
    assert!(down.status.success(), "{down}");
    assert!(
        down.stdout
            .contains("Daemon h0 is the systemd service adora-daemon-h0.service: left running"),
        "{down}"
    );
    assert_eq!(unit_state(h0, "adora-daemon-h0.service"), "active");
    let down = cli.cluster("down", &["--services"]);
    assert!(down.status.success(), "{down}");
    for id in ["h0", "h1"] {
        let stopped = format!("(systemd service adora-daemon-{id}.service stopped)");
        assert!(down.stdout.contains(&stopped), "{down}");
    }
    for h in [h0, h1] {
        let unit = format!("adora-daemon-{}.service", h.name());
        assert_eq!(unit_state(h, &unit), "inactive", "{down}");
    }

    // `cluster uninstall` removes unit and environment file for real (through `sudo -n` on h1);
    // systemd no longer knows the unit.
    let uninstall = cli.cluster("uninstall", &["--json"]);
    assert!(uninstall.status.success(), "{uninstall}");
    assert_eq!(json_outcomes(&uninstall.stdout), both_ok(), "{uninstall}");
    for h in [h0, h1] {
        let unit = format!("adora-daemon-{}.service", h.name());
        let unit_file = h.root().join("etc/systemd/system").join(&unit);
        assert!(
            !unit_file.exists(),
            "{} is left: {uninstall}",
            unit_file.display()
        );
        let env_file = h
            .root()
            .join(format!("etc/adora/adora-daemon-{}.env", h.name()));
        assert!(
            !env_file.exists(),
            "{} is left: {uninstall}",
            env_file.display()
        );
        let load = h.ssh(&["systemctl", "show", "-p", "LoadState", "--value", &unit]);
        assert_eq!(load.stdout.trim(), "not-found", "{uninstall}");
    }
}

/// Starts a dataflow spanning both hosts, reboots `host` (the sink's), and checks that its
/// daemon comes back as a service, `cluster status` shows it lost and back, and data reaches a
/// re-spawned sink. Prints the times from the reboot to each step.
fn reboot_survival(cli: &Cli, dir: &Path, node: &Path, host: &SystemdHost) {
    let flow = dataflow(dir, node).display().to_string();
    cli.ok(&["start", &flow, "--name", "reboot", "--detach"]);
    assert!(
        wait_until(WAIT, || sink_starts(cli) == 1),
        "{}",
        cli.run(&["logs", "reboot", "sink"])
    );

    // Watch `cluster status` while the host reboots: it must show the host lost.
    let saw_lost = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let begin = Instant::now();
    let (restarted, boot, reconnected, resumed, flowing) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) && begin.elapsed() < WAIT {
                if cli.is_connected(host.name()) == Some(false) {
                    saw_lost.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        host.reboot();
        let restarted = begin.elapsed();
        let boot = host.wait_running(BOOT_WAIT);
        let unit = format!("adora-daemon-{}.service", host.name());
        assert_eq!(
            unit_state(host, &unit),
            "active",
            "the daemon is not back as a service"
        );
        let back = wait_until(WAIT, || cli.is_connected(host.name()) == Some(true));
        let reconnected = begin.elapsed();
        let resumed = back && wait_until(WAIT, || sink_starts(cli) >= 2);
        let flowing = begin.elapsed();
        done.store(true, Ordering::Relaxed);
        (restarted, boot, reconnected, resumed, flowing)
    });
    assert!(
        resumed,
        "no data after the reboot:\n{}",
        cli.run(&["logs", "reboot", "sink"])
    );
    assert!(
        saw_lost.load(Ordering::Relaxed),
        "cluster status never showed {} lost",
        host.name()
    );
    let status = cli.ok(&["cluster", "status"]);
    eprintln!(
        "reboot of {}: container restarted after {restarted:?}, systemd running {boot:?} later, \
         daemon reconnected after {reconnected:?}, flow resumed (sink re-spawned, {PROGRESS} \
         messages received) after {flowing:?}\n{}",
        host.name(),
        status.stdout
    );

    // `cluster restart` on the installed services: a new run of the dataflow, whose sink on the
    // rebooted host receives data again.
    let restart = cli.ok(&["cluster", "restart", "reboot"]);
    let new_run = restart
        .stdout
        .trim()
        .rsplit(" -> ")
        .next()
        .filter(|_| restart.stdout.starts_with("dataflow restarted: "))
        .unwrap_or_else(|| panic!("unexpected restart output: {restart}"))
        .to_owned();
    let first = format!("received={PROGRESS} ");
    assert!(
        wait_until(WAIT, || cli
            .run(&["logs", &new_run, "sink"])
            .stdout
            .contains(&first)),
        "no data in the restarted run {new_run}:\n{}",
        cli.run(&["logs", &new_run, "sink"])
    );
    cli.ok(&["stop", "reboot"]);
}
