//! Resource-aware placement: headroom, ties, requests that cannot fit, thresholds, daemons
//! without figures.

use super::*;
use crate::resources::MachineFigures;

const GIB: u64 = 1 << 30;

fn descriptor(yaml: &str) -> Descriptor {
    Descriptor::parse(yaml, std::path::Path::new("dataflow.yml")).expect("valid test descriptor")
}

/// A daemon `name` labelled `pool=a` with `cores` at `cpu_percent`, `free_gib` of 16 GiB
/// available, and `gpus`.
fn machine(
    name: &str,
    cores: u32,
    cpu_percent: f64,
    free_gib: f64,
    gpus: Option<u32>,
) -> Candidate {
    Candidate {
        machine_id: Some(name.into()),
        labels: [("pool".to_owned(), "a".to_owned())].into(),
        figures: Some(MachineFigures {
            cpus: Some(cores),
            cpu_percent: Some(cpu_percent),
            memory_total: Some(16 * GIB),
            memory_available: Some((free_gib * GIB as f64) as u64),
            disk_free: Some(100 * GIB),
            gpus,
        }),
        ..Candidate::default()
    }
}

/// One node per `(id, resources)` placed by the label `pool=a`.
fn nodes(list: &[(&str, &str)]) -> Descriptor {
    let mut yaml = String::from("nodes:\n");
    for (id, resources) in list {
        yaml.push_str(&format!(
            "  - id: {id}\n    path: ./{id}\n    deploy:\n      labels: {{ pool: a }}\n"
        ));
        if !resources.is_empty() {
            yaml.push_str(&format!("      resources: {resources}\n"));
        }
    }
    descriptor(&yaml)
}

fn placed_on(d: &Descriptor, daemons: &[Candidate]) -> Vec<String> {
    let placed = place(d, daemons).expect("placed");
    d.nodes
        .iter()
        .map(|n| daemons[placed[&n.id]].display_name().to_owned())
        .collect()
}

fn failure(d: &Descriptor, daemons: &[Candidate]) -> String {
    let errors = place(d, daemons).expect_err("cannot be placed");
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_request_goes_to_the_most_headroom() {
    let daemons = [
        machine("small", 4, 10.0, 5.0, None),
        machine("roomy", 4, 10.0, 12.0, None),
    ];
    let d = nodes(&[("detector", "{ memory: 4GiB }")]);
    assert_eq!(placed_on(&d, &daemons), ["roomy"]);
    // CPU: 8 cores at 50% leave 4; 4 cores at 10% leave 3.6 — but as a fraction of the
    // machine, the small one keeps more free once 2 cores are taken (1.6/4 > 2/8).
    let daemons = [
        machine("big", 8, 50.0, 8.0, None),
        machine("small", 4, 10.0, 8.0, None),
    ];
    let d = nodes(&[("worker", "{ cpus: 2 }")]);
    assert_eq!(placed_on(&d, &daemons), ["small"]);
}

#[test]
fn headroom_is_the_tightest_requested_resource() {
    // `cpu-rich` has many free cores but little memory; memory decides for a node that asks for
    // both.
    let daemons = [
        machine("cpu-rich", 16, 0.0, 5.0, None),
        machine("mem-rich", 4, 50.0, 14.0, None),
    ];
    let d = nodes(&[("a", "{ cpus: 1, memory: 4GiB }")]);
    assert_eq!(placed_on(&d, &daemons), ["mem-rich"]);
}

#[test]
fn ties_go_to_the_daemon_registered_first() {
    let daemons = [
        machine("first", 4, 25.0, 8.0, None),
        machine("second", 4, 25.0, 8.0, None),
    ];
    let d = nodes(&[("a", "{ memory: 1GiB }")]);
    assert_eq!(placed_on(&d, &daemons), ["first"]);
    let swapped = [daemons[1].clone(), daemons[0].clone()];
    assert_eq!(placed_on(&d, &swapped), ["second"]);
}

#[test]
fn nodes_placed_earlier_count_against_their_daemon() {
    // 10 GiB free on `a`, 8 on `b`: the first 4 GiB node goes to `a` (6 left), the second to
    // `b` (8 free beats 6), the third to `a` again (6 vs 4), the fourth nowhere (2 and 4 left,
    // 5 asked).
    let daemons = [
        machine("a", 4, 0.0, 10.0, None),
        machine("b", 4, 0.0, 8.0, None),
    ];
    let d = nodes(&[
        ("one", "{ memory: 4GiB }"),
        ("two", "{ memory: 4GiB }"),
        ("three", "{ memory: 4GiB }"),
    ]);
    assert_eq!(placed_on(&d, &daemons), ["a", "b", "a"]);
    let d = nodes(&[
        ("one", "{ memory: 4GiB }"),
        ("two", "{ memory: 4GiB }"),
        ("three", "{ memory: 4GiB }"),
        ("four", "{ memory: 5GiB }"),
    ]);
    assert_eq!(
        failure(&d, &daemons),
        "node `four`: no machine can take it: a: memory 2.0 GiB free < 5.0 GiB requested; \
         b: memory 4.0 GiB free < 5.0 GiB requested"
    );
}

#[test]
fn running_nodes_requests_count_even_when_not_measured_yet() {
    // `a` measures 12 GiB available, but running nodes asked for 10 of its 16 GiB.
    let mut a = machine("a", 4, 0.0, 12.0, Some(2));
    a.reserved = Reserved {
        cpus: 0.0,
        memory: 10 * GIB,
        gpus: 2,
    };
    let daemons = [a, machine("b", 4, 0.0, 7.0, Some(1))];
    let d = nodes(&[("m", "{ memory: 4GiB }"), ("g", "{ gpus: 1 }")]);
    assert_eq!(placed_on(&d, &daemons), ["b", "b"]);
}

#[test]
fn a_request_that_fits_nowhere_names_every_machine_and_resource() {
    let daemons = [
        machine("robot", 4, 20.0, 3.1, None),
        machine("gpu-1", 8, 20.0, 12.0, Some(0)),
    ];
    let d = nodes(&[("detector", "{ memory: 4GiB, gpus: 1 }")]);
    assert_eq!(
        failure(&d, &daemons),
        "node `detector`: no machine can take it: robot: memory 3.1 GiB free < 4.0 GiB \
         requested, no GPUs reported (no working nvidia-smi); gpu-1: 0 GPUs free < 1 requested"
    );
    // 3.5 cores: robot has 3.2 free (4 at 20%), gpu-1 6.4.
    let d = nodes(&[("cruncher", "{ cpus: 3.5 }")]);
    assert_eq!(placed_on(&d, &daemons), ["gpu-1"]);
    assert_eq!(
        failure(&d, &daemons[..1]),
        "node `cruncher`: no machine can take it: robot: cpu 3.2 cores free < 3.5 requested"
    );
}

#[test]
fn thresholds_keep_new_nodes_away() {
    let mut busy = machine("busy", 4, 93.0, 8.0, None);
    busy.limits.max_cpu_percent = Some(90);
    let calm = machine("calm", 4, 10.0, 8.0, None);
    // A node without requests skips the machine above its threshold...
    let d = nodes(&[("plain", "")]);
    assert_eq!(placed_on(&d, &[busy.clone(), calm.clone()]), ["calm"]);
    // ...and fails, with the reason, when no other matches.
    assert_eq!(
        failure(&d, std::slice::from_ref(&busy)),
        "node `plain`: no machine can take it: busy: above its threshold: cpu 93% > 90%"
    );
    // A threshold also caps the capacity a request can use: 80% of 16 GiB with 8 GiB in use
    // leaves 4.8 GiB.
    let mut capped = machine("capped", 4, 10.0, 8.0, None);
    capped.limits.max_memory_percent = Some(80);
    let d = nodes(&[("m", "{ memory: 5GiB }")]);
    assert_eq!(
        failure(&d, &[capped]),
        "node `m`: no machine can take it: capped: memory 4.8 GiB free < 5.0 GiB requested"
    );
    let mut disk = machine("disk", 4, 10.0, 8.0, None);
    disk.limits.min_disk_free = Some(200 * GIB);
    assert!(failure(&nodes(&[("p", "")]), &[disk])
        .ends_with("disk: above its threshold: disk 100.0 GiB free < 200.0 GiB"));
}

#[test]
fn a_daemon_without_figures_takes_plain_nodes_but_no_requests() {
    let fresh = Candidate {
        machine_id: Some("fresh".into()),
        labels: [("pool".to_owned(), "a".to_owned())].into(),
        ..Candidate::default()
    };
    let daemons = [fresh, machine("known", 4, 10.0, 8.0, None)];
    assert_eq!(placed_on(&nodes(&[("plain", "")]), &daemons), ["fresh"]);
    assert_eq!(
        placed_on(&nodes(&[("m", "{ memory: 1GiB }")]), &daemons),
        ["known"]
    );
    assert_eq!(
        failure(&nodes(&[("m", "{ memory: 1GiB }")]), &daemons[..1]),
        "node `m`: no machine can take it: fresh: no resource figures reported yet"
    );
}

#[test]
fn a_pinned_node_must_fit_its_machine() {
    let d = descriptor(
        "nodes:\n  - id: a\n    path: ./a\n    deploy: { machine: robot, resources: { gpus: 1 } }\n",
    );
    let daemons = [machine("robot", 4, 10.0, 8.0, Some(1))];
    assert_eq!(place(&d, &daemons).expect("fits")[&NodeId::from("a")], 0);
    let daemons = [machine("robot", 4, 10.0, 8.0, Some(0))];
    assert_eq!(
        failure(&d, &daemons),
        "node `a`: no machine can take it: robot: 0 GPUs free < 1 requested"
    );
}

#[test]
fn the_root_deploy_requests_apply_to_every_node() {
    let d = descriptor(
        "deploy: { labels: { pool: a }, resources: { memory: 6GiB } }\nnodes:\n  - id: a\n    path: ./a\n  - id: b\n    path: ./b\n    deploy: { machine: m2 }\n",
    );
    let daemons = [
        machine("m1", 4, 0.0, 10.0, None),
        machine("m2", 4, 0.0, 5.0, None),
    ];
    let errors = place(&d, &daemons).expect_err("b asks for 6 GiB on m2");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].node.as_str(), "b");
}

#[test]
fn a_nodes_own_resources_replace_the_root_ones_as_a_whole() {
    let d = descriptor(
        "deploy: { labels: { pool: a }, resources: { memory: 6GiB, cpus: 1 } }\nnodes:\n  - id: a\n    path: ./a\n  - id: b\n    path: ./b\n    deploy: { resources: { gpus: 1 } }\n",
    );
    let a = d.nodes[0].deploy();
    assert_eq!(a.resources.and_then(|r| r.memory()), Some(6 * GIB));
    let b = d.nodes[1].deploy();
    assert_eq!(b.labels.get("pool").map(String::as_str), Some("a"));
    let requests = b.resources.expect("its own");
    assert_eq!(
        (requests.gpus(), requests.memory(), requests.cpus()),
        (Some(1), None, None)
    );
}
