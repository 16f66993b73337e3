//! The benchmarks in quick mode (CI): `adora-bench` runs end to end with the debug binaries and
//! prints the rows and CSV it promises. No timing is asserted, only that every figure is there.

use std::time::Duration;

use adora_test_support::{bin, run_with_timeout, temp_dir, Output};

/// Upper bound of one quick benchmark run in a debug build.
const TIMEOUT: Duration = Duration::from_secs(180);

fn bench(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin("adora-bench"));
    cmd.args(args)
        .args(["--adora", bin("adora").to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "adora-bench {args:?} failed:\n{out}");
    out
}

/// The CSV rows (without `#` comments) split into fields, header first.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn data_plane_quick_mode_measures_every_size_on_every_placement() {
    let dir = temp_dir();
    let csv = dir.path().join("bench.csv");
    let out = bench(&[
        "--quick",
        "--placement",
        "same-daemon",
        "--placement",
        "two-daemons",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.stdout.contains("adora-bench: CPU"), "{out}");
    assert!(out.stdout.contains("p50 µs"), "{out}");
    assert!(!out.stderr.contains("skipped"), "{out}");

    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("# adora-bench: CPU"), "{text}");
    let rows = csv_rows(&text);
    assert_eq!(rows[0][0], "transport");
    assert_eq!(rows[0].len(), 15, "{:?}", rows[0]);
    let sizes: Vec<&str> = rows[1..]
        .iter()
        .filter(|r| r[0] == "raw")
        .map(|r| r[1].as_str())
        .collect();
    assert!(
        sizes.contains(&"0") && sizes.contains(&"65536"),
        "{sizes:?}"
    );
    // The network baselines of `two-daemons` ran in the same run, with Adora's ratios to them.
    assert!(
        out.stdout
            .contains("two-daemons against plain Zenoh and plain TCP between the same two places"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("p50 <= 1.1x plain Zenoh at every size: worst"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("p50 <= 3x plain TCP at 8 B and 64 KiB: worst"),
        "{out}"
    );
    for transport in [
        "raw",
        "same-daemon",
        "two-daemons",
        "two-daemons zenoh",
        "two-daemons tcp",
    ] {
        let measured: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == transport).collect();
        assert_eq!(measured.len(), sizes.len(), "{transport} rows in\n{text}");
        for row in measured {
            assert_eq!(row.len(), 15, "{row:?}");
            // Latency p50 and messages per second are figures, corruption count is zero.
            assert!(row[4].parse::<f64>().is_ok(), "{row:?}");
            assert!(row[8].parse::<f64>().is_ok(), "{row:?}");
            assert_eq!(row[12], "0", "{row:?}");
        }
    }
}

/// `--rounds`: the baseline and Adora measured again in turn, each figure the median of the
/// rounds, the samples of every round counted.
#[test]
fn rounds_alternate_the_baseline_and_adora_and_count_every_sample() {
    let dir = temp_dir();
    let csv = dir.path().join("rounds.csv");
    let out = bench(&[
        "--quick",
        "--rounds",
        "2",
        "--sizes",
        "8,64K",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.stderr.contains("round 2 of 2"), "{out}");
    assert_eq!(
        out.stderr.matches("running the raw baseline").count(),
        2,
        "{out}"
    );
    assert!(out.stdout.contains("the median of 2 rounds"), "{out}");
    let rows = csv_rows(&std::fs::read_to_string(&csv).unwrap());
    for transport in ["raw", "same-daemon"] {
        let measured: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == transport).collect();
        assert_eq!(measured.len(), 2, "{transport}: {rows:?}");
        for row in measured {
            // 20 timed samples per size and round (quick mode), nothing corrupted.
            assert_eq!(row[2], "40", "{row:?}");
            assert_eq!(row[12], "0", "{row:?}");
        }
    }
    let refused = std::process::Command::new(bin("adora-bench"))
        .args(["--rounds", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--rounds"),
        "{refused:?}"
    );
}

/// The fan-out placement with a chosen number of sinks: each size's row is the slowest sink's.
#[test]
fn fan_out_runs_the_number_of_sinks_asked_for() {
    let dir = temp_dir();
    let csv = dir.path().join("fan-out.csv");
    let out = bench(&[
        "--quick",
        "--no-baseline",
        "--placement",
        "fan-out",
        "--fan-out-sinks",
        "3",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.stdout.contains("fan-out x3"), "{out}");
    let rows = csv_rows(&std::fs::read_to_string(&csv).unwrap());
    let measured: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "fan-out x3").collect();
    assert!(!measured.is_empty(), "{rows:?}");
    for row in measured {
        // A latency figure for the slowest sink, and nothing corrupted.
        assert!(row[4].parse::<f64>().is_ok(), "{row:?}");
        assert_eq!(row[12], "0", "{row:?}");
    }
}

/// The `python` placement: Python sender → Python sink and Rust sender → Python sink, next to
/// Rust → Rust, with their p50 over Rust's. Needs the `adora` Python package (scripts/test.sh
/// installs it); without it the placement is skipped and this test fails saying so.
#[test]
fn data_plane_quick_mode_measures_python_nodes_next_to_rust() {
    let dir = temp_dir();
    let csv = dir.path().join("bench.csv");
    let out = bench(&[
        "--quick",
        "--no-baseline",
        "--placement",
        "same-daemon",
        "--placement",
        "python",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(!out.stderr.contains("skipped"), "{out}");
    assert!(
        out.stdout
            .contains("p50 / same-daemon p50 (Rust -> Rust of this run):"),
        "{out}"
    );
    assert!(
        out.stdout.contains("python p50 <= 1.5x same-daemon"),
        "{out}"
    );

    let text = std::fs::read_to_string(&csv).unwrap();
    let rows = csv_rows(&text);
    let sizes: Vec<&str> = rows[1..]
        .iter()
        .filter(|r| r[0] == "same-daemon")
        .map(|r| r[1].as_str())
        .collect();
    assert!(sizes.contains(&"65536"), "{sizes:?}");
    for transport in ["python", "rust-to-python"] {
        let measured: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == transport).collect();
        assert_eq!(measured.len(), sizes.len(), "{transport} rows in\n{text}");
        for row in measured {
            // Latency p50 and messages per second are figures, corruption count is zero.
            assert!(row[4].parse::<f64>().is_ok(), "{row:?}");
            assert!(row[8].parse::<f64>().is_ok(), "{row:?}");
            assert_eq!(row[12], "0", "{row:?}");
        }
    }
}

#[test]
fn control_plane_quick_mode_measures_starts_and_a_simulated_fleet() {
    let dir = temp_dir();
    let csv = dir.path().join("control.csv");
    let out = bench(&[
        "control-plane",
        "--quick",
        "--simulated-daemons",
        "20",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.stdout.contains("adora-bench control-plane: CPU"),
        "{out}"
    );
    assert!(out.stdout.contains("all running ms"), "{out}");
    assert!(
        out.stdout
            .contains("coordinator with 20 simulated daemons (100 nodes"),
        "{out}"
    );
    assert!(out.stdout.contains("100 nodes reported running"), "{out}");

    let text = std::fs::read_to_string(&csv).unwrap();
    let rows = csv_rows(&text);
    assert_eq!(rows[0][0], "measurement");
    assert_eq!(rows[0].len(), 14, "{:?}", rows[0]);
    let starts: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r[0] == "start")
        .map(|r| (r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        starts,
        [("10", "1"), ("100", "1"), ("10", "3"), ("100", "3")],
        "{text}"
    );
    for row in rows.iter().filter(|r| r[0] == "start") {
        for field in &row[4..8] {
            assert!(field.parse::<f64>().is_ok(), "{row:?}");
        }
    }
    let fleet = rows
        .iter()
        .find(|r| r[0] == "simulated-daemons")
        .unwrap_or_else(|| panic!("no fleet row in\n{text}"));
    assert_eq!((fleet[1].as_str(), fleet[2].as_str()), ("100", "20"));
    for field in &fleet[9..14] {
        assert!(field.parse::<f64>().is_ok(), "{fleet:?}");
    }
    // The quick window (6 s) is longer than the heartbeat interval (5 s).
    assert!(
        fleet[13].parse::<u64>().unwrap() >= 20,
        "too few heartbeats: {fleet:?}"
    );
}

#[test]
fn data_plane_quick_mode_compares_runs_with_and_without_a_recorder() {
    let out = bench(&["--quick", "--no-baseline", "--record", "--sizes", "8,4K"]);
    assert!(
        out.stdout
            .contains("recording: same-daemon with a recorder attached"),
        "{out}"
    );
    for size in ["8 B", "4 KiB"] {
        let row = out
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("recording:"))
            .find(|l| l.trim_start().starts_with(size))
            .unwrap_or_else(|| panic!("no {size} row in the recording table:\n{out}"));
        // size (2 words), p50, p50 recorded, ratio, msgs/s, msgs/s recorded, ratio, recorder MiB/s
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields.len(), 9, "{row}");
        assert!(
            fields[4].ends_with('x') && fields[7].ends_with('x'),
            "{row}"
        );
    }
    assert!(out.stdout.contains("recorder: "), "{out}");
    assert!(out.stderr.contains("dropped: none"), "{out}");
}
