//! The fleet from CI, as users script it (issue 15, section 5): a `set -e` script run by `bash`
//! without a terminal against two systemd test hosts must pass as written:
//!
//! ```sh
//! set -e
//! adora cluster install cluster.yml
//! adora cluster upgrade cluster.yml
//! adora start test-dataflow.yml --name integration-test --attach
//! adora cluster status
//! adora top
//! adora stop integration-test
//! ```
//!
//! Before the script, as a CI runner would have it: the coordinator runs on this machine (the
//! bridge's gateway address), `adora` is in each host's `/usr/local/bin` (the image), and `ssh`
//! knows the hosts (an `ssh` on the script's `PATH` adding the fixture's config, as the runner's
//! `~/.ssh/config` would). The dataflow's nodes reach the hosts with `distribute: scp`.
//! After it: the daemons are systemd services, and `cluster status --json` carries each
//! machine's heartbeat telemetry. Needs root and `systemd-nspawn`; prints `SKIPPED: ...`
//! otherwise (fails with `ADORA_REQUIRE_TEST_HOSTS=1`).

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use adora_test_support::{
    bin, require_systemd_hosts, run_with_timeout, systemd_hosts::SystemdHosts, temp_dir,
    wait_until, ChildGuard, Output,
};

/// The script of the issue, byte for byte.
const SCRIPT: &str = "set -e
adora cluster install cluster.yml
adora cluster upgrade cluster.yml
adora start test-dataflow.yml --name integration-test --attach
adora cluster status
adora top
adora stop integration-test
";

/// Upper bound of the whole script (two 280 MB debug binaries are copied by the upgrade).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound of one command run after the script.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the coordinator has to write its address file.
const COORDINATOR_START: Duration = Duration::from_secs(15);
/// Messages the producer sends before the dataflow ends on its own.
const MESSAGES: u32 = 50;

/// The two machines' cluster.yml: root over SSH, `adora` in `/usr/local/bin`.
fn cluster_yml(hosts: &SystemdHosts, port: u16) -> String {
    let mut yml = format!(
        "coordinator: {{ addr: {}, port: {port} }}\nmachines:\n",
        hosts.gateway_ip()
    );
    for h in hosts.hosts() {
        yml.push_str(&format!(
            "  - {{ id: {name}, host: {name}, user: root, install_dir: /usr/local/bin, \
             state_dir: /var/lib/adora }}\n",
            name = h.name()
        ));
    }
    yml
}

/// producer and square on h0, checker on h1; every binary copied with `distribute: scp`.
fn dataflow_yml() -> String {
    let bin = |name: &str| bin(name).display().to_string();
    format!(
        "nodes:
  - id: producer
    path: {sender}
    inputs: {{ tick: adora/timer/millis/10 }}
    outputs: [counter]
    env: {{ MESSAGES: {MESSAGES} }}
    _unstable_deploy: {{ machine: h0, distribute: scp }}
  - id: square
    path: {transformer}
    inputs: {{ counter: producer/counter }}
    outputs: [squared]
    _unstable_deploy: {{ machine: h0, distribute: scp }}
  - id: checker
    path: {sink}
    inputs: {{ squared: {{ source: square/squared, queue_size: 100 }} }}
    _unstable_deploy: {{ machine: h1, distribute: scp }}
",
        sender = bin("rust-dataflow-sender"),
        transformer = bin("rust-dataflow-transformer"),
        sink = bin("rust-dataflow-sink"),
    )
}

/// A directory for `PATH` with `adora` (this build) and an `ssh` that uses the hosts' config.
fn script_bin(dir: &Path, hosts: &SystemdHosts) -> std::path::PathBuf {
    let path = dir.join("bin");
    std::fs::create_dir_all(&path).unwrap();
    std::os::unix::fs::symlink(bin("adora"), path.join("adora")).unwrap();
    let ssh = Command::new("sh")
        .args(["-c", "command -v ssh"])
        .output()
        .unwrap();
    let ssh = String::from_utf8(ssh.stdout).unwrap();
    let wrapper = path.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' -F '{}' \"$@\"\n",
            ssh.trim(),
            hosts.ssh_config().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `cmd` with the script's environment: the local state dir, `bin` first on `PATH`, no colour.
fn with_env(mut cmd: Command, dir: &Path, bin: &Path) -> Command {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    cmd.current_dir(dir)
        .env("PATH", path)
        .env("ADORA_STATE_DIR", dir.join("local"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("ADORA_TOKEN");
    cmd
}

#[test]
fn the_ci_script_passes_as_written_without_a_terminal() {
    let hosts = require_systemd_hosts!("fleet_ci", 2);
    let dir = temp_dir();
    let bin_path = script_bin(dir.path(), &hosts);
    // The image: adora installed on every host.
    for h in hosts.hosts() {
        h.put_file(&bin("adora"), std::path::Path::new("/usr/local/bin/adora"));
    }
    let port = hosts.free_gateway_port();
    std::fs::write(dir.path().join("cluster.yml"), cluster_yml(&hosts, port)).unwrap();
    std::fs::write(dir.path().join("test-dataflow.yml"), dataflow_yml()).unwrap();
    let coordinator = Command::new(bin("adora"));
    let mut coordinator = with_env(coordinator, dir.path(), &bin_path);
    coordinator.args([
        "coordinator",
        "--addr",
        &hosts.gateway_ip().to_string(),
        "--port",
        &port.to_string(),
    ]);
    let _coordinator = ChildGuard::spawn(coordinator, dir.path(), "coordinator");
    assert!(
        wait_until(COORDINATOR_START, || dir
            .path()
            .join("local/coordinator.addr")
            .exists()),
        "the coordinator did not start"
    );

    let started = Instant::now();
    let mut bash = Command::new("bash");
    bash.args(["-c", SCRIPT]);
    let out = run_with_timeout(with_env(bash, dir.path(), &bin_path), SCRIPT_TIMEOUT);
    eprintln!("the script took {:.1?}", started.elapsed());
    eprintln!("{out}");
    assert!(out.status.success(), "the CI script failed:\n{out}");
    check_script_output(&out);

    // The daemons are systemd services on their hosts.
    for h in hosts.hosts() {
        let unit = format!("adora-daemon-{}", h.name());
        let active = h.ssh(&["systemctl", "is-active", &unit]);
        assert_eq!(
            active.stdout.trim(),
            "active",
            "{unit} on {}:\n{active}",
            h.name()
        );
    }
    // `scp` put the checker's binary on h1 only, under the machine's state dir.
    let copies = |h: usize| {
        hosts.host(h).ssh(&[
            "find",
            "/var/lib/adora/dataflows",
            "-name",
            "rust-dataflow-sink",
            "-type",
            "f",
        ])
    };
    let sink_copy = copies(1).stdout.trim().to_owned();
    assert!(
        !sink_copy.is_empty() && !sink_copy.contains('\n'),
        "{sink_copy}"
    );
    assert!(copies(0).stdout.trim().is_empty(), "{}", copies(0));

    check_telemetry(&hosts, dir.path(), &bin_path);
    a_corrupted_copy_is_refused(&hosts, &sink_copy, dir.path(), &bin_path);
}

/// Section 6: the copy of `checker` on h1 changes after the copy; `adora restart` (which reuses
/// the stored artifacts) fails naming the node, its machine and the checksum, and starts nothing.
fn a_corrupted_copy_is_refused(hosts: &SystemdHosts, copy: &str, dir: &Path, bin_path: &Path) {
    let h1 = hosts.host(1);
    let out = h1.ssh(&[
        "printf",
        "corrupt",
        "|",
        "dd",
        &format!("of={copy}"),
        "bs=1",
        "seek=4096",
        "conv=notrunc",
        "status=none",
    ]);
    assert!(out.status.success(), "{out}");
    let mut restart = Command::new(bin("adora"));
    restart.args(["restart", "integration-test"]);
    let out = run_with_timeout(with_env(restart, dir, bin_path), COMMAND_TIMEOUT);
    eprintln!("restart after corrupting {copy} on h1:\n{out}");
    assert!(
        !out.status.success(),
        "a corrupted copy was started:\n{out}"
    );
    let all = out.all();
    for needle in [
        "node `checker`",
        "machine `h1`",
        "distribute: scp",
        "checksum mismatch",
    ] {
        assert!(all.contains(needle), "missing {needle:?}:\n{out}");
    }
    let mut list = Command::new(bin("adora"));
    list.args(["list"]);
    let list = run_with_timeout(with_env(list, dir, bin_path), COMMAND_TIMEOUT);
    assert!(!list.stdout.contains("running"), "{list}");
}

/// What each command of the script said.
fn check_script_output(out: &Output) {
    let all = out.all();
    for h in ["h0", "h1"] {
        assert!(all.contains(h), "no word about machine {h}:\n{all}");
    }
    assert!(
        all.contains(&format!("sink done: {MESSAGES} messages received in order")),
        "the checker did not receive every message:\n{all}"
    );
    assert!(
        all.contains("dataflow `integration-test`") && all.contains("finished successfully"),
        "{all}"
    );
    // `cluster status`: both daemons with their machine's figures.
    assert!(all.contains("Debian GNU/Linux 12 (bookworm)"), "{all}");
    assert!(all.contains(std::env::consts::ARCH), "{all}");
    // `top` without a terminal: one snapshot; nothing runs any more.
    assert!(all.contains("no terminal, printing one snapshot"), "{all}");
    assert!(all.contains("no running dataflows"), "{all}");
    // `stop` of the finished dataflow: a success that says so.
    assert!(all.contains("already finished; nothing to stop"), "{all}");
}

/// `cluster status --json` carries every machine's heartbeat telemetry.
fn check_telemetry(hosts: &SystemdHosts, dir: &Path, bin_path: &Path) {
    let mut status = Command::new(bin("adora"));
    status.args(["cluster", "status", "--json"]);
    let out = run_with_timeout(with_env(status, dir, bin_path), COMMAND_TIMEOUT);
    assert!(out.status.success(), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["warnings"], serde_json::json!([]), "{json:#}");
    let daemons = json["daemons"].as_array().unwrap();
    assert_eq!(daemons.len(), hosts.hosts().len(), "{json:#}");
    for d in daemons {
        let m = &d["machine"];
        assert_eq!(d["connected"], true, "{d:#}");
        assert_eq!(m["adora_version"], json["adora_version"], "{d:#}");
        assert_eq!(m["os"], "Debian GNU/Linux 12 (bookworm)", "{d:#}");
        assert_eq!(m["arch"], std::env::consts::ARCH, "{d:#}");
        assert!(!m["kernel"].as_str().unwrap().is_empty(), "{d:#}");
        assert_eq!(m["load"].as_array().map(Vec::len), Some(3), "{d:#}");
        let total = m["memory_total_bytes"].as_u64().unwrap();
        let available = m["memory_available_bytes"].as_u64().unwrap();
        assert!(available > 0 && available <= total, "{d:#}");
        assert!(m["disk_free_bytes"].as_u64().unwrap() > 0, "{d:#}");
        assert!(m["uptime_secs"].as_u64().is_some(), "{d:#}");
    }
}
