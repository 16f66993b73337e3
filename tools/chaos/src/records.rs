//! What the chain's ends wrote (`sent-<instance>.txt` of every source instance,
//! `recv-<instance>.txt` of every sink instance; see the `chaos-*` modes of `adora-test-node`),
//! read incrementally while the soak runs, and the final accounting of every message.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

/// One message as a sink instance recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Received {
    source: u64,
    seq: u64,
}

/// The records read so far, and what each file's reader has consumed.
#[derive(Default)]
pub struct Records {
    dir: PathBuf,
    offsets: HashMap<PathBuf, u64>,
    /// Source instance → send time (unix ms) of each sequence number, in order.
    sent: BTreeMap<u64, Vec<u64>>,
    /// Sink instance → the messages it recorded, in arrival order.
    received: BTreeMap<u64, Vec<Received>>,
    /// Sink instance → the last drop count of its input it recorded.
    sink_drops: BTreeMap<u64, u64>,
    /// `corrupt ...` lines: messages whose payload was not what the source sent.
    corrupt: Vec<String>,
    /// Received messages whose send time was not known yet when they were read.
    unresolved: Vec<Received>,
    /// The latest send time of a message that arrived at a sink.
    last_delivered_sent_ms: u64,
}

/// The accounting of every message the sources recorded as sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// Messages the sources recorded as sent.
    pub sent: u64,
    /// Distinct messages that reached a sink.
    pub received: u64,
    /// Messages that never reached a sink, sent inside a fault window (a restart, a cut, a stop).
    pub lost_in_faults: u64,
    /// `lost_in_faults` by the label of the (first) window each was sent in.
    pub lost_by_fault: BTreeMap<String, u64>,
    /// Messages that never reached a sink, sent outside every fault window.
    pub missing_outside_faults: u64,
    /// Messages a sink instance got again (the same source instance and number).
    pub duplicates: u64,
    /// Source instances.
    pub source_instances: usize,
    /// Sink instances.
    pub sink_instances: usize,
    /// Violations found: out of order, never sent, corrupted.
    pub violations: Vec<String>,
}

impl Records {
    /// Records of the files in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            ..Self::default()
        }
    }

    /// Reads what the files gained since the last call (complete lines only).
    pub fn poll(&mut self) -> anyhow::Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .collect();
        // Receipts first: a message's `sent` line is written just after its send returned, so it
        // may follow the receipt; reading sends second resolves both in one poll.
        files.sort_by_key(|p| !file_name(p).starts_with("recv-"));
        for path in files {
            let name = file_name(&path);
            let Some((kind, instance)) = parse_file_name(&name) else {
                continue;
            };
            let text = self.read_new(&path)?;
            for line in text.lines() {
                match kind {
                    "sent" => self.sent_line(instance, line),
                    _ => self.recv_line(instance, line),
                }
            }
        }
        let pending = std::mem::take(&mut self.unresolved);
        for r in pending {
            self.resolve(r);
        }
        Ok(())
    }

    fn read_new(&mut self, path: &Path) -> anyhow::Result<String> {
        let offset = self.offsets.get(path).copied().unwrap_or(0);
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // Only whole lines: the writer may be in the middle of one.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        self.offsets
            .insert(path.to_owned(), offset + complete as u64);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn sent_line(&mut self, instance: u64, line: &str) {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(seq)), Some(Ok(t))) = (fields.next(), fields.next()) else {
            self.corrupt.push(format!("unreadable sent line `{line}`"));
            return;
        };
        let times = self.sent.entry(instance).or_default();
        if seq != times.len() as u64 {
            self.corrupt.push(format!(
                "source {instance:016x} recorded {seq} after {}",
                times.len()
            ));
        }
        times.push(t);
    }

    fn recv_line(&mut self, sink: u64, line: &str) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["corrupt", ..] => self.corrupt.push(format!("sink {sink:016x}: {line}")),
            ["drops", n] => {
                if let Ok(n) = n.parse() {
                    self.sink_drops.insert(sink, n);
                }
            }
            [source, seq, _t] => {
                let parsed = (u64::from_str_radix(source, 16), seq.parse::<u64>());
                if let (Ok(source), Ok(seq)) = parsed {
                    let r = Received { source, seq };
                    self.received.entry(sink).or_default().push(r);
                    self.resolve(r);
                } else {
                    self.corrupt.push(format!("unreadable recv line `{line}`"));
                }
            }
            _ => self.corrupt.push(format!("sink {sink:016x}: `{line}`")),
        }
    }

    fn resolve(&mut self, r: Received) {
        match self.sent_ms(r.source, r.seq) {
            Some(t) => self.last_delivered_sent_ms = self.last_delivered_sent_ms.max(t),
            None => self.unresolved.push(r),
        }
    }

    fn sent_ms(&self, source: u64, seq: u64) -> Option<u64> {
        self.sent.get(&source)?.get(seq as usize).copied()
    }

    /// The latest send time (unix ms) of a message that reached a sink: the chain carries
    /// messages sent after `t` once this is at least `t`.
    pub fn last_delivered_sent_ms(&self) -> u64 {
        self.last_delivered_sent_ms
    }

    /// Messages recorded as sent so far, and receipts so far.
    pub fn counts(&self) -> (u64, u64) {
        let sent = self.sent.values().map(|v| v.len() as u64).sum();
        let received = self.received.values().map(|v| v.len() as u64).sum();
        (sent, received)
    }

    /// Sum of the last drop count each sink instance recorded for its input.
    pub fn sink_counted_drops(&self) -> u64 {
        self.sink_drops.values().sum()
    }

    /// Accounts for every message sent: delivered, lost while a fault window (`(from, to, label)`,
    /// unix ms) was open, or missing outside them; and checks order, duplicates and payloads.
    pub fn account(&self, windows: &[(u64, u64, String)]) -> Accounting {
        let mut acc = Accounting {
            source_instances: self.sent.len(),
            sink_instances: self.received.len(),
            violations: self.corrupt.clone(),
            ..Accounting::default()
        };
        let mut delivered: BTreeSet<(u64, u64)> = BTreeSet::new();
        for (sink, messages) in &self.received {
            self.check_sink(*sink, messages, &mut acc);
            delivered.extend(messages.iter().map(|r| (r.source, r.seq)));
        }
        for (source, times) in &self.sent {
            for (seq, t) in times.iter().enumerate() {
                acc.sent += 1;
                if delivered.contains(&(*source, seq as u64)) {
                    acc.received += 1;
                } else if let Some(w) = windows.iter().find(|w| (w.0..=w.1).contains(t)) {
                    acc.lost_in_faults += 1;
                    *acc.lost_by_fault.entry(w.2.clone()).or_default() += 1;
                } else {
                    acc.missing_outside_faults += 1;
                }
            }
        }
        acc
    }

    /// One sink instance's receipts: per source instance strictly increasing, each one sent
    /// (or the one a killed source sent but had not recorded yet).
    fn check_sink(&self, sink: u64, messages: &[Received], acc: &mut Accounting) {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for r in messages {
            if let Some(prev) = last.get(&r.source) {
                if r.seq == *prev {
                    acc.duplicates += 1;
                    acc.violations.push(format!(
                        "sink {sink:016x} got message {} of source {:016x} twice",
                        r.seq, r.source
                    ));
                } else if r.seq < *prev {
                    acc.violations.push(format!(
                        "out of order: sink {sink:016x} got message {} of source {:016x} after {prev}",
                        r.seq, r.source
                    ));
                }
            }
            last.insert(r.source, r.seq);
            let recorded = self.sent.get(&r.source).map_or(0, |v| v.len() as u64);
            // A source killed between its send and its record line leaves exactly one
            // unrecorded message at the end.
            if r.seq > recorded {
                acc.violations.push(format!(
                    "sink {sink:016x} got message {} of source {:016x}, which recorded {recorded} sent",
                    r.seq, r.source
                ));
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `sent-<16 hex>.txt` / `recv-<16 hex>.txt` → (kind, instance).
fn parse_file_name(name: &str) -> Option<(&'static str, u64)> {
    let stem = name.strip_suffix(".txt")?;
    let (kind, hex) = stem.split_once('-')?;
    let kind = match kind {
        "sent" => "sent",
        "recv" => "recv",
        _ => return None,
    };
    Some((kind, u64::from_str_radix(hex, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_message_is_delivered_lost_in_a_window_or_missing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "sent-000000000000000a.txt",
            "0 1000\n1 1100\n2 1200\n3 5000\n4 9000\n",
        );
        write(
            d,
            "recv-0000000000000001.txt",
            "000000000000000a 0 1001\ndrops 1\n",
        );
        // A half-written line is not read yet.
        write(d, "recv-0000000000000001.txt", "000000000000000a 2 12");
        let mut records = Records::new(d);
        records.poll().unwrap();
        assert_eq!(records.counts(), (5, 1));
        assert_eq!(records.last_delivered_sent_ms(), 1000);
        write(d, "recv-0000000000000001.txt", "01\n");
        records.poll().unwrap();
        assert_eq!(records.last_delivered_sent_ms(), 1200);
        assert_eq!(records.sink_counted_drops(), 1);
        let acc = records.account(&[(4000, 6000, "cut".into())]);
        assert_eq!(
            (
                acc.sent,
                acc.received,
                acc.lost_in_faults,
                acc.missing_outside_faults
            ),
            (5, 2, 1, 2)
        );
        assert!(acc.violations.is_empty(), "{:?}", acc.violations);
        assert_eq!(acc.lost_by_fault["cut"], 1);
    }

    #[test]
    fn reordering_duplicates_and_unsent_messages_are_violations() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "sent-000000000000000a.txt", "0 1\n1 2\n2 3\n");
        write(
            d,
            "recv-0000000000000001.txt",
            "000000000000000a 1 5\n000000000000000a 0 6\n000000000000000a 0 7\n\
             000000000000000a 3 8\n000000000000000a 4 9\ncorrupt 000000000000000a 2\n",
        );
        let mut records = Records::new(d);
        records.poll().unwrap();
        let acc = records.account(&[]);
        let all = acc.violations.join("\n");
        assert!(all.contains("out of order"), "{all}");
        assert!(all.contains("twice"), "{all}");
        // 3 may be the unrecorded last send of a killed source; 4 cannot.
        assert!(all.contains("got message 4"), "{all}");
        assert!(!all.contains("got message 3"), "{all}");
        assert!(all.contains("corrupt"), "{all}");
        assert_eq!(acc.duplicates, 1);
    }
}
