//! `adora-fuzz`: runs every fuzz target (or one) and prints, per target, cases, cases/s and
//! findings with what replays each.
//!
//! ```text
//! cargo run -p adora-fuzz --release -- [--cases N] [--target NAME] [--seed S] [--case N]
//!                                      [--time-limit-ms MS] [--list]
//! ```

use std::{process::ExitCode, time::Duration};

use adora_fuzz::{find, run_on_case_stack, Report, RunConfig, Target, TARGETS};

const USAGE: &str = "usage: adora-fuzz [--cases N] [--target NAME] [--seed S] [--case N] \
                     [--time-limit-ms MS] [--list]";

struct Args {
    config: RunConfig,
    targets: Vec<&'static Target>,
    list: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut config = RunConfig {
        cases: 1_000_000,
        seed: 1,
        start: 0,
        time_limit: Duration::from_millis(1000),
    };
    let mut targets = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{text}: {e}"));
        match arg.as_str() {
            "--cases" => config.cases = number(value("--cases")?)?,
            "--seed" => config.seed = number(value("--seed")?)?,
            "--case" => {
                config.start = number(value("--case")?)?;
                config.cases = 1;
            }
            "--time-limit-ms" => {
                config.time_limit = Duration::from_millis(number(value("--time-limit-ms")?)?)
            }
            "--target" => {
                let name = value("--target")?;
                targets
                    .push(find(&name).ok_or_else(|| format!("no target `{name}` (see --list)"))?);
            }
            "--list" => list = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().collect();
    }
    Ok(Args {
        config,
        targets,
        list,
    })
}

fn print_report(report: &Report, seed: u64) {
    println!(
        "{:<24} {:>9} cases {:>9.0} cases/s {:>8.1} s  slowest {:>7.1} ms (case {})  findings {}",
        report.target,
        report.cases,
        report.rate(),
        report.elapsed.as_secs_f64(),
        report.slowest.0.as_secs_f64() * 1e3,
        report.slowest.1,
        report.finding_count,
    );
    for f in &report.findings {
        println!(
            "  {:?} (replay: --target {} --seed {seed} --case {}): {}",
            f.kind, f.target, f.case, f.message
        );
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        for t in TARGETS {
            println!("{:<24} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "adora-fuzz: {} cases per target from case {}, seed {}, time limit {:?} per case",
        args.config.cases, args.config.start, args.config.seed, args.config.time_limit
    );
    let mut findings = 0;
    for target in args.targets {
        let report = run_on_case_stack(target, args.config.clone());
        print_report(&report, args.config.seed);
        findings += report.finding_count;
    }
    if findings > 0 {
        println!("{findings} findings");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
