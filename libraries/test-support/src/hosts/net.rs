//! The network behind [`TestHosts`](super::TestHosts): namespaces, the bridge, veth pairs,
//! subnet allocation, and cleanup (of this fixture on drop, of crashed runs at create).
//!
//! Layout for a fixture tagged `adora-<pid>-<seq>-<test>`:
//!
//! ```text
//!  root namespace                 <tag>-sw (switch)                  <tag>-h<i>
//!  ad<pid>g<seq> 10.x.y.1/24 ──── gw ─┐
//!                                     br0 ── h<i> ─────────────────── eth0 10.x.y.(10+i)/24
//! ```
//!
//! Only the gateway veth lives in the root namespace; every other interface is inside a
//! namespace of the fixture, so their short names (`br0`, `gw`, `h0`, `eth0`) never collide.
//! There is no default route and no NAT anywhere: a host can reach only the subnet.

use std::{
    collections::hash_map::DefaultHasher,
    fs::{File, OpenOptions},
    hash::{Hash, Hasher},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::Skip;
use crate::{process_alive, run_with_timeout};

/// Every namespace created by the fixture starts with this, followed by the creator's pid.
pub(super) const NETNS_PREFIX: &str = "adora-";

/// Marker put in the alias of the root-side gateway veth, followed by the creator's pid.
const LINK_ALIAS_PREFIX: &str = "adora-test-hosts pid=";

/// Serialises subnet choice and stale cleanup across threads and processes (an `flock`).
const LOCK_FILE: &str = "/run/adora-test-hosts.lock";

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Subnets are `10.x.y.0/24` with `x` in this range.
const SUBNET_SECOND_OCTETS: std::ops::RangeInclusive<u8> = 200..=250;

/// Host `i` gets `10.x.y.(HOST_ADDRESS_OFFSET + i)`; the gateway (root namespace) gets `.1`.
pub(super) const HOST_ADDRESS_OFFSET: usize = 10;

/// How long an `ip` invocation may take before the fixture gives up (it never waits on the
/// network, so this only guards against a wedged system).
pub(super) const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long teardown keeps killing the processes of a namespace before deleting it anyway.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinguishes fixtures created by one process (tests run in parallel threads).
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// The namespaces and links of one fixture; deletes them (after killing every process inside)
/// when dropped, so a panic halfway through `create` cleans up too.
pub(crate) struct Network {
    ip: PathBuf,
    tag: String,
    switch_ns: String,
    /// Namespaces to delete on drop, switch first.
    namespaces: Vec<String>,
    gateway_link: Option<String>,
    subnet: [u8; 3],
}

impl Network {
    /// Creates the switch namespace with its bridge. Failing to create a namespace at all is a
    /// missing capability (a [`Skip`]); anything failing after that is a bug and panics.
    pub(crate) fn create(ip: &Path, test_name: &str) -> Result<Network, Skip> {
        let pid = std::process::id();
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{NETNS_PREFIX}{pid}-{seq}-{}", sanitize(test_name));
        let switch_ns = format!("{tag}-sw");
        let added = run_with_timeout(ip_cmd(ip, &["netns", "add", &switch_ns]), IP_TIMEOUT);
        if !added.status.success() {
            return Err(Skip(format!(
                "cannot create a network namespace (`ip netns add`): {}",
                added.stderr.trim()
            )));
        }
        let mut net = Network {
            ip: ip.to_owned(),
            tag,
            switch_ns: switch_ns.clone(),
            namespaces: vec![switch_ns],
            gateway_link: None,
            subnet: [0; 3],
        };
        net.ip_in(
            &net.switch_ns,
            &["link", "add", "name", "br0", "type", "bridge"],
        );
        net.ip_in(
            &net.switch_ns,
            &["link", "set", "dev", "br0", "addrgenmode", "none"],
        );
        net.ip_in(&net.switch_ns, &["link", "set", "dev", "br0", "up"]);
        net.add_gateway(test_name, pid, seq);
        Ok(net)
    }

    /// Under the cross-process lock: removes what crashed runs left, picks a free subnet and
    /// claims it by putting `.1` on the root-side gateway veth (which is how the next fixture
    /// sees it as used).
    fn add_gateway(&mut self, test_name: &str, pid: u32, seq: u32) {
        let _lock = lock();
        remove_stale(&self.ip);
        let used = used_networks(&self.ip);
        self.subnet = pick_subnet(test_name, pid, seq, &used)
            .expect("every 10.200-250.x.0/24 subnet is in use");
        let link = format!("ad{pid:x}g{:x}", seq & 0xfff);
        assert!(link.len() <= 15, "interface name {link} is too long");
        self.ip_root(&[
            "link",
            "add",
            "name",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "gw",
            "netns",
            &self.switch_ns,
        ]);
        self.gateway_link = Some(link.clone());
        let alias = format!("{LINK_ALIAS_PREFIX}{pid} netns={}", self.tag);
        self.ip_root(&["link", "set", "dev", &link, "alias", &alias]);
        self.ip_root(&["link", "set", "dev", &link, "addrgenmode", "none"]);
        let gateway = format!("{}/24", self.gateway_ip());
        self.ip_root(&["addr", "add", &gateway, "dev", &link]);
        self.ip_root(&["link", "set", "dev", &link, "up"]);
        let sw = self.switch_ns.clone();
        self.ip_in(&sw, &["link", "set", "dev", "gw", "addrgenmode", "none"]);
        self.ip_in(&sw, &["link", "set", "dev", "gw", "master", "br0", "up"]);
    }

    /// Creates host `index`: its namespace with loopback up and `eth0` on the bridge.
    /// Returns the namespace name and the host's address.
    pub(crate) fn add_host(&mut self, index: usize) -> (String, Ipv4Addr) {
        let ns = format!("{}-h{index}", self.tag);
        self.ip_root(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let port = switch_port(index);
        let sw = self.switch_ns.clone();
        self.ip_in(&ns, &["link", "set", "dev", "lo", "up"]);
        self.ip_in(
            &sw,
            &[
                "link", "add", "name", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        self.ip_in(&sw, &["link", "set", "dev", &port, "addrgenmode", "none"]);
        self.ip_in(&sw, &["link", "set", "dev", &port, "master", "br0", "up"]);
        self.ip_in(&ns, &["link", "set", "dev", "eth0", "addrgenmode", "none"]);
        let address = self.host_ip(index);
        self.ip_in(
            &ns,
            &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
        );
        self.ip_in(&ns, &["link", "set", "dev", "eth0", "up"]);
        (ns, address)
    }

    /// `10.x.y.1`, the root namespace's address on the bridge.
    pub(crate) fn gateway_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// `10.x.y.0`, the network address of the fixture's /24.
    pub(crate) fn subnet(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 0)
    }

    fn host_ip(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        let d = u8::try_from(HOST_ADDRESS_OFFSET + index).expect("at most 200 hosts");
        Ipv4Addr::new(a, b, c, d)
    }

    /// `adora-<pid>-<seq>-<test>`: every namespace of this fixture starts with it.
    pub(super) fn tag(&self) -> &str {
        &self.tag
    }

    /// The switch namespace (holds the bridge).
    pub(super) fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    /// Name of the gateway veth in the root namespace.
    pub(super) fn gateway_link(&self) -> &str {
        self.gateway_link.as_deref().unwrap_or_default()
    }

    fn ip_root(&self, args: &[&str]) {
        checked(ip_cmd(&self.ip, args));
    }

    fn ip_in(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        checked(ip_cmd(&self.ip, &full));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Processes first: a namespace only disappears once nothing runs in it.
        for ns in &self.namespaces {
            sweep(&self.ip, ns, None);
        }
        // The root-side veth explicitly: the kernel removes it with the switch namespace, but
        // asynchronously, and a caller checking for leftovers right after drop would see it.
        if let Some(link) = &self.gateway_link {
            quiet(ip_cmd(&self.ip, &["link", "del", "dev", link]));
        }
        for ns in self.namespaces.iter().rev() {
            quiet(ip_cmd(&self.ip, &["netns", "del", ns]));
        }
    }
}

/// Name of host `index`'s port on the bridge, in the switch namespace.
pub(super) fn switch_port(index: usize) -> String {
    format!("h{index}")
}

/// Keeps `[a-z0-9_]` of a test name, at most 24 characters, for readable namespace names.
fn sanitize(test_name: &str) -> String {
    let cleaned: String = test_name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(24)
        .collect();
    if cleaned.is_empty() {
        "test".to_owned()
    } else {
        cleaned
    }
}

/// The first free `10.x.y.0/24` (x in 200..=250), starting at a position derived from the
/// test name, pid and sequence number so that concurrent fixtures rarely probe the same ones.
pub(super) fn pick_subnet(
    test_name: &str,
    pid: u32,
    seq: u32,
    used: &[(Ipv4Addr, u8)],
) -> Option<[u8; 3]> {
    let mut hasher = DefaultHasher::new();
    (test_name, pid, seq).hash(&mut hasher);
    let seconds = u32::from(SUBNET_SECOND_OCTETS.end() - SUBNET_SECOND_OCTETS.start()) + 1;
    let count = seconds * 256;
    let start = (hasher.finish() % u64::from(count)) as u32;
    (0..count)
        .map(|k| (start + k) % count)
        .map(|i| {
            let x = SUBNET_SECOND_OCTETS.start() + (i / 256) as u8;
            [10, x, (i % 256) as u8]
        })
        .find(|&[a, b, c]| {
            let candidate = (Ipv4Addr::new(a, b, c, 0), 24);
            !used.iter().any(|&net| overlaps(net, candidate))
        })
}

/// True when two IPv4 prefixes share any address.
pub(super) fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1).min(32);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

/// Parses `a.b.c.d/len` (or a bare address, as /32).
fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let len: u8 = len.parse().ok()?;
    Some((addr.parse().ok()?, len)).filter(|_| len <= 32)
}

/// IPv4 networks in use in the root namespace: its addresses and (non-default) routes.
fn used_networks(ip: &Path) -> Vec<(Ipv4Addr, u8)> {
    let addrs = checked(ip_cmd(ip, &["-4", "-o", "addr", "show"]));
    let routes = checked(ip_cmd(ip, &["-4", "route", "show"]));
    let mut used: Vec<_> = addrs
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            parse_prefix(words.next()?)
        })
        .collect();
    // The first word that parses as a prefix, so typed routes (`unreachable 10.1.0.0/16`)
    // count too; `default` routes do not use any particular subnet.
    used.extend(
        routes
            .lines()
            .filter_map(|line| line.split_whitespace().take(2).find_map(parse_prefix)),
    );
    used
}

/// Takes the cross-process lock; released when the returned value drops.
fn lock() -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {LOCK_FILE}: {e}"))
}

/// The creator pid encoded in a fixture namespace name (`adora-<pid>-...`).
pub(crate) fn creator_pid(netns: &str) -> Option<u32> {
    netns
        .strip_prefix(NETNS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The creator pid in a root link's alias, and the link name, from a line of `ip -o link`.
fn stale_link(line: &str) -> Option<(String, u32)> {
    let name = line.split(": ").nth(1)?.split('@').next()?.to_owned();
    let after = &line[line.find(LINK_ALIAS_PREFIX)? + LINK_ALIAS_PREFIX.len()..];
    let pid = after.split_whitespace().next()?.parse().ok()?;
    Some((name, pid))
}

/// Whether something created by `pid` is left over from a crashed run: that process is gone.
/// Fixtures of this process and of live processes (tests running concurrently) are kept.
fn is_stale(pid: u32) -> bool {
    pid != std::process::id() && !process_alive(pid)
}

/// Deletes namespaces and root gateway links whose creator process is gone.
fn remove_stale(ip: &Path) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if creator_pid(&name).is_some_and(is_stale) {
            eprintln!("test hosts: removing stale namespace {name}");
            sweep(ip, &name, None);
            quiet(ip_cmd(ip, &["netns", "del", &name]));
        }
    }
    let links = quiet(ip_cmd(ip, &["-o", "link", "show"])).unwrap_or_default();
    for (link, pid) in links.lines().filter_map(stale_link) {
        if is_stale(pid) {
            eprintln!("test hosts: removing stale link {link}");
            quiet(ip_cmd(ip, &["link", "del", "dev", &link]));
        }
    }
}

/// Pids of the processes running in namespace `ns`.
pub(super) fn pids_in(ip: &Path, ns: &str) -> Vec<u32> {
    quiet(ip_cmd(ip, &["netns", "pids", ns]))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs every process in `ns` (but `keep`) until none is left or [`SWEEP_TIMEOUT`] passes.
/// Returns how many processes were signalled.
pub(super) fn sweep(ip: &Path, ns: &str, keep: Option<u32>) -> usize {
    let started = Instant::now();
    let mut killed = std::collections::HashSet::new();
    loop {
        let pids: Vec<u32> = pids_in(ip, ns)
            .into_iter()
            .filter(|p| Some(*p) != keep)
            .collect();
        if pids.is_empty() || started.elapsed() > SWEEP_TIMEOUT {
            return killed.len();
        }
        for pid in pids {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                killed.insert(pid);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `ip <args>`.
pub(super) fn ip_cmd(ip: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(ip);
    cmd.args(args);
    cmd
}

/// Runs `cmd` under [`IP_TIMEOUT`]; panics with its stderr when it fails. Returns stdout.
fn checked(cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(cmd, IP_TIMEOUT);
    assert!(out.status.success(), "{shown} failed:\n{out}");
    out.stdout
}

/// Runs `cmd` for cleanup: never panics (it runs in `Drop`, possibly while a test panics) and
/// returns stdout when it succeeded. `ip` only edits kernel state, so it does not block.
fn quiet(mut cmd: Command) -> Option<String> {
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes() {
        let net = |s: &str| parse_prefix(s).unwrap();
        assert!(overlaps(net("10.200.3.0/24"), net("10.200.3.7/24")));
        assert!(overlaps(net("10.0.0.0/8"), net("10.200.3.0/24")));
        assert!(overlaps(net("10.200.3.9"), net("10.200.3.0/24")));
        assert!(!overlaps(net("10.200.4.0/24"), net("10.200.3.0/24")));
        assert!(!overlaps(net("192.0.2.2/24"), net("10.200.3.0/24")));
        assert!(overlaps(net("0.0.0.0/0"), net("10.200.3.0/24")));
    }

    #[test]
    fn picks_a_subnet_in_range_that_is_not_used() {
        let first = pick_subnet("t", 1, 0, &[]).unwrap();
        assert_eq!(first[0], 10);
        assert!(SUBNET_SECOND_OCTETS.contains(&first[1]));
        let used = [(Ipv4Addr::new(first[0], first[1], first[2], 1), 24)];
        let second = pick_subnet("t", 1, 0, &used).unwrap();
        assert_ne!(first, second);
        let everything = [(Ipv4Addr::new(10, 0, 0, 0), 8)];
        assert_eq!(pick_subnet("t", 1, 0, &everything), None);
    }

    #[test]
    fn names_fit_and_encode_the_creator() {
        assert_eq!(creator_pid("adora-4194304-7-my_test-h3"), Some(4194304));
        assert_eq!(creator_pid("adora-x-7-sw"), None);
        assert_eq!(creator_pid("other-12-sw"), None);
        assert_eq!(sanitize("Cross-Machine::test"), "cross_machine__test");
        assert!(format!("ad{:x}g{:x}", 4_194_304u32, 0xfff).len() <= 15);
    }

    #[test]
    fn finds_stale_link_aliases() {
        let line = "7: ad1f2g3@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue \
                    state UP mode DEFAULT group default qlen 1000\\    link/ether 62:3f:d5:63:21:40 \
                    brd ff:ff:ff:ff:ff:ff link-netns adora-1-3-x-sw\\    alias adora-test-hosts \
                    pid=31 netns=adora-1-3-x";
        assert_eq!(stale_link(line), Some(("ad1f2g3".to_owned(), 31)));
        assert_eq!(stale_link("1: lo: <LOOPBACK,UP> mtu 65536"), None);
    }
}
