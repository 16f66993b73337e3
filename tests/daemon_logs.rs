//! `adora logs --daemon MACHINE` on a host that boots a real systemd
//! (`adora_test_support::systemd_hosts`): the daemon's own log read through the coordinator,
//! from its log file after `cluster up` and from journald after `cluster install`.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use adora_test_support::{bin, require_systemd_hosts, temp_dir};
use adora_test_support::{wait_until, MarkedCli};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a condition to become true (a followed line to arrive, say).
const WAIT: Duration = Duration::from_secs(60);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_DAEMON_LOGS_TEST";
/// Where the host has `adora`.
const REMOTE_ADORA: &str = "/usr/local/bin/adora";
/// The first line of a daemon's output.
const STARTING: &str = "daemon `h0` connecting to the coordinator at";
/// What a daemon logs when asked for its own log.
const READING_OWN_LOG: &str = "sending this daemon's own log to the coordinator";
/// The line a daemon logs when it registers.
const REGISTERED: &str = "registered with the coordinator";

/// The test's CLI; brings the cluster down (services included) when the test fails half-way.
struct Cli {
    cli: MarkedCli,
    cluster: String,
    ssh_config: String,
}

impl Cli {
    /// `adora cluster <sub> cluster.yml --ssh-config <hosts' config> <extra>`.
    fn cluster(&self, sub: &str, extra: &[&str]) -> adora_test_support::Output {
        let mut args = vec![
            "cluster",
            sub,
            &self.cluster,
            "--ssh-config",
            &self.ssh_config,
        ];
        args.extend_from_slice(extra);
        self.cli.run(&args)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if !self.cli.leftovers().is_empty() {
            let _ = self.cluster("down", &["--services"]);
        }
    }
}

/// Lines containing [`REGISTERED`].
fn registrations(out: &str) -> usize {
    out.lines().filter(|l| l.contains(REGISTERED)).count()
}

#[test]
fn a_daemons_own_log_is_read_through_the_coordinator() {
    let hosts = require_systemd_hosts!("daemon_logs", 1);
    let dir = temp_dir();
    let port = hosts.free_gateway_port();
    let h0 = hosts.host(0);
    h0.put_file(&bin("adora"), Path::new(REMOTE_ADORA));
    let cluster: PathBuf = dir.path().join("cluster.yml");
    let yaml = format!(
        "coordinator: {{ addr: {}, port: {port} }}\nmachines:\n  \
         - {{ id: h0, host: h0, user: root, state_dir: /var/lib/adora }}\n",
        hosts.gateway_ip()
    );
    std::fs::write(&cluster, yaml).unwrap();
    let cli = Cli {
        cli: MarkedCli::new(&dir.path().join("local"), MARKER, TIMEOUT),
        cluster: cluster.display().to_string(),
        ssh_config: hosts.ssh_config().display().to_string(),
    };

    // An ad-hoc daemon (`cluster up`): its log file, <state_dir>/daemon.log.
    let up = cli.cluster("up", &[]);
    assert!(up.status.success(), "{up}");
    let logs = cli.cli.run(&["logs", "--daemon", "h0", "--tail", "20"]);
    assert!(logs.status.success(), "{logs}");
    assert!(logs.stdout.contains(STARTING), "{logs}");
    assert!(logs.stdout.lines().count() <= 20, "{logs}");

    // A daemon of `cluster install`: its unit's journal.
    let install = cli.cluster("install", &[]);
    assert!(install.status.success(), "{install}");
    // Info lines (the registration, each reading of the log) as a user would turn them on.
    let env = h0.root().join("etc/adora/adora-daemon-h0.env");
    let mut vars = std::fs::read_to_string(&env).unwrap();
    vars.push_str("\nRUST_LOG=info\n");
    std::fs::write(&env, vars).unwrap();
    let restart = h0.ssh(&["systemctl", "restart", "adora-daemon-h0.service"]);
    assert!(restart.status.success(), "{restart}");
    let journal = || cli.cli.run(&["logs", "--daemon", "h0", "--tail", "20"]);
    assert!(
        wait_until(WAIT, || registrations(&journal().stdout) >= 1),
        "{}",
        journal()
    );
    let logs = journal();
    eprintln!(
        "adora logs --daemon h0 --tail 20 (journald):\n{}",
        logs.stdout
    );
    assert!(logs.stdout.lines().count() <= 20, "{logs}");

    // An unknown machine: a clear error, exit non-zero.
    let unknown = cli.cli.run(&["logs", "--daemon", "nope"]);
    assert!(!unknown.status.success(), "{unknown}");
    assert!(
        unknown
            .stderr
            .contains("daemon `nope` is unknown (known daemons: h0)"),
        "{unknown}"
    );

    follow_sees_new_lines(&cli);
    // The follower is gone: the next line relayed for it stops the daemon's journalctl.
    let journalctl = || {
        h0.ssh(&["grep -lx journalctl /proc/[0-9]*/comm"])
            .status
            .success()
    };
    assert!(
        wait_until(WAIT, || {
            cli.cli.run(&["logs", "--daemon", "h0", "--tail", "1"]);
            !journalctl()
        }),
        "a journalctl --follow still runs on h0 after its client went away"
    );

    let down = cli.cluster("down", &["--services"]);
    assert!(down.status.success(), "{down}");
}

/// `--follow` prints new lines: each reading of the daemon's log is itself logged by the
/// daemon, so a second `logs --daemon` shows up in the first one's stream.
fn follow_sees_new_lines(cli: &Cli) {
    let mut follow = cli
        .cli
        .cmd(&["logs", "--daemon", "h0", "--tail", "0", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let begin = Instant::now();
    let mut seen = Vec::new();
    // Repeated: the first reading may come before the follower's journalctl runs.
    while begin.elapsed() < WAIT && !seen.iter().any(|l: &String| l.contains("follow: false")) {
        let other = cli.cli.run(&["logs", "--daemon", "h0", "--tail", "1"]);
        assert!(other.status.success(), "{other}");
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            seen.push(line);
        }
    }
    eprintln!(
        "adora logs --daemon h0 --follow printed after {:?}:\n{}",
        begin.elapsed(),
        seen.join("\n")
    );
    let _ = follow.kill();
    let _ = follow.wait();
    reader.join().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains(READING_OWN_LOG) && l.contains("follow: false")),
        "--follow did not print the later reading: {seen:?}"
    );
}
