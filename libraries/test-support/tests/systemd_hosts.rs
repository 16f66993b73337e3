//! The systemd test hosts are machines: systemd is PID 1 and running, ssh works as root and
//! as the sudo user, filesystems and `/dev/shm` are their own, a reboot is real and touches
//! only its host, and nothing is left behind. Needs root and `systemd-nspawn`; prints
//! `SKIPPED: ...` otherwise.

use std::{path::Path, sync::mpsc, thread, time::Duration, time::Instant};

use adora_test_support::{
    process_alive, require_systemd_hosts,
    systemd_hosts::{SystemdHost, SUDO_USER},
};

/// How long a rebooted host may take to be `running` again (one takes ~1 s).
const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `args` as root on `host`, asserting success; returns stdout, trimmed.
fn run(host: &SystemdHost, args: &[&str]) -> String {
    let out = host.ssh(args);
    assert!(out.status.success(), "{args:?} on {}:\n{out}", host.name());
    out.stdout.trim().to_owned()
}

#[test]
fn hosts_boot_systemd_are_separate_machines_and_reboot_for_real() {
    let hosts = require_systemd_hosts!("systemd_hosts", 2);
    let (a, b) = (hosts.host(0), hosts.host(1));
    for host in hosts.hosts() {
        eprintln!("{} booted in {:.2?}", host.name(), host.first_boot());
        assert_eq!(run(host, &["cat", "/proc/1/comm"]), "systemd");
        assert_eq!(run(host, &["systemctl", "is-system-running"]), "running");
        assert_eq!(run(host, &["hostname"]), host.name());
        assert_eq!(run(host, &["hostname", "-I"]), host.ip().to_string());
        assert_eq!(
            run(
                host,
                &["systemctl", "is-active", "ssh", "dbus", "systemd-logind"]
            )
            .lines()
            .collect::<Vec<_>>(),
            ["active"; 3]
        );
        // The sudo user logs in with the same key and needs no password.
        let out = host.ssh_as(SUDO_USER, &["id", "-un", "&&", "sudo", "-n", "id", "-un"]);
        assert!(out.status.success(), "{out}");
        assert_eq!(
            out.stdout.lines().collect::<Vec<_>>(),
            [SUDO_USER, "root"],
            "{out}"
        );
    }
    // Each boot has its own machine id.
    assert_ne!(
        run(a, &["cat", "/etc/machine-id"]),
        run(b, &["cat", "/etc/machine-id"])
    );

    // Separate filesystems, separate /dev/shm.
    for path in ["/opt/written-on-h0", "/dev/shm/written-on-h0"] {
        run(a, &["touch", path]);
        assert!(a.ssh(&["test", "-e", path]).status.success());
        assert!(
            !b.ssh(&["test", "-e", path]).status.success(),
            "{path} is visible on h1"
        );
        assert!(
            !Path::new(path).exists(),
            "{path} is visible on this machine"
        );
    }
    assert!(
        a.root().join("opt/written-on-h0").exists(),
        "the overlay is h0's /"
    );

    // A real reboot of h0: a new boot id, a new container; h1 keeps running untouched.
    let (a_boot, b_boot) = (a.boot_id(), b.boot_id());
    assert_ne!(a_boot, b_boot);
    let started = Instant::now();
    a.reboot();
    let down = started.elapsed();
    a.wait_running(REBOOT_TIMEOUT);
    let rebooted = started.elapsed();
    eprintln!("h0 rebooted in {rebooted:.2?} (shut down and restarted in {down:.2?})");
    assert_ne!(a.boot_id(), a_boot, "h0 did not reboot");
    assert_eq!(a.boots(), 2);
    assert_eq!(b.boot_id(), b_boot, "h1 rebooted too");
    assert_eq!(b.boots(), 1);
    // The disk survives the reboot; /dev/shm does not.
    assert!(a
        .ssh(&["test", "-e", "/opt/written-on-h0"])
        .status
        .success());
    assert!(!a
        .ssh(&["test", "-e", "/dev/shm/written-on-h0"])
        .status
        .success());
    assert_eq!(run(a, &["cat", "/proc/1/comm"]), "systemd");
    eprintln!("test body done after {:.2?}", started.elapsed());
    let dropping = Instant::now();
    drop(hosts);
    eprintln!("teardown took {:.2?}", dropping.elapsed());
}

/// What a dropped fixture must not leave behind.
struct Leftovers {
    netns: Vec<String>,
    machines: Vec<String>,
    roots: Vec<String>,
    dir: std::path::PathBuf,
    init_pids: Vec<u32>,
}

impl Leftovers {
    fn assert_gone(&self) {
        for ns in &self.netns {
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "namespace {ns} is left"
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for root in &self.roots {
            assert!(!mounts.contains(root.as_str()), "{root} is still mounted");
        }
        assert!(!self.dir.exists(), "{} is left", self.dir.display());
        for pid in &self.init_pids {
            assert!(!process_alive(*pid), "the container init {pid} survived");
        }
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            for machine in &self.machines {
                assert!(
                    !cmdline.contains(&format!("--machine={machine}")),
                    "a process of {machine} survived: {cmdline}"
                );
            }
        }
    }
}

#[test]
fn teardown_removes_containers_mounts_and_namespaces_also_on_panic() {
    let (tx, rx) = mpsc::channel();
    let panicked = thread::spawn(move || {
        let hosts = require_systemd_hosts!("systemd_teardown", 1);
        let host = hosts.host(0);
        // The host's init, seen from here: the pid of `systemd` in the host's namespace.
        let init: u32 = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                let host_ns = std::fs::metadata(Path::new("/run/netns").join(host.netns())).ok();
                comm.trim() == "systemd"
                    && ns.is_some()
                    && host_ns.is_some_and(|m| {
                        use std::os::unix::fs::MetadataExt;
                        ns.unwrap().to_string_lossy().contains(&m.ino().to_string())
                    })
            })
            .expect("the host's systemd");
        tx.send(Leftovers {
            netns: vec![host.netns().to_owned()],
            machines: vec![host.machine().to_owned()],
            roots: vec![host.root().display().to_string()],
            dir: hosts.dir().to_owned(),
            init_pids: vec![init],
        })
        .unwrap();
        panic!("a failing test");
    })
    .join();
    let Ok(left) = rx.try_recv() else {
        return; // skipped
    };
    assert!(panicked.is_err());
    left.assert_gone();
}
