//! Test hosts: N Linux network namespaces on a bridge, each with its own IPv4 address and its
//! own `sshd`, for multi-machine tests (`cluster up`, cross-machine Zenoh, partitions, kills).
//!
//! ```no_run
//! use adora_test_support::{hosts::TestHosts, require_hosts};
//! use std::time::Duration;
//!
//! # fn example() {
//! // Skips the test (printing `SKIPPED: <why>`) when hosts cannot be created, e.g. not root;
//! // fails it instead when ADORA_REQUIRE_TEST_HOSTS=1 (CI).
//! let hosts: TestHosts = require_hosts!("my_test", 3);
//! let a = hosts.host(0);
//! // A process inside host `a`, killed when the guard drops (and at teardown in any case).
//! let mut cmd = a.command("sleep");
//! cmd.arg("60");
//! let _sleeper = a.spawn(cmd, "sleeper");
//! // Addresses: hosts are 10.x.y.10, .11, ...; the test process itself is 10.x.y.1.
//! println!("{} at {}, gateway {}", a.name(), a.ip(), hosts.gateway_ip());
//! // Real ssh, with pinned host keys (`ssh -F <hosts.ssh_config()> h0 ...` works too).
//! let out = hosts.ssh(0, &["hostname", "-I"]);
//! assert!(out.stdout.contains(&a.ip().to_string()));
//! // A network partition: the host's bridge port goes down, then up again.
//! a.cut();
//! a.restore();
//! # }
//! ```
//!
//! # Layout and isolation
//!
//! A fixture is tagged `adora-<pid>-<seq>-<test name>`. The bridge lives in a dedicated switch
//! namespace `<tag>-sw`; host `i` is namespace `<tag>-h<i>` with `lo` and `eth0` (a veth whose
//! other end `h<i>` is a bridge port). The root namespace, where the test itself, the
//! coordinator and the CLI run, joins the bridge through one veth `ad<pid hex>g<seq hex>` with
//! address `.1`; that is the only interface the fixture adds to the root namespace. Each fixture
//! gets its own `10.x.y.0/24` (x in 200..=250), chosen from a hash of the test name, pid and
//! sequence number and checked against the root namespace's addresses and routes under an
//! `flock` on `/run/adora-test-hosts.lock`, so parallel tests in one or several processes never
//! share a subnet. There is no default route, no NAT and no forwarding: hosts reach only their
//! subnet and their own loopback. IPv6 link-local addresses are disabled on the veths.
//!
//! # Teardown
//!
//! Dropping [`TestHosts`] (also while a test panics) kills the `sshd`s, then every process in
//! every namespace of the fixture (`ip netns pids` + SIGKILL, so processes started over ssh or
//! reparented daemons die too), deletes the root-side veth and then the namespaces (which
//! removes the bridge and the other veths). [`TestHosts::create`] first removes what crashed
//! runs left behind: namespaces named `adora-<pid>-...` and root links whose alias names a pid,
//! when that process no longer exists. Fixtures of live processes are never touched.
//!
//! # Requirements
//!
//! Root (or `CAP_SYS_ADMIN` + `CAP_NET_ADMIN` and an euid of 0), `ip` (iproute2), `sshd`
//! (openssh-server), `ssh` and `ssh-keygen` (openssh-client), `bash` and `timeout` for
//! reachability probes. `.ci/run` installs them. `/run/sshd` is created when missing.

pub(crate) mod net;
pub(crate) mod ssh;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    ops::Index,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use crate::{run_with_timeout, ChildGuard, Output};

/// When this environment variable is `1`, a missing capability fails the test instead of
/// skipping it. CI sets it: there, every multi-machine test must really run.
pub const REQUIRE_ENV: &str = "ADORA_REQUIRE_TEST_HOSTS";

/// The most hosts one fixture can have (addresses `.10` to `.209`).
pub const MAX_HOSTS: usize = 200;

/// How long a host's `sshd` may take to accept connections.
const SSHD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`TestHosts::ssh`] waits for the remote command before failing the test.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reachability probe waits for a TCP connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why test hosts cannot be created here (not root, a tool missing, no namespace support).
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl Skip {
    /// Prints `SKIPPED: <reason>` (what [`require_hosts!`](crate::require_hosts) does before
    /// returning from the test).
    pub fn print(&self) {
        eprintln!("SKIPPED: {}", self.0);
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when [`REQUIRE_ENV`] is set to `1`.
pub fn hosts_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Creates test hosts or skips the test: `let hosts = require_hosts!("name", 3);`.
///
/// When hosts cannot be created it prints `SKIPPED: <reason>` and returns from the enclosing
/// test; in a test returning a value, give it as a third argument:
/// `require_hosts!("name", 3, Ok(()))`. With `ADORA_REQUIRE_TEST_HOSTS=1` the test fails instead.
#[macro_export]
macro_rules! require_hosts {
    ($name:expr, $n:expr) => {
        $crate::require_hosts!($name, $n, ())
    };
    ($name:expr, $n:expr, $skipped:expr) => {
        match $crate::hosts::TestHosts::create($name, $n) {
            Ok(hosts) => hosts,
            Err(skip) => {
                skip.print();
                return $skipped;
            }
        }
    };
}

/// Absolute paths of the tools the fixture runs.
struct Tools {
    ip: PathBuf,
    sshd: PathBuf,
    ssh: PathBuf,
    ssh_keygen: PathBuf,
}

impl Tools {
    /// Checks the capabilities the fixture needs; the first one missing is the skip reason.
    fn find() -> Result<Tools, Skip> {
        match effective_uid() {
            Some(0) => {}
            Some(uid) => return Err(Skip(format!("test hosts need root (euid is {uid})"))),
            None => return Err(Skip("test hosts need Linux (/proc/self/status)".into())),
        }
        let find = |name: &str, package: &str| {
            find_program(name)
                .ok_or_else(|| Skip(format!("`{name}` is not installed (package {package})")))
        };
        Ok(Tools {
            ip: find("ip", "iproute2")?,
            sshd: find("sshd", "openssh-server")?,
            ssh: find("ssh", "openssh-client")?,
            ssh_keygen: find("ssh-keygen", "openssh-client")?,
        })
    }
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Looks `name` up in `PATH` and in the sbin directories (often missing from a user's `PATH`).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        // sshd re-executes itself and insists on an absolute path.
        .and_then(|p| p.canonicalize().ok())
}

/// One test host: a network namespace with its own address and `sshd`.
#[derive(Debug)]
pub struct Host {
    index: usize,
    name: String,
    netns: String,
    ip: Ipv4Addr,
    switch_ns: String,
    ip_bin: PathBuf,
    dir: PathBuf,
    sshd_pid: u32,
    /// Namespaces of every host of the fixture (for [`Host::restore`]).
    peers: Arc<[String]>,
    /// The fixture's veth in the root namespace.
    gateway_link: String,
}

impl Host {
    /// The host's index in [`TestHosts::hosts`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// The host id: `h0`, `h1`, ... (also its alias in [`TestHosts::ssh_config`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The network namespace name (`ip netns exec <netns> ...`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Directory for this host's logs (`sshd.log`, and `<name>.out`/`.err` of
    /// [`spawn`](Host::spawn)ed processes).
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// Pid of the host's `sshd` listener.
    pub fn sshd_pid(&self) -> u32 {
        self.sshd_pid
    }

    /// A `Command` running `program` inside this host (`ip netns exec <netns> program`); add
    /// arguments and environment as usual.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip_bin);
        cmd.arg("netns").arg("exec").arg(&self.netns).arg(program);
        cmd
    }

    /// Spawns `cmd` (built with [`command`](Host::command)) with its output in
    /// `<log_dir>/<name>.out`/`.err`; killed when the guard drops, and at teardown anyway.
    pub fn spawn(&self, cmd: Command, name: &str) -> ChildGuard {
        ChildGuard::spawn(cmd, &self.dir, name)
    }

    /// Pids of every process running in this host, `sshd` included.
    pub fn pids(&self) -> Vec<u32> {
        net::pids_in(&self.ip_bin, &self.netns)
    }

    /// SIGKILLs every process in this host except its `sshd` listener (a crash of everything
    /// the test started, while the host stays reachable over ssh). Returns how many it killed.
    pub fn kill_all(&self) -> usize {
        net::sweep(&self.ip_bin, &self.netns, Some(self.sshd_pid))
    }

    /// Cuts the host off: its bridge port goes down, so its packets are dropped as if a
    /// cable were pulled. Its own interface and address stay configured, sockets stay open.
    pub fn cut(&self) {
        self.set_port("down");
    }

    /// Undoes [`cut`](Host::cut). Also forgets the neighbour (ARP) entries that failed
    /// during the cut — this host's, and the other hosts' and the test process's entries for
    /// this host — so traffic flows at once instead of after the kernel gives up on them
    /// (a connection attempt would otherwise fail with "No route to host" for up to ~3 s).
    pub fn restore(&self) {
        self.set_port("up");
        let me = self.ip.to_string();
        let mut flushes = vec![vec![
            "-n",
            self.netns.as_str(),
            "neigh",
            "flush",
            "dev",
            "eth0",
        ]];
        for ns in self.peers.iter().filter(|ns| **ns != self.netns) {
            flushes.push(vec!["-n", ns, "neigh", "flush", "to", &me, "dev", "eth0"]);
        }
        flushes.push(vec!["neigh", "flush", "to", &me, "dev", &self.gateway_link]);
        for args in flushes {
            let mut flush = Command::new(&self.ip_bin);
            flush.args(&args);
            let out = run_with_timeout(flush, net::IP_TIMEOUT);
            assert!(out.status.success(), "ip {args:?} failed:\n{out}");
        }
    }

    fn set_port(&self, state: &str) {
        let port = net::switch_port(self.index);
        let mut cmd = Command::new(&self.ip_bin);
        cmd.args(["-n", &self.switch_ns, "link", "set", "dev", &port, state]);
        let out = run_with_timeout(cmd, net::IP_TIMEOUT);
        assert!(out.status.success(), "cannot set {port} {state}:\n{out}");
    }

    /// Whether a TCP connection from inside this host to `addr` succeeds within
    /// [`PROBE_TIMEOUT`] (`bash`'s `/dev/tcp`, run under `timeout`).
    pub fn can_connect(&self, addr: SocketAddrV4) -> bool {
        let mut cmd = self.command("timeout");
        cmd.arg(PROBE_TIMEOUT.as_secs().to_string())
            .args(["bash", "-c", "exec 3<>\"/dev/tcp/$1/$2\"", "probe"])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string());
        run_with_timeout(cmd, PROBE_TIMEOUT * 5).status.success()
    }
}

/// A running packet capture ([`TestHosts::capture`]).
pub struct Capture {
    process: ChildGuard,
    file: PathBuf,
}

impl Capture {
    /// Stops the capture (SIGINT: tcpdump flushes its file) and returns every captured byte.
    /// Waits a second first: frames of the last moments may still be in the kernel's buffer.
    pub fn stop(mut self) -> Vec<u8> {
        std::thread::sleep(std::time::Duration::from_secs(1));
        self.process.signal(nix::sys::signal::Signal::SIGINT);
        let _ = self
            .process
            .wait_timeout(std::time::Duration::from_secs(10));
        std::fs::read(&self.file).expect("the capture file")
    }
}

/// N test hosts on one bridge; everything is torn down on drop. See the [module docs](self).
pub struct TestHosts {
    // Field order is drop order: sshds, then every other process and the network, then files.
    #[allow(dead_code)] // only held, to be killed on drop
    sshds: Vec<ChildGuard>,
    net: net::Network,
    hosts: Vec<Host>,
    ssh_bin: PathBuf,
    client: ssh::ClientFiles,
    dir: tempfile::TempDir,
}

/// Creates `n` (1 to `max`) test hosts of a `kind` with `create`: a [`Skip`] stays a skip,
/// unless [`REQUIRE_ENV`] is `1`, then it panics with the reason (CI must not skip).
pub(crate) fn required_or_skipped<T>(
    kind: &str,
    n: usize,
    max: usize,
    create: impl FnOnce() -> Result<T, Skip>,
) -> Result<T, Skip> {
    assert!((1..=max).contains(&n), "between 1 and {max} hosts");
    match create() {
        Err(skip) if hosts_required() => {
            panic!("{REQUIRE_ENV}=1 but {kind} are unavailable: {skip}")
        }
        result => result,
    }
}

impl TestHosts {
    /// Creates `n` hosts for the test `name` (used in namespace names and to pick the subnet).
    ///
    /// Returns [`Skip`] when this machine cannot host them (not root, `ip` or `sshd` missing,
    /// namespaces not permitted) — unless [`REQUIRE_ENV`] is `1`, then it panics with the
    /// reason. Any other failure panics with context (after cleaning up what it created).
    pub fn create(name: &str, n: usize) -> Result<TestHosts, Skip> {
        required_or_skipped("test hosts", n, MAX_HOSTS, || Self::try_create(name, n))
    }

    fn try_create(name: &str, n: usize) -> Result<TestHosts, Skip> {
        let tools = Tools::find()?;
        let mut net = net::Network::create(&tools.ip, name)?;
        ssh::ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("adora-hosts-")
            .tempdir()
            .expect("a temporary directory");
        let identity = dir.path().join("id_ed25519");
        let user_key = ssh::keygen(&tools.ssh_keygen, &identity, "adora-test-user");
        let authorized_keys = dir.path().join("authorized_keys");
        ssh::write(&authorized_keys, &format!("{user_key}\n"));

        let mut sshds = Vec::with_capacity(n);
        let mut hosts = Vec::with_capacity(n);
        let mut host_keys = Vec::with_capacity(n);
        for i in 0..n {
            let (netns, ip) = net.add_host(i);
            let host_dir = dir.path().join(format!("h{i}"));
            std::fs::create_dir(&host_dir).expect("a host directory");
            let host_key = host_dir.join("ssh_host_ed25519_key");
            host_keys.push(ssh::keygen(&tools.ssh_keygen, &host_key, &format!("h{i}")));
            let config = host_dir.join("sshd_config");
            let pid_file = host_dir.join("sshd.pid");
            ssh::write(
                &config,
                &ssh::sshd_config(ip, &host_key, &authorized_keys, &pid_file),
            );
            let mut host = Host {
                index: i,
                name: format!("h{i}"),
                netns,
                ip,
                switch_ns: net.switch_ns().to_owned(),
                ip_bin: tools.ip.clone(),
                dir: host_dir,
                sshd_pid: 0,
                peers: Arc::from([]),
                gateway_link: net.gateway_link().to_owned(),
            };
            let mut cmd = host.command(&tools.sshd);
            cmd.arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(host.dir.join("sshd.log"));
            let sshd = host.spawn(cmd, "sshd");
            host.sshd_pid = sshd.pid();
            sshds.push(sshd);
            hosts.push(host);
        }
        let peers: Arc<[String]> = hosts.iter().map(|h| h.netns.clone()).collect();
        for host in &mut hosts {
            host.peers = Arc::clone(&peers);
        }
        for (host, sshd) in hosts.iter().zip(&mut sshds) {
            wait_for_sshd(host, sshd);
        }
        let entries: Vec<_> = hosts
            .iter()
            .zip(host_keys)
            .map(|(host, host_key)| ssh::HostEntry {
                alias: &host.name,
                ip: host.ip,
                host_key,
            })
            .collect();
        let client = ssh::write_client_files(dir.path(), identity, &entries);
        Ok(TestHosts {
            sshds,
            net,
            hosts,
            ssh_bin: tools.ssh,
            client,
            dir,
        })
    }

    /// All hosts, in index order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `index`.
    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    /// The root namespace's address on the bridge (`10.x.y.1`): where the test process,
    /// and a coordinator or CLI it starts, is reachable from the hosts.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.net.gateway_ip()
    }

    /// The fixture's subnet `10.x.y.0` (prefix length 24).
    pub fn subnet(&self) -> Ipv4Addr {
        self.net.subnet()
    }

    /// `adora-<pid>-<seq>-<test>`: every namespace of this fixture starts with this.
    pub fn netns_prefix(&self) -> &str {
        self.net.tag()
    }

    /// Captures every frame on the fixture's bridge (between hosts, and between hosts and the
    /// root namespace) that matches the pcap `filter` (`""`: all) into `file` with `tcpdump`,
    /// until [`Capture::stop`].
    pub fn capture(&self, file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.net.switch_ns()])
            .args(["tcpdump", "-i", "br0", "-U", "-n", "-s", "0", "-w"])
            .arg(file)
            .args(filter.split_whitespace());
        let process = ChildGuard::spawn(cmd, self.dir(), "tcpdump");
        let started = crate::wait_until(std::time::Duration::from_secs(10), || {
            std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)
        });
        assert!(started, "tcpdump did not start; is it installed?");
        Capture {
            process,
            file: file.to_owned(),
        }
    }

    /// Name of the fixture's one interface in the root namespace (the gateway veth).
    pub fn gateway_link(&self) -> &str {
        self.net.gateway_link()
    }

    /// The fixture's temporary directory (keys, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `ssh` config with one `Host` entry per host, matching its name (`h0`) and its address:
    /// `ssh -F <this> h0 -- cmd`. Host keys are pinned and `BatchMode` is on.
    pub fn ssh_config(&self) -> &Path {
        &self.client.config
    }

    /// The private key every host accepts for `root`.
    pub fn identity_file(&self) -> &Path {
        &self.client.identity
    }

    /// `known_hosts` with every host's key, under its name and its address.
    pub fn known_hosts(&self) -> &Path {
        &self.client.known_hosts
    }

    /// `ssh -F <config> <host> -- <args>`, not yet run.
    pub fn ssh_command(&self, index: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ssh_bin);
        cmd.arg("-F")
            .arg(&self.client.config)
            .arg(&self.hosts[index].name)
            .arg("--")
            .args(args);
        cmd
    }

    /// Runs `args` on host `index` over ssh; fails the test after [`SSH_TIMEOUT`].
    pub fn ssh(&self, index: usize, args: &[&str]) -> Output {
        run_with_timeout(self.ssh_command(index, args), SSH_TIMEOUT)
    }

    /// Whether the root namespace (the test process) can open a TCP connection to `addr`
    /// within [`PROBE_TIMEOUT`].
    pub fn root_can_connect(&self, addr: SocketAddrV4) -> bool {
        TcpStream::connect_timeout(&SocketAddr::V4(addr), PROBE_TIMEOUT).is_ok()
    }
}

impl Index<usize> for TestHosts {
    type Output = Host;

    fn index(&self, index: usize) -> &Host {
        &self.hosts[index]
    }
}

/// Waits until `host`'s sshd accepts TCP connections from the root namespace; panics with
/// its log if it exits or does not listen within [`SSHD_START_TIMEOUT`].
fn wait_for_sshd(host: &Host, sshd: &mut ChildGuard) {
    let addr = SocketAddr::V4(SocketAddrV4::new(host.ip, 22));
    let started = Instant::now();
    loop {
        let exited = sshd.0.try_wait().ok().flatten();
        if exited.is_none() && TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok() {
            return;
        }
        if exited.is_some() || started.elapsed() > SSHD_START_TIMEOUT {
            let log = std::fs::read_to_string(host.dir.join("sshd.log")).unwrap_or_default();
            let err = std::fs::read_to_string(host.dir.join("sshd.err")).unwrap_or_default();
            panic!(
                "sshd of {} ({addr}) is not listening (exit status: {exited:?}) after {:?}\n\
                 --- sshd.log ---\n{log}\n--- stderr ---\n{err}",
                host.name,
                started.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}
