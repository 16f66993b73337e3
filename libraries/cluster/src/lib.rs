//! `adora-cluster`: managing a fleet described by `cluster.yml` — SSH sessions to its machines
//! (the openssh crate, one multiplexed session per host), remote commands built from argument
//! lists with every value shell-quoted, the systemd unit of a machine's daemon with the scripts that
//! install and remove it, and the rolling upgrade: its state machine ([`rollout`]) and its
//! remote scripts ([`upgrade`]).

pub mod install;
pub mod installed;
pub mod quote;
pub mod rollout;
pub mod ssh;
pub mod systemd;
pub mod upgrade;

#[cfg(test)]
pub(crate) mod test_shell;

use adora_core::cluster::{ClusterConfig, Machine};

pub use installed::NotInstalled;
pub use ssh::{HostSession, RemoteOutput, SshError, SshTarget};

/// `argv` run as root: unchanged for `root`, else behind `sudo -n` (never prompts: SSH runs in
/// batch mode, so the user needs passwordless sudo). The prefix is argument words, so nothing of
/// `argv` is ever re-parsed by a shell.
pub fn as_root<S: AsRef<str>>(ssh_user: &str, argv: &[S]) -> Vec<String> {
    let mut words = Vec::with_capacity(argv.len() + 2);
    if ssh_user != "root" {
        words.push("sudo".to_owned());
        words.push("-n".to_owned());
    }
    words.extend(argv.iter().map(|w| w.as_ref().to_owned()));
    words
}

/// The arguments of `adora daemon` for a machine of a cluster (after the program name), its
/// thresholds included (`--min-disk-free` in bytes); the same for `cluster up` and the systemd
/// unit of `cluster install`.
pub fn daemon_args(cluster: &ClusterConfig, machine: &Machine) -> Vec<String> {
    let mut args = vec![
        "daemon".to_owned(),
        "--machine-id".to_owned(),
        machine.id.clone(),
        "--coordinator-addr".to_owned(),
        cluster.coordinator.addr.clone(),
        "--coordinator-port".to_owned(),
        cluster.coordinator.port.to_string(),
    ];
    if let Some(labels) = machine.labels_arg() {
        args.push("--labels".to_owned());
        args.push(labels);
    }
    let limits = machine.limits();
    let flags = [
        ("--max-cpu-percent", limits.max_cpu_percent.map(u64::from)),
        (
            "--max-memory-percent",
            limits.max_memory_percent.map(u64::from),
        ),
        ("--min-disk-free", limits.min_disk_free),
    ];
    for (flag, value) in flags {
        if let Some(value) = value {
            args.push(flag.to_owned());
            args.push(value.to_string());
        }
    }
    if let Some((site, at)) = cluster.site_of(&machine.id) {
        if let Some(router) = router_addr(cluster, at) {
            args.extend(["--site".to_owned(), site.to_owned()]);
            args.extend(["--zenoh-router".to_owned(), router]);
        }
    }
    args.push("--quiet".to_owned());
    args
}

/// A site's router as `HOST:PORT` (`[v6]:PORT` for an IPv6 address).
fn router_addr(cluster: &ClusterConfig, site: &adora_core::cluster::Site) -> Option<String> {
    cluster
        .router_endpoint(site, "x")
        .map(|e| e.trim_start_matches("x/").to_owned())
}

/// The arguments of `adora` for the router of `site` (`cluster.yml` `sites:`): listen on the
/// site's router port on every interface, connect to the other sites' routers.
pub fn router_args(cluster: &ClusterConfig, site: &str) -> Option<Vec<String>> {
    let at = cluster.sites.get(site)?;
    let mut args = vec![
        "router".to_owned(),
        "--machine-id".to_owned(),
        at.router.machine.clone(),
        "--site".to_owned(),
        site.to_owned(),
        "--listen".to_owned(),
        format!("tcp/0.0.0.0:{}", at.router.port),
        "--coordinator-addr".to_owned(),
        cluster.coordinator.addr.clone(),
        "--coordinator-port".to_owned(),
        cluster.coordinator.port.to_string(),
    ];
    for (name, other) in &cluster.sites {
        if name != site {
            if let Some(addr) = router_addr(cluster, other) {
                args.extend(["--connect".to_owned(), addr]);
            }
        }
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    #[test]
    fn site_daemons_name_their_router_and_routers_each_other() {
        let cluster = adora_core::cluster::ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: robot, host: 10.1.0.2 }\n  - { id: gw, host: 10.1.0.1 }\n  - { id: gpu, host: 10.2.0.2 }\nsites:\n  lab: { machines: [robot], router: { machine: gw } }\n  cloud: { machines: [gpu], router: { machine: gpu, port: 7500 } }\n",
            std::path::Path::new("cluster.yml"),
        )
        .expect("valid");
        let robot = cluster.machine("robot").expect("robot");
        let args = super::daemon_args(&cluster, robot).join(" ");
        assert!(
            args.contains("--site lab --zenoh-router 10.1.0.1:7448"),
            "{args}"
        );
        let router = super::router_args(&cluster, "lab").expect("lab").join(" ");
        assert_eq!(
            router,
            "router --machine-id gw --site lab --listen tcp/0.0.0.0:7448 --coordinator-addr 10.0.0.1 --coordinator-port 6013 --connect 10.2.0.2:7500"
        );
        assert!(super::router_args(&cluster, "nowhere").is_none());
    }

    use std::path::Path;

    use super::*;

    #[test]
    fn daemon_args_carry_id_coordinator_and_labels() {
        let c = ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1, port: 7000 }\nmachines:\n  - { id: robot, host: h, labels: { arch: arm64, gpu: 'true' } }\n  - { id: plain, host: h2 }\n",
            Path::new("c.yml"),
        )
        .expect("valid");
        assert_eq!(
            daemon_args(&c, &c.machines[0]).join(" "),
            "daemon --machine-id robot --coordinator-addr 10.0.0.1 --coordinator-port 7000 --labels arch=arm64,gpu=true --quiet"
        );
        assert!(!daemon_args(&c, &c.machines[1]).contains(&"--labels".to_owned()));
    }

    #[test]
    fn thresholds_reach_the_daemon_and_its_unit() {
        let c = ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: robot, host: h, max_cpu_percent: 90, max_memory_percent: 85, min_disk_free: 5GiB }\n  - { id: plain, host: h2 }\n",
            Path::new("c.yml"),
        )
        .expect("valid");
        let args = daemon_args(&c, &c.machines[0]);
        assert_eq!(
            args.join(" "),
            "daemon --machine-id robot --coordinator-addr 10.0.0.1 --coordinator-port 6013 \
             --max-cpu-percent 90 --max-memory-percent 85 --min-disk-free 5368709120 --quiet"
        );
        assert!(!daemon_args(&c, &c.machines[1])
            .iter()
            .any(|a| a.starts_with("--max") || a.starts_with("--min")));
        let unit = systemd::DaemonUnit {
            machine_id: "robot",
            adora_path: "/usr/local/bin/adora",
            args: &args,
            user: None,
            state_dir: None,
        }
        .render()
        .expect("renders");
        assert!(
            unit.lines().any(|l| l
                .starts_with("ExecStart=/usr/local/bin/adora daemon --machine-id robot")
                && l.contains(
                    " --max-cpu-percent 90 --max-memory-percent 85 --min-disk-free 5368709120 "
                )),
            "{unit}"
        );
    }

    #[test]
    fn as_root_prefixes_sudo_only_for_other_users() {
        assert_eq!(as_root("root", &["sh", "-c", "x"]), ["sh", "-c", "x"]);
        assert_eq!(
            as_root("ubuntu", &["sh", "-c", "a; b"]),
            ["sudo", "-n", "sh", "-c", "a; b"]
        );
    }
}
