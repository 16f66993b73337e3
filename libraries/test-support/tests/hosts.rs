//! The test hosts behave like machines on one network: they reach each other and the test
//! process, run a working `sshd`, can be cut off and restored, get a subnet of their own, and
//! leave nothing behind. Needs root; prints `SKIPPED: ...` otherwise.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::Path,
    process::Command,
    sync::mpsc,
    thread,
    time::Duration,
};

use adora_test_support::{
    hosts::{Host, TestHosts},
    process_alive, require_hosts, run_with_timeout, temp_dir, wait_until, ChildGuard,
};

/// How long a restored link may take to carry traffic again.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an `ip` command of the test itself may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

fn sshd_of(host: &Host) -> SocketAddrV4 {
    SocketAddrV4::new(host.ip(), 22)
}

/// Runs `cmd` inside `host`, asserting success; returns stdout.
fn run_in(host: &Host, program: &str, args: &[&str]) -> String {
    let mut cmd = host.command(program);
    cmd.args(args);
    let out = run_with_timeout(cmd, IP_TIMEOUT);
    assert!(
        out.status.success(),
        "{program} {args:?} in {}:\n{out}",
        host.name()
    );
    out.stdout
}

fn ip(args: &[&str]) -> adora_test_support::Output {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_with_timeout(cmd, IP_TIMEOUT)
}

fn namespaces_starting_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hosts_reach_each_other_and_the_test_process_but_nothing_else() {
    let hosts = require_hosts!("reach", 3);
    let gateway = TcpListener::bind((hosts.gateway_ip(), 0)).unwrap();
    let gateway_addr = SocketAddrV4::new(hosts.gateway_ip(), gateway.local_addr().unwrap().port());
    for a in hosts.hosts() {
        for b in hosts.hosts() {
            assert!(
                a.can_connect(sshd_of(b)),
                "{} cannot reach {}",
                a.name(),
                b.name()
            );
        }
        assert!(
            hosts.root_can_connect(sshd_of(a)),
            "root cannot reach {}",
            a.name()
        );
        assert!(
            a.can_connect(gateway_addr),
            "{} cannot reach the test process",
            a.name()
        );

        // Loopback is up; the only route is the fixture's subnet (no default route, no NAT).
        let lo = run_in(a, "ip", &["-o", "link", "show", "dev", "lo"]);
        assert!(lo.contains(",UP"), "lo of {} is down: {lo}", a.name());
        let routes = run_in(a, "ip", &["-4", "route", "show", "table", "all"]);
        let subnet = format!("{}/24", hosts.subnet());
        for route in routes.lines() {
            let route = route.trim();
            assert!(
                route.contains(&subnet)
                    || route.contains("127.0.0.")
                    || route.contains(&a.ip().to_string()),
                "{} has a route outside its subnet: {route}\n{routes}",
                a.name()
            );
        }
        assert!(!a.can_connect(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 22)));
    }
}

#[test]
fn ssh_into_each_host_runs_there() {
    let hosts = require_hosts!("ssh", 3);
    for (i, host) in hosts.hosts().iter().enumerate() {
        let out = hosts.ssh(i, &["hostname", "-I"]);
        assert!(out.status.success(), "ssh {}:\n{out}", host.name());
        assert_eq!(out.stdout.trim(), host.ip().to_string(), "{out}");

        let out = hosts.ssh(i, &["ip", "-4", "-o", "addr", "show"]);
        assert!(out.status.success(), "{out}");
        assert!(
            out.stdout.contains(&format!("inet {}/24", host.ip())),
            "{out}"
        );
        for other in hosts.hosts().iter().filter(|o| o.ip() != host.ip()) {
            assert!(
                !out.stdout.contains(&format!("inet {}/", other.ip())),
                "{out}"
            );
        }
        assert!(
            !out.stdout
                .contains(&format!("inet {}/", hosts.gateway_ip())),
            "{out}"
        );
    }

    // The config also matches hosts by address, as a cluster file would name them.
    let mut by_address = Command::new("ssh");
    by_address
        .arg("-F")
        .arg(hosts.ssh_config())
        .arg(hosts.host(1).ip().to_string())
        .args(["--", "echo", "ok"]);
    let out = run_with_timeout(by_address, Duration::from_secs(30));
    assert!(out.status.success() && out.stdout.trim() == "ok", "{out}");

    // Host keys are pinned, not accepted blindly: without known_hosts the connection fails.
    let mut unpinned = Command::new("ssh");
    unpinned.arg("-F").arg(hosts.ssh_config()).args([
        "-o",
        "UserKnownHostsFile=/dev/null",
        "h0",
        "--",
        "true",
    ]);
    let out = run_with_timeout(unpinned, Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "accepted an unknown host key:\n{out}"
    );
    assert!(out.stderr.contains("Host key verification failed"), "{out}");
}

#[test]
fn a_cut_host_is_unreachable_until_restored() {
    let hosts = require_hosts!("cut", 3);
    let (a, b, c) = (hosts.host(0), hosts.host(1), hosts.host(2));

    b.cut();
    assert!(!a.can_connect(sshd_of(b)), "a reaches b while b is cut");
    assert!(
        !hosts.root_can_connect(sshd_of(b)),
        "root reaches b while b is cut"
    );
    assert!(!b.can_connect(sshd_of(c)), "b reaches c while b is cut");
    assert!(a.can_connect(sshd_of(c)), "cutting b cut a from c too");
    // The host itself keeps its address: it is cut off, not reconfigured.
    assert!(
        run_in(b, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).contains(&b.ip().to_string())
    );

    b.restore();
    assert!(
        wait_until(RESTORE_TIMEOUT, || a.can_connect(sshd_of(b))),
        "a does not reach b after restore"
    );
    assert!(
        wait_until(RESTORE_TIMEOUT, || hosts.root_can_connect(sshd_of(b))),
        "the test process does not reach b after restore"
    );
    assert!(
        wait_until(RESTORE_TIMEOUT, || b.can_connect(sshd_of(c))),
        "b does not reach c after restore"
    );
    let out = hosts.ssh(1, &["echo", "back"]);
    assert!(out.status.success() && out.stdout.trim() == "back", "{out}");
}

/// What a dropped fixture must not leave behind.
struct Leftovers {
    prefix: String,
    link: String,
    pids: Vec<u32>,
}

impl Leftovers {
    fn of(hosts: &TestHosts) -> Leftovers {
        Leftovers {
            prefix: hosts.netns_prefix().to_owned(),
            link: hosts.gateway_link().to_owned(),
            pids: hosts.hosts().iter().map(Host::sshd_pid).collect(),
        }
    }

    fn assert_gone(&self) {
        assert!(self.prefix.starts_with("adora-"), "{}", self.prefix);
        assert_eq!(namespaces_starting_with(&self.prefix), Vec::<String>::new());
        let links = ip(&["-o", "link", "show"]).stdout;
        assert!(
            !links.contains(&format!(" {}@", self.link)),
            "{} is left:\n{links}",
            self.link
        );
        for pid in &self.pids {
            assert!(!process_alive(*pid), "process {pid} survived teardown");
        }
    }
}

/// Starts `sleep 1000` on host `index` over ssh, detached from the ssh session (as a daemon
/// started by `cluster up` would be); returns its pid.
fn start_detached_sleep(hosts: &TestHosts, index: usize) -> u32 {
    let out = hosts.ssh(
        index,
        &[
            "setsid",
            "sleep",
            "1000",
            "</dev/null",
            ">/dev/null",
            "2>&1",
            "&",
            "echo",
            "$!",
        ],
    );
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out}"))
}

#[test]
fn drop_kills_every_process_and_removes_namespaces_and_links() {
    let hosts = require_hosts!("drop", 2);
    let mut left = Leftovers::of(&hosts);
    // A process started over ssh that detaches from its session: only the namespace sweep
    // finds it.
    let detached = start_detached_sleep(&hosts, 0);
    // Processes started through the fixture and never stopped by the test.
    let mut cmd = hosts.host(1).command("sleep");
    cmd.arg("1000");
    let guarded = hosts.host(1).spawn(cmd, "guarded");
    let mut cmd = hosts.host(1).command("sleep");
    cmd.arg("1000");
    let mut unguarded = cmd.spawn().unwrap();
    left.pids.extend([detached, guarded.pid(), unguarded.id()]);
    for pid in &left.pids {
        assert!(process_alive(*pid), "{pid} is not running before teardown");
    }
    assert_eq!(namespaces_starting_with(&left.prefix).len(), 3); // switch + 2 hosts

    drop(hosts);
    left.assert_gone();
    drop(guarded);
    unguarded.wait().unwrap(); // reap the zombie the sweep left
}

#[test]
fn teardown_also_happens_when_the_test_panics() {
    let (tx, rx) = mpsc::channel();
    let panicked = thread::spawn(move || {
        let hosts = require_hosts!("panic", 1);
        let mut left = Leftovers::of(&hosts);
        left.pids.push(start_detached_sleep(&hosts, 0));
        tx.send(left).unwrap();
        panic!("a failing test");
    })
    .join();
    let Ok(left) = rx.try_recv() else {
        return; // skipped
    };
    assert!(panicked.is_err());
    left.assert_gone();
}

#[test]
fn parallel_fixtures_get_different_subnets_and_separate_networks() {
    let creating: Vec<_> = (0..4)
        .map(|_| thread::spawn(|| TestHosts::create("parallel", 1)))
        .collect();
    let mut fixtures = Vec::new();
    for handle in creating {
        match handle.join().unwrap() {
            Ok(hosts) => fixtures.push(hosts),
            Err(skip) => return skip.print(),
        }
    }
    let mut subnets: Vec<_> = fixtures.iter().map(TestHosts::subnet).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 4, "{subnets:?}");
    for (i, hosts) in fixtures.iter().enumerate() {
        assert!(hosts.root_can_connect(sshd_of(hosts.host(0))));
        let other = &fixtures[(i + 1) % fixtures.len()];
        assert!(
            !hosts.host(0).can_connect(sshd_of(other.host(0))),
            "a host reaches another fixture's host"
        );
    }
}

/// Deletes a namespace the test created by hand, also when the test fails.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn leftovers_of_dead_processes_are_removed_at_create_and_live_ones_kept() {
    // Only as root; the fixture itself tells.
    drop(require_hosts!("stale_probe", 1));

    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    assert!(!process_alive(dead));
    let logs = temp_dir();
    let live = ChildGuard::spawn(
        {
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            cmd
        },
        logs.path(),
        "live-owner",
    );

    let stale = NetnsGuard(format!("adora-{dead}-0-crashed-h0"));
    assert!(ip(&["netns", "add", &stale.0]).status.success());
    let mut in_stale = Command::new("ip");
    in_stale.args(["netns", "exec", &stale.0, "sleep", "1000"]);
    let in_stale = ChildGuard::spawn(in_stale, logs.path(), "in-stale");
    let stale_link = format!("ad{dead:x}s");
    let peer = format!("ad{dead:x}p");
    assert!(ip(&[
        "link",
        "add",
        "name",
        &stale_link,
        "type",
        "veth",
        "peer",
        "name",
        &peer
    ])
    .status
    .success());
    let alias = format!("adora-test-hosts pid={dead} netns=adora-{dead}-0-crashed");
    assert!(ip(&["link", "set", "dev", &stale_link, "alias", &alias])
        .status
        .success());
    let kept = NetnsGuard(format!("adora-{}-0-running-h0", live.pid()));
    assert!(ip(&["netns", "add", &kept.0]).status.success());

    let _hosts = require_hosts!("stale", 1);

    assert!(
        !Path::new("/run/netns").join(&stale.0).exists(),
        "stale namespace kept"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(in_stale.pid())),
        "the process in the stale namespace survived"
    );
    assert!(
        !ip(&["link", "show", "dev", &stale_link]).status.success(),
        "stale link kept"
    );
    assert!(
        Path::new("/run/netns").join(&kept.0).exists(),
        "deleted a live process's namespace"
    );
}

#[test]
fn kill_all_kills_a_hosts_processes_but_keeps_its_sshd() {
    let hosts = require_hosts!("kill_all", 2);
    let (a, b) = (hosts.host(0), hosts.host(1));
    let sleeper = |host: &Host, name: &str| {
        let mut cmd = host.command("sleep");
        cmd.arg("1000");
        host.spawn(cmd, name)
    };
    let mut on_a = sleeper(a, "sleep");
    let detached = start_detached_sleep(&hosts, 0);
    let on_b = sleeper(b, "sleep");

    assert!(a.kill_all() >= 2);

    assert!(
        on_a.wait_timeout(Duration::from_secs(5)).is_some(),
        "a process of a survived"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(detached)),
        "a detached process of a survived"
    );
    assert!(
        process_alive(on_b.pid()),
        "kill_all on a killed a process of b"
    );
    assert_eq!(a.pids(), vec![a.sshd_pid()]);
    let out = hosts.ssh(0, &["echo", "still", "up"]);
    assert!(
        out.status.success() && out.stdout.trim() == "still up",
        "{out}"
    );
}
