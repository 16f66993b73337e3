use super::*;

fn latency(size: usize, p50: u64) -> Report {
    Report {
        transport: "adora".into(),
        size,
        phase: Phase::Latency,
        sent: 1,
        received: 1,
        bad: 0,
        latency_ns: Summary::of(vec![p50]),
        msgs_per_s: None,
        mib_per_s: None,
    }
}

fn results(rows: &[(&str, Vec<Report>)]) -> Results {
    let machine = Machine {
        cpu: "test".into(),
        cores: 1,
    };
    let plan = Plan {
        sizes: vec![8, 4 << 10],
        ..Plan::quick()
    };
    let mut results = Results::new(machine, plan, 1);
    for (transport, reports) in rows {
        results.add(transport, reports.clone());
    }
    results
}

#[test]
fn python_rows_are_compared_with_rust_of_the_same_run() {
    let results = results(&[
        (RUST, vec![latency(8, 100_000), latency(4 << 10, 100_000)]),
        (PYTHON, vec![latency(8, 120_000), latency(4 << 10, 200_000)]),
        (RUST_TO_PYTHON, vec![latency(8, 110_000)]),
    ]);
    let table = results.table();
    assert!(
        table.contains("8 B  python   1.20x  rust-to-python   1.10x"),
        "{table}"
    );
    assert!(
        table.contains("4 KiB  python   2.00x  rust-to-python       -"),
        "{table}"
    );
    assert!(table.contains("worst 2.00x at 4 KiB -> missed"), "{table}");
}

#[test]
fn no_python_comparison_without_both_sides() {
    let results = results(&[(PYTHON, vec![latency(8, 1)])]);
    assert_eq!(results.python_vs_rust(), "");
}

fn throughput(size: usize, msgs_per_s: f64, sent: u64, received: u64) -> Report {
    Report {
        phase: Phase::Throughput,
        sent,
        received,
        latency_ns: None,
        msgs_per_s: Some(msgs_per_s),
        mib_per_s: Some(msgs_per_s * size as f64 / f64::from(1 << 20)),
        ..latency(size, 0)
    }
}

#[test]
fn rounds_report_each_figures_median_and_the_ratio_of_the_medians() {
    let machine = Machine {
        cpu: "test".into(),
        cores: 1,
    };
    let plan = Plan {
        sizes: vec![8],
        ..Plan::quick()
    };
    let mut results = Results::new(machine, plan, 3);
    // Three rounds, alternating as the runner does; one of them disturbed.
    for (raw, adora, adora_rate) in [
        (40_000, 44_000, 800.0),
        (90_000, 45_000, 100.0),
        (50_000, 60_000, 1000.0),
    ] {
        results.add("raw", vec![latency(8, raw), throughput(8, 1000.0, 10, 10)]);
        results.add(
            RUST,
            vec![latency(8, adora), throughput(8, adora_rate, 10, 9)],
        );
    }
    let raw = results.row("raw", 8).expect("raw measured");
    let adora = results.row(RUST, 8).expect("adora measured");
    assert_eq!(raw.latency.map(|s| (s.p50, s.samples)), Some((50_000, 3)));
    assert_eq!(adora.latency.map(|s| s.p50), Some(45_000));
    assert_eq!(adora.msgs_per_s, Some(800.0));
    assert_eq!((adora.sent, adora.received), (30, 27));
    let table = results.table();
    assert!(table.contains("the median of 3 rounds"), "{table}");
    assert!(
        table.contains("0.90x      0.80x"),
        "45 µs / 50 µs, 800 / 1000: {table}"
    );
    assert!(table.contains("(3 dropped)"), "{table}");
    assert!(results.csv().contains("the median of 3 rounds"));
}

#[test]
fn an_even_number_of_rounds_takes_the_mean_of_the_middle_two() {
    assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(vec![]), None);
    let summaries = [Summary::of(vec![10, 20]), Summary::of(vec![30, 40])];
    let summaries: Vec<Summary> = summaries.into_iter().flatten().collect();
    let merged = median_summary(&summaries).expect("two rounds");
    assert_eq!((merged.min, merged.max, merged.samples), (20, 30, 4));
}

#[test]
fn a_network_placement_measured_in_several_rounds_is_compared_once() {
    let mut results = results(&[]);
    for p50 in [100_000, 120_000] {
        results.add_network(
            "two-daemons",
            crate::distributed::Measured {
                adora: vec![latency(8, p50)],
                zenoh: vec![latency(8, 100_000)],
                tcp: vec![latency(8, 50_000)],
            },
        );
    }
    let table = results.table();
    let heading = "two-daemons against plain Zenoh and plain TCP";
    assert_eq!(table.matches(heading).count(), 1, "{table}");
    // The median of 100 and 120 µs over plain Zenoh's 100 µs.
    assert!(table.contains("1.10x"), "{table}");
}
