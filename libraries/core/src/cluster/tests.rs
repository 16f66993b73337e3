use std::path::Path;

use super::*;
use crate::resources::MachineLimits;

fn parse(yaml: &str) -> Result<ClusterConfig, Vec<(Option<usize>, String, String)>> {
    ClusterConfig::parse(yaml, Path::new("cluster.yml")).map_err(|e| {
        e.0.into_iter()
            .map(|e| (e.line, e.field.unwrap_or_default(), e.message))
            .collect()
    })
}

#[test]
fn full_example_parses_with_defaults() {
    let c = parse(
        "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: robot, host: 10.0.0.2, user: ubuntu, labels: { arch: arm64 } }\n  - id: gpu\n    host: gpu.example.org\n    ssh_port: 2222\n    identity_file: ~/.ssh/k\n    install_dir: /opt/adora/bin\n",
    )
    .expect("valid");
    assert_eq!(c.coordinator.port, 6013);
    assert_eq!(c.machines.len(), 2);
    assert_eq!(c.machines[0].destination(), "ubuntu@10.0.0.2");
    assert_eq!(c.machines[0].labels_arg().as_deref(), Some("arch=arm64"));
    assert_eq!(c.machines[1].ssh_port, Some(2222));
    assert_eq!(
        c.machine("gpu").and_then(|m| m.install_dir.as_deref()),
        Some("/opt/adora/bin")
    );
    let back: ClusterConfig =
        serde_yaml::from_str(&serde_yaml::to_string(&c).expect("ser")).expect("de");
    assert_eq!(back, c);
}

#[test]
fn every_error_is_reported_with_field_and_line() {
    let errors = parse(
        "coordinator:\n  addr: ''\n  prot: 1\nmachines:\n  - id: a\n    host: h1\n  - id: a\n    host: ''\n    labels: { gpu: true }\n  - host: h3\n    sshport: 22\n  - id: 'bad id'\n    host: h4\n    ssh_port: 70000\nextra: 1\n",
    )
    .expect_err("invalid");
    let has = |line: usize, field: &str, msg: &str| {
        assert!(
            errors
                .iter()
                .any(|(l, f, m)| *l == Some(line) && f == field && m.contains(msg)),
            "missing error at line {line} on {field}: {msg}\nall: {errors:#?}"
        )
    };
    has(2, "coordinator.addr", "expected a non-empty host");
    has(3, "coordinator.prot", "did you mean `port`?");
    has(
        7,
        "machines[1].id",
        "duplicate machine id `a` (also machines[0])",
    );
    has(8, "machines[1].host", "host must not be empty");
    has(9, "machines[1].labels.gpu", "must be strings");
    has(11, "machines[2].sshport", "did you mean `ssh_port`?");
    has(12, "machines[3].id", "invalid machine id `bad id`");
    has(14, "machines[3].ssh_port", "between 1 and 65535");
    has(15, "extra", "unknown field `extra`");
    assert!(
        errors
            .iter()
            .any(|(_, f, m)| f == "machines[2].id" && m.contains("missing required field `id`")),
        "{errors:#?}"
    );
    assert_eq!(errors.len(), 10, "{errors:#?}");
}

#[test]
fn empty_and_missing_machines_are_errors() {
    let e = parse("coordinator: { addr: x }\nmachines: []\n").expect_err("empty");
    assert_eq!(
        e,
        vec![(
            Some(2),
            "machines".into(),
            "a cluster needs at least one machine".into()
        )]
    );
    let e = parse("coordinator: { addr: x }\n").expect_err("missing");
    assert!(e[0].2.contains("at least one machine"), "{e:?}");
    let e = parse("machines: [{ id: a, host: b }]\n").expect_err("no coordinator");
    assert!(
        e[0].2.contains("missing required field `coordinator`"),
        "{e:?}"
    );
    let e = parse("machines: [oops\n").expect_err("yaml");
    assert!(e[0].2.starts_with("invalid YAML"), "{e:?}");
}

#[test]
fn thresholds_parse_into_the_daemons_limits() {
    let c = parse(
        "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - id: robot\n    host: h\n    max_cpu_percent: 90\n    max_memory_percent: 85\n    min_disk_free: 5GiB\n  - { id: plain, host: h2 }\n",
    )
    .expect("valid");
    assert_eq!(
        c.machines[0].limits(),
        MachineLimits {
            max_cpu_percent: Some(90),
            max_memory_percent: Some(85),
            min_disk_free: Some(5 << 30),
        }
    );
    assert!(c.machines[1].limits().is_none());
    let back: ClusterConfig =
        serde_yaml::from_str(&serde_yaml::to_string(&c).expect("ser")).expect("de");
    assert_eq!(back, c);
}

#[test]
fn bad_thresholds_are_reported_with_their_line() {
    let errors = parse(
        "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - id: robot\n    host: h\n    max_cpu_percent: 0\n    max_memory_percent: 150\n    min_disk_free: 5 parsecs\n  - id: b\n    host: h\n    max_cpu_percent: 90.5\n    min_disk_free: -1\n    max_disk: 1\n",
    )
    .expect_err("invalid");
    let expected = [
        (
            5,
            "machines[0].max_cpu_percent",
            "expected a whole percent from 1 to 100",
        ),
        (
            6,
            "machines[0].max_memory_percent",
            "expected a whole percent from 1 to 100",
        ),
        (7, "machines[0].min_disk_free", "invalid size"),
        (
            10,
            "machines[1].max_cpu_percent",
            "expected a whole percent from 1 to 100",
        ),
        (
            11,
            "machines[1].min_disk_free",
            "expected a size like `5GiB`",
        ),
        (12, "machines[1].max_disk", "unknown field `max_disk`"),
    ];
    for (line, field, message) in expected {
        assert!(
            errors
                .iter()
                .any(|(l, f, m)| *l == Some(line) && f == field && m.contains(message)),
            "missing error at line {line} on {field}: {message}\nall: {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

const TWO_SITES: &str = "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: robot, host: 10.1.0.2 }\n  - { id: gw, host: 10.1.0.1 }\n  - { id: gpu, host: 'fd00::2' }\n  - { id: loose, host: 10.0.0.9 }\nsites:\n  lab:\n    machines: [robot]\n    router: { machine: gw }\n  cloud:\n    machines: [gpu]\n    router: { machine: gpu, port: 7500 }\n";

#[test]
fn sites_group_machines_behind_routers() {
    let c = parse(TWO_SITES).expect("valid");
    let (name, lab) = c.site_of("robot").expect("robot is in a site");
    assert_eq!(name, "lab");
    assert_eq!(lab.router.port, DEFAULT_ROUTER_PORT);
    assert_eq!(
        c.router_endpoint(lab, "tls").as_deref(),
        Some("tls/10.1.0.1:7448")
    );
    let (_, cloud) = c.site_of("gpu").expect("gpu is in a site");
    assert_eq!(
        c.router_endpoint(cloud, "tcp").as_deref(),
        Some("tcp/[fd00::2]:7500")
    );
    // A dedicated router machine runs no daemon; a machine in no site routing none does.
    assert!(!c.runs_daemon("gw"));
    assert!(c.runs_daemon("gpu") && c.runs_daemon("robot") && c.runs_daemon("loose"));
    assert_eq!(c.routed_by("gpu").count(), 1);
    let back: ClusterConfig =
        serde_yaml::from_str(&serde_yaml::to_string(&c).expect("ser")).expect("de");
    assert_eq!(back, c);
}

#[test]
fn every_site_error_names_its_field() {
    let errors = parse(
        "coordinator: { addr: x }\nmachines:\n  - { id: a, host: h }\n  - { id: b, host: h2 }\nsites:\n  one:\n    machines: [a, ghost]\n    router: { machine: nowhere, port: 0 }\n    extra: 1\n  two:\n    machines: [a]\n  'bad name':\n    machines: []\n    router: b\n",
    )
    .expect_err("invalid");
    let has = |field: &str, msg: &str| {
        assert!(
            errors.iter().any(|(_, f, m)| f == field && m.contains(msg)),
            "missing error on {field}: {msg}\nall: {errors:#?}"
        )
    };
    has("sites.one.machines[1]", "unknown machine `ghost`");
    has("sites.one.router.machine", "unknown machine `nowhere`");
    has("sites.one.router.port", "between 1 and 65535");
    has("sites.one.extra", "unknown field `extra`");
    has("sites.two.machines[0]", "already in site `one`");
    has("sites.two.router", "missing required field `router`");
    has("sites.bad name", "invalid site name");
    has("sites.bad name.machines", "non-empty list");
    has("sites.bad name.router", "expected a mapping");
    assert_eq!(errors.len(), 9, "{errors:#?}");
    let e = parse("coordinator: { addr: x }\nmachines: [{ id: a, host: h }]\nsites: [a]\n")
        .expect_err("a list");
    assert_eq!(e[0].1, "sites");
    let e = parse("coordinator: { addr: x }\nmachines: [{ id: a, host: h }, { id: b, host: h }]\nsites:\n  s1: { machines: [a], router: { machine: a } }\n  s2: { machines: [b], router: { machine: a } }\n")
        .expect_err("same router port");
    assert_eq!(e[0].1, "sites.s2.router.port", "{e:?}");
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_parsing() {
    let mut yaml = String::from("machines:\n");
    while yaml.len() <= super::MAX_CLUSTER_FILE {
        yaml.push_str("  - id: m\n    host: 10.0.0.1\n");
    }
    let errors = parse(&yaml).expect_err("too large");
    assert!(
        errors
            .iter()
            .any(|(_, _, m)| m.contains("a cluster file is at most 1 MiB")),
        "{errors:?}"
    );
}
