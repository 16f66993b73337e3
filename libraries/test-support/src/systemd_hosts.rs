//! Test hosts that boot a real systemd: Debian bookworm containers started with
//! `systemd-nspawn --boot`, one per network namespace on the [`hosts`](crate::hosts) bridge, for
//! fleet tests that need `systemctl`, `journalctl` and reboots to be real (`adora cluster
//! install`/`upgrade`/`restart`).
//!
//! ```no_run
//! use adora_test_support::{require_systemd_hosts, systemd_hosts::{SystemdHosts, SUDO_USER}};
//! use std::time::Duration;
//!
//! # fn example() {
//! // Skips the test (printing `SKIPPED: <why>`) when the hosts cannot be created; fails it
//! // instead when ADORA_REQUIRE_TEST_HOSTS=1 (CI). Returns once every host is booted.
//! let hosts: SystemdHosts = require_systemd_hosts!("my_test", 2);
//! let h0 = hosts.host(0);
//! // Real ssh with pinned host keys, as root or as the passwordless-sudo user
//! // (`ssh -F <hosts.ssh_config()> [-l adora] h0 ...` works too).
//! assert!(h0.ssh(&["systemctl", "is-active", "ssh"]).status.success());
//! assert!(h0.ssh_as(SUDO_USER, &["sudo", "-n", "true"]).status.success());
//! // A real reboot: systemd shuts down, the container starts again with a new boot id.
//! let before = h0.boot_id();
//! h0.reboot();
//! h0.wait_running(Duration::from_secs(60));
//! assert_ne!(h0.boot_id(), before);
//! # }
//! ```
//!
//! # What a host is
//!
//! Host `i` is named `h<i>` (its hostname and its alias in [`SystemdHosts::ssh_config`]) and
//! has the address `10.x.y.(10+i)` in the network namespace `<tag>-h<i>` that the namespace
//! hosts create, with the same bridge, subnet choice and gateway `10.x.y.1` for the test
//! process (see [`hosts`](crate::hosts)). Inside, `systemd` is PID 1 and brings up
//! `systemd-journald`, `dbus`, `systemd-logind` and `ssh.service`; `root` and [`SUDO_USER`]
//! (passwordless `sudo`) accept the fixture's key. Each host has its own filesystem (an overlay
//! whose upper layer survives reboots), its own `/dev`, `/dev/shm` and IPC namespace, its own
//! PID namespace, and a new machine id and boot id at every boot. `/etc/hosts` names every
//! host of the fixture.
//!
//! # Layout
//!
//! ```text
//! <target>/test-hosts/rootfs-<key>.tar.zst   the rootfs, built once (see below)
//! <target>/test-hosts/rootfs-<key>/          the tarball unpacked once: every host's lower layer
//! <tmp>/adora-systemd-hosts-<pid>-XXXXXX/
//!   h<i>/upper, work, root                   the host's overlay (mounted on root/)
//!   h<i>/console.log                         systemd-nspawn's and the console's output
//!   h<i>/boots                               the boot loop's log (`start`, `exit <code>`)
//!   cgroup2/                                 a cgroup2 mount, when the machine has none
//!   id_ed25519, known_hosts, ssh_config      the ssh client's files
//! <own cgroup>/adora-<pid>-<seq>-<test>-h<i>/  the host's boot loop, systemd-nspawn, container
//! ```
//!
//! The rootfs is `debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,
//! openssh-server,iproute2,sudo bookworm` from the Debian mirror this machine's apt sources
//! name, with an empty `/etc/machine-id`, no ssh host keys, the sudo user, apt's timers masked
//! and an empty `/dev`. It is packed as a zstd tarball in the cargo target directory (CI keeps
//! it with its target dir), keyed on the package list, and built under a file lock when
//! missing, so parallel tests build it once; the unpacked tree beside it is made the same way.
//! Delete `<target>/test-hosts` to rebuild both; trees of older keys are not removed.
//!
//! A host runs as `bash` (the boot loop) → `systemd-nspawn --boot --register=no --keep-unit
//! --network-namespace-path=/run/netns/<ns> ...`; `systemctl reboot` inside makes
//! `systemd-nspawn` exit with 133 and the loop starts it again. `--register=no` and
//! `--keep-unit` because this machine's PID 1 need not be systemd: there may be no host D-Bus,
//! no machined and no unit to keep. `systemd-nspawn` then makes `supervisor` and `payload`
//! cgroups beside itself, placed by its cgroup v2 path (also on a host with v1 controllers), so
//! the loop first moves itself into a cgroup of its own in the v2 hierarchy (mounted by the
//! fixture when the machine has none) and in the v1 `name=systemd` one when there is one;
//! otherwise two hosts would share one `payload` and the second would not boot.
//!
//! # Teardown
//!
//! Dropping [`SystemdHosts`] (also while a test panics) kills each boot loop, then every process
//! in its cgroup trees (`systemd-nspawn` and the container's init, which takes its whole PID
//! namespace along), removes the cgroups and nspawn's propagation directory, unmounts the
//! overlay, then removes the namespaces (as the namespace hosts do), unmounts the cgroup2 mount
//! and removes the fixture directory. [`SystemdHosts::create`] first removes what crashed runs
//! left: container cgroups (killing what runs in them), propagation directories, overlay mounts
//! and fixture directories whose creator pid is gone (and, through the namespace hosts, their
//! namespaces and links).
//!
//! # Requirements and times
//!
//! Root, cgroups under `/sys/fs/cgroup` (v2, or v1 with a `name=systemd` hierarchy and a
//! kernel that can mount cgroup2), overlayfs with an upper layer on the temp directory's
//! filesystem, `systemd-nspawn` (systemd-container), `debootstrap` (only to build the rootfs),
//! `tar` and `zstd`, `ip` (iproute2), `ssh` and `ssh-keygen` (openssh-client), `mount`,
//! `chroot`, `bash`, `timeout`; `.ci/run` installs them. Measured on the 2-core machine this
//! was written on (Debian bookworm, kernel 6.18, systemd 252 outside and inside): building the
//! rootfs 1 min 35 s to 2 min (a 60 MB tarball of a 180 MB tree; unpacking it 1.3 s idle, 8 to
//! 12 s under a load of 10), each host booted to `running` 1.4 to 2.5 s after its
//! `systemd-nspawn` started (2 hosts booting together), a reboot to `running` 1.9 to 2.2 s
//! (0.7 to 0.9 s of it shutting down), teardown of 2 hosts ~1.5 s.

mod container;
mod host;
mod provision;
mod rootfs;

use host::SshClient;
pub use host::SystemdHost;

use std::{
    net::Ipv4Addr,
    ops::Index,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use container::{Cgroups, Container, ContainerParams, Overlay};
use provision::{etc_hosts, Provision};

use crate::{
    hosts::{effective_uid, find_program, net, required_or_skipped, ssh, Skip},
    run_with_timeout, Output,
};

/// The non-root user on every host, with passwordless `sudo` and the fixture's key.
pub const SUDO_USER: &str = "adora";

/// The most hosts one fixture can have.
pub const MAX_HOSTS: usize = 32;

/// How long [`SystemdHosts::create`] waits for each host to boot (one takes ~1 s).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`SystemdHost::reboot`] waits for the container to shut down and start again.
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`SystemdHost::ssh`] waits for the remote command before failing the test.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The process timeout of one poll over ssh (a connection made while the host shuts down can
/// hang past `ConnectTimeout`).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two polls of a host that is not up yet.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Creates systemd test hosts or skips the test: `let hosts = require_systemd_hosts!("name", 2);`.
///
/// Like [`require_hosts!`](crate::require_hosts): prints `SKIPPED: <reason>` and returns from
/// the test when the hosts cannot be created (a third argument is the value to return), and
/// fails instead with `ADORA_REQUIRE_TEST_HOSTS=1`.
#[macro_export]
macro_rules! require_systemd_hosts {
    ($name:expr, $n:expr) => {
        $crate::require_systemd_hosts!($name, $n, ())
    };
    ($name:expr, $n:expr, $skipped:expr) => {
        match $crate::systemd_hosts::SystemdHosts::create($name, $n) {
            Ok(hosts) => hosts,
            Err(skip) => {
                skip.print();
                return $skipped;
            }
        }
    };
}

/// Absolute paths of the tools the fixture runs itself (others are found through `PATH`).
struct Tools {
    ip: PathBuf,
    ssh: PathBuf,
    ssh_keygen: PathBuf,
    nspawn: PathBuf,
    chroot: PathBuf,
}

impl Tools {
    /// Checks the capabilities the fixture needs; the first one missing is the skip reason.
    fn find() -> Result<Tools, Skip> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => {
                return Err(Skip(format!(
                    "systemd test hosts need root (euid is {uid})"
                )))
            }
            None => return Err(Skip("systemd test hosts need Linux".into())),
        }
        let find = |name: &str, package: &str| {
            find_program(name)
                .ok_or_else(|| Skip(format!("`{name}` is not installed (package {package})")))
        };
        for (name, package) in [
            ("tar", "tar"),
            ("zstd", "zstd"),
            ("mount", "mount"),
            ("umount", "mount"),
            ("bash", "bash"),
            ("timeout", "coreutils"),
        ] {
            find(name, package)?;
        }
        Ok(Tools {
            ip: find("ip", "iproute2")?,
            ssh: find("ssh", "openssh-client")?,
            ssh_keygen: find("ssh-keygen", "openssh-client")?,
            nspawn: find("systemd-nspawn", "systemd-container")?,
            chroot: find("chroot", "coreutils")?,
        })
    }
}

/// N booted systemd hosts on one bridge; everything is torn down on drop. See the
/// [module docs](self).
pub struct SystemdHosts {
    // Field order is drop order: containers (processes, cgroups, overlays), then the network,
    // then files.
    #[allow(dead_code)] // only held, to be torn down on drop
    containers: Vec<Container>,
    net: net::Network,
    #[allow(dead_code)] // only held, to be unmounted on drop
    cgroups: Cgroups,
    hosts: Vec<SystemdHost>,
    client: ssh::ClientFiles,
    dir: tempfile::TempDir,
}

impl SystemdHosts {
    /// Creates and boots `n` hosts for the test `name` (used in names and to pick the
    /// subnet); returns once every host is `running`. Builds the rootfs first when it is not
    /// cached (~2 min, once).
    ///
    /// Returns [`Skip`] when this machine cannot host them (not root, a tool missing, no
    /// cgroups, namespaces or overlays, no Debian mirror to build the rootfs from) — unless
    /// [`REQUIRE_ENV`](crate::hosts::REQUIRE_ENV) is `1`, then it panics with the reason. Any other failure panics with
    /// context (after cleaning up what it created).
    pub fn create(name: &str, n: usize) -> Result<SystemdHosts, Skip> {
        required_or_skipped("systemd test hosts", n, MAX_HOSTS, || {
            Self::try_create(name, n)
        })
    }

    fn try_create(name: &str, n: usize) -> Result<SystemdHosts, Skip> {
        let started = Instant::now();
        let tools = Tools::find()?;
        let lower = rootfs::lower(&tools.chroot)?;
        let rootfs_ready = started.elapsed();
        // Locals drop in reverse order on a panic: containers and overlays before the
        // network, the network before the cgroups, the cgroups before the directory.
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}{}-",
                container::TEMP_PREFIX,
                std::process::id()
            ))
            .tempdir()
            .expect("a temporary directory");
        let cgroups = Cgroups::find(dir.path())?;
        container::remove_stale(&cgroups);
        let mut net = net::Network::create(&tools.ip, name)?;

        let addresses: Vec<(String, Ipv4Addr)> = (0..n).map(|i| net.add_host(i)).collect();
        let identity = dir.path().join("id_ed25519");
        let user_key = ssh::keygen(&tools.ssh_keygen, &identity, "adora-test-user");
        let etc_hosts = etc_hosts(&addresses);
        let mut overlays = Vec::with_capacity(n);
        let mut host_keys = Vec::with_capacity(n);
        for i in 0..n {
            let host_dir = dir.path().join(host_name(i));
            std::fs::create_dir(&host_dir).expect("a host directory");
            let overlay = Overlay::mount(&lower, &host_dir)?;
            let provision = Provision {
                ssh_keygen: &tools.ssh_keygen,
                hostname: &host_name(i),
                user_key: &user_key,
                etc_hosts: &etc_hosts,
            };
            host_keys.push(provision.write(overlay.root()));
            overlays.push(overlay);
        }
        let names: Vec<String> = (0..n).map(host_name).collect();
        let entries: Vec<_> = names
            .iter()
            .zip(&addresses)
            .zip(host_keys)
            .map(|((alias, (_, ip)), host_key)| ssh::HostEntry {
                alias,
                ip: *ip,
                host_key,
            })
            .collect();
        let client = ssh::write_client_files(dir.path(), identity, &entries);
        let ssh = Arc::new(SshClient {
            ssh: tools.ssh.clone(),
            config: client.config.clone(),
        });

        let booting = started.elapsed();
        let (containers, mut hosts) =
            start(&tools, &cgroups, dir.path(), addresses, overlays, &ssh);
        for host in &mut hosts {
            host.wait_running(BOOT_TIMEOUT);
            host.first_boot = started.elapsed() - booting;
        }
        eprintln!(
            "systemd hosts: {n} running in {:.1?} (rootfs ready after {:.1?}, booted in {:.1?})",
            started.elapsed(),
            rootfs_ready,
            started.elapsed() - booting
        );
        Ok(SystemdHosts {
            containers,
            net,
            cgroups,
            hosts,
            client,
            dir,
        })
    }

    /// All hosts, in index order.
    pub fn hosts(&self) -> &[SystemdHost] {
        &self.hosts
    }

    /// Host `index`.
    pub fn host(&self, index: usize) -> &SystemdHost {
        &self.hosts[index]
    }

    /// The root namespace's address on the bridge (`10.x.y.1`): where the test process,
    /// and a coordinator or CLI it starts, is reachable from the hosts.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.net.gateway_ip()
    }

    /// A free TCP port on [`Self::gateway_ip`], for a coordinator the hosts reach.
    pub fn free_gateway_port(&self) -> u16 {
        std::net::TcpListener::bind((self.gateway_ip(), 0))
            .and_then(|l| l.local_addr())
            .expect("a free port on the gateway address")
            .port()
    }

    /// The fixture's subnet `10.x.y.0` (prefix length 24).
    pub fn subnet(&self) -> Ipv4Addr {
        self.net.subnet()
    }

    /// The fixture's temporary directory (rootfs, host directories, keys, configs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `ssh` config with one `Host` entry per host, matching its name (`h0`) and its
    /// address, as `root`: `ssh -F <this> [-l adora] h0 -- cmd`. Host keys are pinned and
    /// `BatchMode` is on.
    pub fn ssh_config(&self) -> &Path {
        &self.client.config
    }

    /// The private key every host accepts for `root` and for [`SUDO_USER`].
    pub fn identity_file(&self) -> &Path {
        &self.client.identity
    }

    /// `known_hosts` with every host's key, under its name and its address.
    pub fn known_hosts(&self) -> &Path {
        &self.client.known_hosts
    }
}

impl Index<usize> for SystemdHosts {
    type Output = SystemdHost;

    fn index(&self, index: usize) -> &SystemdHost {
        &self.hosts[index]
    }
}

/// `h<i>`: the hostname of host `i` and its alias in the ssh config.
fn host_name(index: usize) -> String {
    format!("h{index}")
}

/// Starts the boot loop of every host on its overlay; returns at once.
fn start(
    tools: &Tools,
    cgroups: &Cgroups,
    dir: &Path,
    addresses: Vec<(String, Ipv4Addr)>,
    overlays: Vec<Overlay>,
    ssh: &Arc<SshClient>,
) -> (Vec<Container>, Vec<SystemdHost>) {
    let mut containers = Vec::with_capacity(overlays.len());
    let mut hosts = Vec::with_capacity(overlays.len());
    for (i, ((netns, ip), overlay)) in addresses.into_iter().zip(overlays).enumerate() {
        let name = host_name(i);
        let host_dir = dir.join(&name);
        // A valid hostname (no `_`), unique on this machine: nspawn keys state on it.
        let machine = netns.replace('_', "-");
        let params = ContainerParams {
            nspawn: &tools.nspawn,
            machine: &machine,
            hostname: &name,
            netns: &netns,
            dir: &host_dir,
            cgroups,
        };
        containers.push(Container::start(&params, overlay));
        hosts.push(SystemdHost {
            index: i,
            name,
            machine,
            netns,
            ip,
            dir: host_dir,
            first_boot: Duration::ZERO,
            ssh: Arc::clone(ssh),
        });
    }
    (containers, hosts)
}
