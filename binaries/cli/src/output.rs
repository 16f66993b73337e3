//! Terminal output: colour only on terminals (and never with `NO_COLOR`), node-prefixed log lines,
//! error printing and tracing setup.

use std::io::IsTerminal;

use adora_message::control::{LogStream, NodeLogLine};

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

/// Width of the node-id column of a dataflow's log lines (its longest node id, in terminal
/// columns).
pub fn id_width(descriptor: &adora_core::Descriptor) -> usize {
    descriptor
        .nodes
        .iter()
        .map(|n| display_width(n.id.as_str()))
        .max()
        .unwrap_or(0)
}

/// How many terminal columns `text` takes (not its length in bytes or chars).
pub fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` padded with spaces on the right to `width` terminal columns.
fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(display_width(text));
    format!("{text}{}", " ".repeat(fill))
}

/// Prints a node's log line prefixed with its id: stdout lines on stdout, stderr lines on stderr.
pub fn print_log_line(line: &NodeLogLine, width: usize) {
    let code = PALETTE[line.node.as_str().bytes().map(usize::from).sum::<usize>() % PALETTE.len()];
    let tag = pad(line.node.as_str(), width);
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

/// A yellow "warning" word for stderr, or plain text when not on a terminal.
pub fn warning(text: &str) -> String {
    paint(text, 33, color_stderr())
}

/// A green "ok"-style word, or plain text when not on a terminal.
pub fn success(text: &str) -> String {
    paint(text, 32, color_stdout())
}

/// Sets up `tracing` on stderr. `RUST_LOG` wins; otherwise warnings, or debug with `-v`.
/// Zenoh's TLS link warns on every connection that it skips the server name check, which the
/// daemons turn off on purpose (daemon certificates name no host); only its errors are shown.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},zenoh_link_tls=error"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_stderr())
        .init();
}

/// Spinner frames of [`Progress`].
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// How often the spinner redraws.
const SPINNER_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Progress of one long step on stderr: an animated spinner with the elapsed time when stderr is
/// a terminal, one plain `msg...` line otherwise (logs and CI stay readable).
pub struct Progress {
    message: String,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `message` (needs the tokio runtime for the spinner).
    pub fn start(message: impl Into<String>) -> Self {
        let message = message.into();
        if !std::io::stderr().is_terminal() {
            eprintln!("{message}...");
            return Self {
                message,
                spinner: None,
            };
        }
        let text = message.clone();
        let spinner = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut tick = tokio::time::interval(SPINNER_TICK);
            for frame in SPINNER.iter().cycle() {
                tick.tick().await;
                eprint!(
                    "\r\x1b[2K{frame} {text} ({:.0}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        });
        Self {
            message,
            spinner: Some(spinner),
        }
    }

    /// Ends the step; on a terminal the spinner line becomes `✓ message` (or `✗` on failure).
    pub fn finish(mut self, ok: bool) {
        self.clear(ok);
    }

    fn clear(&mut self, ok: bool) {
        if let Some(spinner) = self.spinner.take() {
            spinner.abort();
            let mark = if ok {
                paint("✓", 32, color_stderr())
            } else {
                paint("✗", 31, color_stderr())
            };
            eprintln!("\r\x1b[2K{mark} {}", self.message);
        }
    }
}

impl Drop for Progress {
    /// A step dropped without `finish` (an error returned early) failed.
    fn drop(&mut self) {
        self.clear(false);
    }
}

/// Prints `value` as pretty JSON and a newline on stdout. A closed pipe (`adora ... --json | head`)
/// is not an error.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prefixes_pad_to_display_width() {
        // `ü` is one column (two bytes), each of `カメラ` two columns (three bytes).
        assert_eq!(pad("süd", 6), "süd   ");
        assert_eq!(pad("カメラ", 6), "カメラ");
        assert_eq!(pad("カメ", 6), "カメ  ");
        assert_eq!(display_width("kamera-süd"), 10);
    }
}
