//! The daemon's own log, read for `adora logs --daemon MACHINE`: the journal of its systemd
//! unit (`journalctl -u <unit> -o cat`), else the file its output goes to (`cluster up` and
//! `adora up` redirect it to `daemon.log` / `daemon-<MACHINE>.log`).

use std::{
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use adora_message::{
    control::{ControlError, ErrorKind},
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::event::Reports;

/// How often a followed log file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Most lines sent in one `ServiceLog` message.
const CHUNK_LINES: usize = 256;

/// Where the daemon's own log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The journal of this systemd unit.
    Journal(String),
    /// A file the daemon's stderr is redirected to.
    File(PathBuf),
}

/// Finds this daemon's log, or says where it looked.
pub(crate) fn source() -> Result<Source, String> {
    if let Some(unit) = crate::coordinator::systemd_unit() {
        return Ok(Source::Journal(unit));
    }
    let stderr = std::fs::read_link("/proc/self/fd/2");
    match &stderr {
        Ok(path) if path.is_absolute() && path.is_file() => Ok(Source::File(path.clone())),
        _ => Err(format!(
            "this daemon has no log to read: it does not run as a systemd unit (no \
             INVOCATION_ID or no .service in /proc/self/cgroup) and its stderr is not a log \
             file (it is {}); its output went wherever it was started (`cluster up` writes \
             <state_dir>/daemon.log, `cluster install` logs to journald)",
            stderr
                .map(|p| format!("`{}`", p.display()))
                .unwrap_or_else(|e| format!("unreadable: {e}"))
        )),
    }
}

/// Reads the daemon's log and sends it as `ServiceLog` chunks then one `ServiceLogEnd`, all
/// answering command `id`; following stops when `cancel` is cancelled.
pub(crate) async fn send(
    id: u64,
    tail: Option<usize>,
    follow: bool,
    reports: Reports,
    cancel: CancellationToken,
) {
    let result = match source() {
        Ok(Source::Journal(unit)) => journal(&unit, tail, follow, &reports, id, &cancel).await,
        Ok(Source::File(path)) => file(&path, tail, follow, &reports, id, &cancel).await,
        Err(e) => Err(e),
    };
    let result = result.map_err(|e| ControlError::new(ErrorKind::Daemon, e));
    let _ = reports.send(Envelope::new(id, DaemonMessage::ServiceLogEnd { result }));
}

/// Sends lines; false when the coordinator link is gone.
fn send_lines(reports: &Reports, id: u64, lines: Vec<String>) -> bool {
    lines.is_empty()
        || reports
            .send(Envelope::new(id, DaemonMessage::ServiceLog { lines }))
            .is_ok()
}

/// The `journalctl` arguments reading `unit`.
fn journal_args(unit: &str, tail: Option<usize>, follow: bool) -> Vec<String> {
    let n = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
    let mut args = ["-u", unit, "-o", "cat", "--no-pager", "-n", &n]
        .map(str::to_owned)
        .to_vec();
    if follow {
        args.push("--follow".into());
    }
    args
}

async fn journal(
    unit: &str,
    tail: Option<usize>,
    follow: bool,
    reports: &Reports,
    id: u64,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut child = tokio::process::Command::new("journalctl")
        .args(journal_args(unit, tail, follow))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `journalctl -u {unit}`: {e}"))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("journalctl has no output pipes".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = cancel.cancelled() => return Ok(()),
        };
        match line {
            Ok(Some(line)) => {
                let mut chunk = vec![line];
                // Lines already buffered go in the same message.
                while chunk.len() < CHUNK_LINES && !lines.get_ref().buffer().is_empty() {
                    match lines.next_line().await {
                        Ok(Some(line)) => chunk.push(line),
                        _ => break,
                    }
                }
                if !send_lines(reports, id, chunk) {
                    return Ok(());
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("cannot read journalctl's output: {e}")),
        }
    }
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    let status = child.wait().await.map_err(|e| format!("journalctl: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`journalctl -u {unit}` failed ({status}): {}",
            errors.trim()
        ));
    }
    // Hints (e.g. missing permissions) are shown after the lines.
    send_lines(
        reports,
        id,
        errors
            .lines()
            .map(|l| format!("(journalctl: {l})"))
            .collect(),
    );
    Ok(())
}

/// The last `tail` lines of `text` (all without a tail).
fn last_lines(text: &str, tail: Option<usize>) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

async fn file(
    path: &Path,
    tail: Option<usize>,
    follow: bool,
    reports: &Reports,
    id: u64,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot)?;
    for chunk in last_lines(&text, tail).chunks(CHUNK_LINES) {
        if !send_lines(reports, id, chunk.to_vec()) {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    let mut pos = file.stream_position().map_err(cannot)?;
    let mut partial = String::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // truncated
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos)).map_err(cannot)?;
            let mut more = String::new();
            file.read_to_string(&mut more).map_err(cannot)?;
            pos += more.len() as u64;
            partial.push_str(&more);
            let complete = partial.rfind('\n').map_or(0, |i| i + 1);
            let lines = last_lines(&partial[..complete], None);
            partial.drain(..complete);
            if !send_lines(reports, id, lines) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_args_quote_nothing_and_follow_on_request() {
        assert_eq!(
            journal_args("adora-daemon-h0.service", Some(20), false),
            [
                "-u",
                "adora-daemon-h0.service",
                "-o",
                "cat",
                "--no-pager",
                "-n",
                "20"
            ]
        );
        let follow = journal_args("u.service", None, true);
        assert_eq!(&follow[6..], ["all", "--follow"]);
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", Some(2)), ["b", "c"]);
        assert_eq!(last_lines("a\nb\n", Some(5)), ["a", "b"]);
        assert_eq!(last_lines("a\nb\n", None), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_log_file_is_sent_then_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.log");
        std::fs::write(&path, "one\ntwo\nthree\n").expect("write");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        file(&path, Some(2), false, &tx, 3, &cancel)
            .await
            .expect("read");
        let got = rx.try_recv().expect("one chunk");
        assert_eq!(got.id, 3);
        assert_eq!(
            got.body,
            DaemonMessage::ServiceLog {
                lines: vec!["two".into(), "three".into()]
            }
        );
    }
}
