//! Terminal output: colour only on terminals (and never with `NO_COLOR`), node-prefixed log lines,
//! error printing and tracing setup.

use std::io::IsTerminal;

use adora_daemon::{LogLine, LogStream};

/// True when stdout is a terminal and `NO_COLOR` is unset.
pub fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// True when stderr is a terminal and `NO_COLOR` is unset.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

const PALETTE: [u8; 6] = [36, 32, 33, 35, 34, 31];

fn paint(text: &str, code: u8, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Prints a node's log line prefixed with its id: stdout lines on stdout, stderr lines on stderr.
pub fn print_log_line(line: &LogLine, width: usize) {
    let code = PALETTE[line.node.as_str().bytes().map(usize::from).sum::<usize>() % PALETTE.len()];
    let tag = format!("{:<width$}", line.node.as_str());
    match line.stream {
        LogStream::Stdout => println!("{} | {}", paint(&tag, code, color_stdout()), line.line),
        LogStream::Stderr => eprintln!("{} | {}", paint(&tag, code, color_stderr()), line.line),
    }
}

/// Prints `error: ...` with its causes to stderr.
pub fn print_error(e: &anyhow::Error) {
    let head = paint("error", 31, color_stderr());
    eprintln!("{head}: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// A green "ok"-style word, or plain text when not on a terminal.
pub fn success(text: &str) -> String {
    paint(text, 32, color_stdout())
}

/// Sets up `tracing` on stderr. `RUST_LOG` wins; otherwise warnings, or debug with `-v`.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_stderr())
        .init();
}
