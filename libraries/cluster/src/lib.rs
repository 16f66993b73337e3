//! `adora-cluster`: managing a fleet described by `cluster.yml` — SSH sessions to its machines
//! (the openssh crate, one multiplexed session per host), remote commands built from argument
//! lists with every value shell-quoted, and the systemd unit of a machine's daemon.

pub mod quote;
pub mod ssh;
pub mod systemd;

use adora_core::cluster::{ClusterConfig, Machine};

pub use ssh::{HostSession, RemoteOutput, SshError, SshTarget};

/// The arguments of `adora daemon` for a machine of a cluster (after the program name); the
/// same for `cluster up` and the systemd unit of `cluster install`.
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
    args.push("--quiet".to_owned());
    args
}

#[cfg(test)]
mod tests {
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
}
