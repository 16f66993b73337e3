//! Data links on namespaced test hosts: sites joined only by their routers, and links only
//! between the daemons a dataflow uses.
//!
//! The test hosts share one bridge; separate networks are made with routes: each host keeps a
//! route to the coordinator (the gateway) and to the hosts of its own network only, so a host
//! of one site cannot reach the other site ("Network is unreachable") except through the two
//! router hosts, which also reach each other. Cutting the routers' link replaces that route by
//! a blackhole on both router hosts (packets silently dropped, like a pulled cable).

use std::{net::Ipv4Addr, process::Command, time::Duration};

use adora_test_support::{
    bin, bin_dir,
    fleet::Fleet,
    hosts::{Host, TestHosts},
    require_hosts, run_with_timeout,
    services::Coordinator,
    temp_dir, wait_until, ChildGuard,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(240);
const ROUTER_PORT: u16 = 7448;

/// Runs `ip -n <host's netns> args...`.
fn ip(host: &Host, args: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", host.netns()]).args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "ip {args:?} on {}: {out}",
        host.name()
    );
}

/// Confines host `i` of `reach` to the gateway and the hosts listed with it.
fn confine(hosts: &TestHosts, reach: &[(usize, &[usize])]) {
    for (i, others) in reach {
        let host = hosts.host(*i);
        let net = {
            let o = host.ip().octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        };
        ip(host, &["route", "del", &net, "dev", "eth0"]);
        let gateway = format!("{}/32", hosts.gateway_ip());
        ip(host, &["route", "add", &gateway, "dev", "eth0"]);
        for j in *others {
            let to = format!("{}/32", hosts.host(*j).ip());
            ip(host, &["route", "add", &to, "dev", "eth0"]);
        }
    }
}

/// Drops (`cut`) or restores the traffic between two hosts.
fn set_link(a: &Host, b: &Host, cut: bool) {
    for (from, to) in [(a, b), (b, a)] {
        let to = format!("{}/32", to.ip());
        if cut {
            ip(from, &["route", "replace", "blackhole", &to]);
        } else {
            ip(from, &["route", "replace", &to, "dev", "eth0"]);
        }
    }
}

/// Starts `adora router` for `site` on `host` (machine id `machine`), connecting to `other`.
fn router_on(
    coordinator: &Coordinator,
    state: &std::path::Path,
    host: &Host,
    machine: &str,
    site: &str,
    other: Ipv4Addr,
) -> ChildGuard {
    let gateway = coordinator.addr.rsplit_once(':').expect("ip:port").0;
    let mut cmd = host.command(bin("adora"));
    cmd.env("ADORA_STATE_DIR", state)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("ADORA_JOIN_CODE", coordinator.join_code(machine))
        .args(["router", "--machine-id", machine, "--site", site])
        .args(["--listen", &format!("tcp/0.0.0.0:{ROUTER_PORT}")])
        .args(["--connect", &format!("{other}:{ROUTER_PORT}")])
        .args(["--coordinator-addr", gateway, "--coordinator-port"])
        .arg(coordinator.port());
    host.spawn(cmd, &format!("router-{site}"))
}

/// One link as the test reads it: (peer, kind, up).
type Link = (String, String, bool);

/// `cluster status --links --json`: each daemon's id and its links.
fn links(coordinator: &Coordinator) -> Vec<(String, Vec<Link>)> {
    let mut cmd = coordinator.cli();
    cmd.args(["cluster", "status", "--links", "--json"]);
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(out.status.success(), "{out}");
    let json: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let daemons = json["daemons"].as_array().expect("daemons").iter();
    daemons
        .map(|d| {
            let links = d["links"].as_array().expect("links").iter();
            let links = links
                .map(|l| {
                    let s = |k: &str| l[k].as_str().expect("a string").to_owned();
                    (s("peer"), s("kind"), l["up"].as_bool().expect("up"))
                })
                .collect();
            (d["id"].as_str().expect("id").to_owned(), links)
        })
        .collect()
}

/// The links of daemon `id` (none when unknown).
fn links_of(coordinator: &Coordinator, id: &str) -> Vec<Link> {
    links(coordinator)
        .into_iter()
        .find(|(d, _)| d == id)
        .map(|(_, l)| l)
        .unwrap_or_default()
}

/// True when daemon `id` has a link to `peer` of `kind` in state `up`.
fn has_link(coordinator: &Coordinator, id: &str, peer: &str, kind: &str, up: bool) -> bool {
    links_of(coordinator, id)
        .iter()
        .any(|(p, k, u)| p.contains(peer) && k == kind && *u == up)
}

fn seq_flow(count: u64, tick_ms: u64, nodes: &[(&str, &str)]) -> String {
    let node = bin("adora-test-node");
    let node = node.display();
    let mut yaml = format!(
        "nodes:\n  - id: sender\n    path: {node}\n    env: {{ MODE: seq-source, COUNT: {count}, PAYLOAD_BYTES: 64 }}\n    inputs: {{ tick: adora/timer/millis/{tick_ms} }}\n    outputs: [data]\n    _unstable_deploy: {{ machine: {} }}\n",
        nodes[0].1
    );
    let mut from = "sender/data".to_owned();
    for (i, (id, machine)) in nodes.iter().enumerate().skip(1) {
        let last = i == nodes.len() - 1;
        let (mode, extra) = if last {
            ("seq-sink", ", EXPECT_LEN: 64, PROGRESS: 10")
        } else {
            ("relay", "")
        };
        yaml.push_str(&format!(
            "  - id: {id}\n    path: {node}\n    env: {{ MODE: {mode}{extra} }}\n    inputs: {{ in: {{ source: {from}, queue_size: 1000 }} }}\n"
        ));
        if !last {
            yaml.push_str("    outputs: [out]\n");
            from = format!("{id}/out");
        }
        yaml.push_str(&format!("    _unstable_deploy: {{ machine: {machine} }}\n"));
    }
    yaml
}

#[test]
fn two_sites_exchange_data_only_through_their_routers_and_a_cut_between_them_is_reported() {
    // h0, h1: site `lab` (daemons a, b); h2: lab's router; h3: cloud's router; h4: site
    // `cloud` (daemon c).
    let hosts = require_hosts!("two_sites", 5);
    confine(
        &hosts,
        &[
            (0, &[1, 2]),
            (1, &[0, 2]),
            (2, &[0, 1, 3]),
            (3, &[2, 4]),
            (4, &[3]),
        ],
    );
    let ssh = |from: usize, to: usize| {
        let addr = std::net::SocketAddrV4::new(hosts.host(to).ip(), 22);
        hosts.host(from).can_connect(addr)
    };
    assert!(ssh(0, 1) && ssh(2, 3) && ssh(3, 4), "the sites' own links");
    assert!(
        !ssh(0, 4) && !ssh(1, 3) && !ssh(4, 2),
        "the sites are separate"
    );

    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let (lab_gw, cloud_gw) = (hosts.host(2).ip(), hosts.host(3).ip());
    let _routers = [
        router_on(
            &coordinator,
            state.path(),
            hosts.host(2),
            "lab-gw",
            "lab",
            cloud_gw,
        ),
        router_on(
            &coordinator,
            state.path(),
            hosts.host(3),
            "cloud-gw",
            "cloud",
            lab_gw,
        ),
    ];
    let lab = [
        "--site",
        "lab",
        "--zenoh-router",
        &format!("{lab_gw}:{ROUTER_PORT}"),
    ];
    let cloud_router = format!("{cloud_gw}:{ROUTER_PORT}");
    let cloud = ["--site", "cloud", "--zenoh-router", &cloud_router];
    let _daemons = [
        coordinator.daemon_on(hosts.host(0), "a", &lab),
        coordinator.daemon_on(hosts.host(1), "b", &lab),
        coordinator.daemon_on(hosts.host(4), "c", &cloud),
    ];
    coordinator.wait_for_daemons(3);

    // a → b within the lab (a direct link), b → c across the sites (through the routers):
    // 2000 messages, one every 20 ms (40 s).
    let dataflow = state.path().join("sites.yml");
    let flow = seq_flow(2000, 20, &[("sender", "a"), ("relay", "b"), ("sink", "c")]);
    std::fs::write(&dataflow, flow).unwrap();
    let mut cmd = coordinator.cli();
    cmd.args([
        "start",
        dataflow.to_str().unwrap(),
        "--attach",
        "--name",
        "sites",
    ]);
    let mut run = ChildGuard::spawn(cmd, state.path(), "start");
    let stdout = state.path().join("start.out");
    let received = || {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split("seq-sink progress received=").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .next_back()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(90), || received() >= 100),
        "the stream did not start: {}",
        std::fs::read_to_string(&stdout).unwrap_or_default()
    );

    // b links to a (it reads a's output) and to its router; c only to its router; each sees
    // the other site up.
    let all = links(&coordinator);
    assert!(has_link(&coordinator, "b", "a", "daemon", true), "{all:?}");
    assert!(
        has_link(&coordinator, "b", &lab_gw.to_string(), "router", true),
        "{all:?}"
    );
    assert!(
        has_link(&coordinator, "c", &cloud_gw.to_string(), "router", true),
        "{all:?}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            has_link(&coordinator, "c", "lab", "site", true)
                && has_link(&coordinator, "a", "cloud", "site", true)
        }),
        "{:?}",
        links(&coordinator)
    );
    let c_links = links_of(&coordinator, "c");
    assert!(
        !c_links.iter().any(|(_, k, _)| k == "daemon"),
        "c has no direct link to the other site: {c_links:?}"
    );

    // Cut the routers' link: the daemons report the other site down, then up once restored,
    // and the stream goes on to the end.
    set_link(hosts.host(2), hosts.host(3), true);
    let down = wait_until(Duration::from_secs(40), || {
        has_link(&coordinator, "c", "lab", "site", false)
            && has_link(&coordinator, "b", "cloud", "site", false)
    });
    set_link(hosts.host(2), hosts.host(3), false);
    assert!(down, "the cut was not reported: {:?}", links(&coordinator));
    let at_restore = received();
    assert!(
        wait_until(Duration::from_secs(40), || {
            has_link(&coordinator, "c", "lab", "site", true)
        }),
        "the restore was not reported: {:?}",
        links(&coordinator)
    );
    assert!(
        wait_until(Duration::from_secs(60), || received() >= at_restore + 100),
        "the stream did not resume after the restore (received {} at the restore)",
        at_restore
    );
    // The messages lost in the cut are counted for the sink's input (reported with the
    // daemons' heartbeats once the first message after the gap arrived).
    let remote_dropped = || {
        let mut cmd = coordinator.cli();
        cmd.args(["list", "--json"]);
        let list = run_with_timeout(cmd, Duration::from_secs(30));
        let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap_or_default();
        rows[0]["remote_dropped"]["sink"]
            .as_array()
            .map_or(0, |drops| {
                drops
                    .iter()
                    .filter_map(|d| d["count"].as_u64())
                    .sum::<u64>()
            })
    };
    assert!(
        wait_until(Duration::from_secs(20), || remote_dropped() > 0),
        "the messages lost in the cut were not counted"
    );
    let counted = remote_dropped();
    let status = run.wait_timeout(TIMEOUT).expect("the dataflow finishes");
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(state.path().join("start.err")).unwrap();
    assert!(status.success(), "{out}\n{err}");
    // In order and never twice (the lab's direct link and the router never both deliver);
    // what was sent while the routers were cut off is lost, and exactly that was counted: the
    // sink's drop count through the node API, plus the relay's if a message went missing on the
    // lab's link (what the relay never got, it never forwarded).
    assert!(out.contains("next=2000 dups=0 late=0"), "{out}\n{err}");
    let field = |summary: &str, key: &str| {
        out.lines()
            .find(|l| l.contains(summary))
            .and_then(|l| l.split(&format!(" {key}=")).nth(1))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in the `{summary}` summary: {out}"))
    };
    let lost = field("seq-sink done ", "lost");
    let sink_dropped = field("seq-sink done ", "dropped");
    let forwarded = field("relay forwarded=", "forwarded");
    let relay_dropped = field("relay forwarded=", "dropped");
    println!(
        "lost in the cut: {lost}; dropped for the sink: {sink_dropped} ({counted} listed \
         while running), for the relay: {relay_dropped} (forwarded {forwarded})"
    );
    assert_eq!(relay_dropped, 2000 - forwarded, "{out}");
    assert_eq!(sink_dropped + relay_dropped, lost, "{out}");
    assert!(counted <= sink_dropped, "{out}");
}

#[test]
fn with_six_daemons_only_the_two_a_dataflow_uses_are_linked_and_only_while_it_runs() {
    let hosts = require_hosts!("six_daemons_links", 6);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let ids = ["m0", "m1", "m2", "m3", "m4", "m5"];
    let _daemons = coordinator.daemons_on(&hosts, &ids);
    let nobody_linked = || links(&coordinator).iter().all(|(_, l)| l.is_empty());
    assert!(
        wait_until(Duration::from_secs(20), nobody_linked),
        "no dataflow, no links: {:?}",
        links(&coordinator)
    );

    // m1 → m4, 20 s.
    let dataflow = state.path().join("pair.yml");
    std::fs::write(
        &dataflow,
        seq_flow(1000, 20, &[("sender", "m1"), ("sink", "m4")]),
    )
    .unwrap();
    let mut cmd = coordinator.cli();
    cmd.args([
        "start",
        dataflow.to_str().unwrap(),
        "--attach",
        "--name",
        "pair",
    ]);
    let mut run = ChildGuard::spawn(cmd, state.path(), "start");
    assert!(
        wait_until(Duration::from_secs(60), || has_link(
            &coordinator,
            "m4",
            "m1",
            "daemon",
            true
        )),
        "the reader's link to the sender: {:?}",
        links(&coordinator)
    );
    let all = links(&coordinator);
    for (id, links) in &all {
        if id == "m4" {
            assert_eq!(links.len(), 1, "m4 links only to m1: {all:?}");
        } else {
            assert!(links.is_empty(), "{id} has no data link: {all:?}");
        }
    }
    let status = run.wait_timeout(TIMEOUT).expect("the dataflow finishes");
    let out = std::fs::read_to_string(state.path().join("start.out")).unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("received=1000 lost=0 next=1000"), "{out}");
    // Finished: the link between the two goes away.
    assert!(
        wait_until(Duration::from_secs(20), nobody_linked),
        "links left after the dataflow: {:?}",
        links(&coordinator)
    );
}

/// `cluster status --links --json` through the fleet's CLI: has `id` a link to `peer` of
/// `kind` that is up?
fn fleet_link_up(fleet: &Fleet, id: &str, peer: &str, kind: &str) -> bool {
    let out = fleet.ok(&["cluster", "status", "--links", "--json"]);
    let json: Value = serde_json::from_str(&out.stdout).expect("JSON");
    json["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .any(|d| {
            d["id"] == id
                && d["links"].as_array().expect("links").iter().any(|l| {
                    l["peer"].as_str().is_some_and(|p| p.contains(peer))
                        && l["kind"] == kind
                        && l["up"] == true
                })
        })
}

#[test]
fn cluster_up_starts_each_sites_router_and_a_dedicated_router_machine_runs_no_daemon() {
    // robot (site lab) behind `gw`, a dedicated router machine; gpu (site cloud) is its own
    // site's router.
    let hosts = require_hosts!("cluster_up_sites", 3);
    let fleet = Fleet::new(hosts, "ADORA_E2E_SITES_TEST", TIMEOUT);
    let ip = |i: usize| fleet.hosts.host(i).ip().to_string();
    let mut yaml = format!(
        "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
        fleet.hosts.gateway_ip(),
        fleet.port
    );
    for (i, id) in ["robot", "gw", "gpu"].iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ id: {id}, host: {}, user: root, install_dir: {}, state_dir: {} }}\n",
            ip(i),
            bin_dir().display(),
            fleet.machine_dir(id).display()
        ));
    }
    yaml.push_str(
        "sites:\n  lab: { machines: [robot], router: { machine: gw } }\n  cloud: { machines: [gpu], router: { machine: gpu } }\n",
    );
    let cluster = fleet.dir.path().join("cluster.yml");
    std::fs::write(&cluster, yaml).unwrap();

    let out = fleet.cluster("up", &cluster, &[]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("runs only a site's router"), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "Starting the router of site lab on gw (root@{})",
            ip(1)
        )),
        "{out}"
    );
    assert!(out.stdout.contains("port 7448... OK"), "{out}");
    assert!(out.stdout.contains("All 2 daemons connected."), "{out}");
    // The dedicated router machine enrolled on its own and runs no daemon.
    let gw = fleet.machine_dir("gw");
    assert!(gw.join("identity/gw/daemon.pem").exists());
    assert!(!gw.join("daemon.pid").exists());
    assert!(
        wait_until(Duration::from_secs(30), || {
            fleet_link_up(&fleet, "robot", &ip(1), "router")
                && fleet_link_up(&fleet, "gpu", &ip(2), "router")
                && fleet_link_up(&fleet, "robot", "cloud", "site")
                && fleet_link_up(&fleet, "gpu", "lab", "site")
        }),
        "{}",
        fleet.ok(&["cluster", "status", "--links"])
    );

    // Data from one site to the other goes through the two routers.
    let flow = fleet.dir.path().join("pair.yml");
    std::fs::write(
        &flow,
        seq_flow(100, 10, &[("sender", "robot"), ("sink", "gpu")]),
    )
    .unwrap();
    let out = fleet.ok(&[
        "start",
        flow.to_str().unwrap(),
        "--attach",
        "--name",
        "pair",
    ]);
    assert!(out.stdout.contains("received=100 lost=0 next=100"), "{out}");

    let down = fleet.cluster("down", &cluster, &[]);
    assert!(down.status.success(), "{down}");
    assert!(
        down.stdout.contains("Router of site lab on gw: stopped"),
        "{down}"
    );
    assert!(
        down.stdout.contains("Router of site cloud on gpu: stopped"),
        "{down}"
    );
}
