//! A node with many behaviours for the end-to-end tests, selected by the `MODE` variable.
//!
//! - `shm-send`: sends a 4 MiB sample on `data`, waits until every receiver dropped it, sends a
//!   second one (which must reuse the first sample's shared memory), prints the segment names.
//! - `recv`: prints one line per input message (length, segment name, whether the bytes are right)
//!   and, at the end, how many messages arrived and how many the queue dropped. `SLEEP_MS` slows it;
//!   `PRINT_LANES=1` first prints `lanes=true|false` (whether its configuration names lanes).
//! - `flood`: sends `COUNT` sequence numbers on `data` as fast as possible, or `PACE_MS` apart
//!   (`SIZE`: padded to that many bytes, in shared memory from 4 KiB on). With `WAIT_RELEASED=1`
//!   it then waits until
//!   every receiver released its shared samples and prints `flood released`.
//! - `hold`: keeps every message it receives (never drops one); after `COUNT` it prints
//!   `holding N` and kills itself with SIGKILL (`HOLD_MS` later), still holding them. With
//!   `ONCE_FILE` set, only
//!   if that file does not exist yet (it creates it); otherwise it behaves as `recv` (a
//!   restarted instance).
//! - `outlive`: keeps the `COUNT` shared samples it receives until its input closes (the sender
//!   is gone), prints `outlived N present=P` (how many of their segments still exist), drops
//!   them, waits `WAIT_MS` and prints `dropped present=P`.
//! - `count-pool`: receives `COUNT` messages (dropping each), waits `WAIT_MS`, then prints
//!   `pool of NODE: N`, the number of shared-memory samples the instances of node `POOL_OF` of
//!   its dataflow still have in `/dev/shm`; with `POOL_OF: "~remote"`, `remote copies held: N`,
//!   the samples of its daemon's pool of remote copies that a lane still holds.
//! - `fail`: prints to stderr and exits with `EXIT_CODE` (default 3).
//! - `idle`: waits for Stop.
//! - `spin`: keeps one core busy on a helper thread until Stop; every input it receives is sent
//!   on as output `data` (declare `outputs: [data]` to chain spin nodes).
//! - `ignore-stop`: ignores Stop (the runtime must escalate to SIGTERM).
//! - `no-connect`: never connects to the daemon.
//! - `hang`: connects, prints `hanging`, then sleeps without asking the daemon anything.
//! - `chatter`: prints `line N` on stdout (and `err N` on stderr) for `COUNT` lines, one per
//!   `SLEEP_MS`, then exits.
//! - `levels`: prints `DEBUG d`, `INFO i`, `WARN w`, `plain`, an `ERROR` JSON line (stderr), exits.
//! - `print-strings`: prints `got <input>: <value>` for every string of every input (Arrow
//!   `Utf8` arrays), until its inputs close.
//! - `print-cpus`: prints its `Cpus_allowed_list` from `/proc/self/status`, then waits for Stop.
//! - `print-env`: prints the variables named in `PRINT_ENV` (comma separated), then exits.
//! - `seq-source`: on every `tick` input sends the next sequence number on `data` (first 8 bytes,
//!   rest of `PAYLOAD_BYTES` filled with the number's low byte), `COUNT` times, then exits.
//! - `arrow-send`: on every `tick` input sends message N as an `Int64` array `[N, N*N]` on
//!   `numbers` and a `Utf8` array `["n=N, \"q\""]` on `text`, `COUNT` times, then exits.
//! - `relay`: forwards every message of input `in` unchanged on output `out`; its summary
//!   `relay forwarded=N dropped=D` gives the node API's drop count of `in`.
//! - `seq-sink`: checks sequence numbers and payloads; prints progress every `PROGRESS` messages
//!   and a summary with what was received and lost, and the node API's drop count of its inputs
//!   (`dropped=`). Exits non-zero on reordering or a bad payload.
//!   With `CRASH_AT=N` it exits with status 9 on message N, once per dataflow (a marker file in
//!   the temp dir lets the restarted instance carry on). With `ALLOW_DUPLICATES=1` a message
//!   seen before is counted (`dups=`) and one that arrives after a later one (`late=`, no
//!   longer counted lost) instead of failing; with `TRACE=1` every message prints
//!   `seq-sink recv seq=N t_ms=<unix ms>` (tests measure gaps from it). `InputClosed` prints
//!   `seq-sink input closed <id> next=<N>`.
//!
//! - `lock`: after `LOCK_DELAY_MS` (default 0), takes an update lock (`LOCK_REASON`, default
//!   `testing`), prints `locked` (or
//!   `lock refused: <why>`), holds it for `LOCK_SECS` seconds (default: until Stop), prints
//!   `released`, then waits for Stop.
//!
//! - `chaos-source`, `chaos-sink`: the ends of the chaos soak's chain (see [`chaos`]).
//!
//! With `PRINT_EXE` set, any mode first prints `exe=<path of the running executable>` (binary
//! distribution tests check which copy a daemon ran).

use std::{
    thread,
    time::{Duration, Instant},
};

use adora_node_api::{AdoraNode, Data, Event, MetadataParameters, Parameter};

mod chaos;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const SAMPLE_LEN: usize = 4 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pattern(i: usize, round: u8) -> u8 {
    (i as u8).wrapping_mul(31) ^ round
}

fn main() -> Result {
    let mode = std::env::var("MODE").unwrap_or_default();
    if std::env::var_os("PRINT_EXE").is_some() {
        println!("exe={}", std::env::current_exe()?.display());
    }
    match mode.as_str() {
        "shm-send" => shm_send(),
        "recv" => recv(),
        "flood" => flood(),
        "hold" => hold(),
        "outlive" => outlive(),
        "count-pool" => count_pool(),
        "fail" => {
            eprintln!("test-node: simulated failure");
            std::process::exit(env_u64("EXIT_CODE", 3) as i32);
        }
        "idle" => idle(false),
        "spin" => spin(),
        "ignore-stop" => idle(true),
        "no-connect" => {
            thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        "hang" => {
            let (_node, _events) = AdoraNode::init_from_env()?;
            println!("hanging");
            thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        "chatter" => chatter(),
        "levels" => {
            let (_node, _events) = AdoraNode::init_from_env()?;
            println!("DEBUG d");
            println!("INFO i");
            println!("WARN w");
            println!("plain");
            eprintln!(r#"{{"level":"ERROR","fields":{{"message":"e","code":7}},"target":"t"}}"#);
            Ok(())
        }
        "print-strings" => print_strings(),
        "print-cpus" => {
            let status = std::fs::read_to_string("/proc/self/status")?;
            for line in status
                .lines()
                .filter(|l| l.starts_with("Cpus_allowed_list"))
            {
                println!("{line}");
            }
            idle(false)
        }
        "print-env" => {
            for key in std::env::var("PRINT_ENV").unwrap_or_default().split(',') {
                println!(
                    "{key}={}",
                    std::env::var(key).unwrap_or_else(|_| "<unset>".into())
                );
            }
            Ok(())
        }
        "seq-source" => seq_source(),
        "relay" => relay(),
        "arrow-send" => arrow_send(),
        "seq-sink" => seq_sink(),
        "lock" => lock(),
        "chaos-source" => chaos::source(),
        "chaos-sink" => chaos::sink(),
        other => Err(format!("unknown MODE `{other}`").into()),
    }
}

fn shm_send() -> Result {
    let (mut node, _events) = AdoraNode::init_from_env()?;
    let output = "data".into();
    for round in 1..=2u8 {
        let mut sample = node.allocate_sample(SAMPLE_LEN)?;
        let shm = sample
            .shared_memory_id()
            .ok_or("4 MiB sample is not in shared memory")?
            .to_owned();
        for (i, b) in sample.iter_mut().enumerate() {
            *b = pattern(i, round);
        }
        let mut params = MetadataParameters::new();
        params.insert("round".into(), Parameter::Integer(round.into()));
        node.send_sample(&output, params, sample)?;
        println!("sent round={round} shm={shm}");
        // Wait until every receiver dropped the sample, so the next allocation can reuse it.
        let started = Instant::now();
        while node.samples_in_flight() > 0 {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("receivers never released the sample".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        println!("released round={round}");
    }
    Ok(())
}

fn check(data: &Data, round: u8) -> bool {
    data.iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i, round))
}

fn recv() -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    if env_u64("PRINT_LANES", 0) == 1 {
        // Whether the daemon gave this node shared-memory lanes (names contain `~lane-`).
        let config = std::env::var("ADORA_NODE_CONFIG").unwrap_or_default();
        println!("lanes={}", config.contains("~lane-"));
    }
    let sleep = Duration::from_millis(env_u64("SLEEP_MS", 0));
    let mut received = 0u64;
    let mut inputs = Vec::new();
    let mut last_seq = None;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, metadata, data } => {
                received += 1;
                if !inputs.contains(&id) {
                    inputs.push(id.clone());
                }
                if let Some(Parameter::Integer(round)) = metadata.parameters.get("round") {
                    let round = *round as u8;
                    println!(
                        "recv input={id} len={} shm={} ok={}",
                        data.len(),
                        data.shared_memory_id().unwrap_or("inline"),
                        check(&data, round)
                    );
                } else if data.len() >= 8 {
                    let seq = u64::from_le_bytes(data[..8].try_into()?);
                    last_seq = Some(seq);
                }
                drop(data);
                thread::sleep(sleep);
            }
            Event::Stop => break,
            Event::Error(e) => println!("error event: {e}"),
            Event::UpstreamRestarted { node, inputs } => {
                println!(
                    "upstream restarted node={node} inputs={}",
                    inputs
                        .iter()
                        .map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            Event::UpstreamFailed { node, reason, .. } => {
                println!("upstream failed node={node} reason={reason}")
            }
            Event::InputClosed { id } => println!("input closed {id}"),
            _ => {}
        }
    }
    let drops: Vec<String> = inputs
        .iter()
        .map(|i| format!("{i}:{}", events.drop_count(i)))
        .collect();
    println!(
        "done received={received} last_seq={} dropped={}",
        last_seq
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into()),
        drops.join(",")
    );
    // `LINGER_MS`: stay a while after the inputs closed (tests read the node's figures).
    thread::sleep(Duration::from_millis(env_u64("LINGER_MS", 0)));
    Ok(())
}

fn flood() -> Result {
    let (mut node, _events) = AdoraNode::init_from_env()?;
    let output = "data".into();
    let count = env_u64("COUNT", 1000);
    // `MARKER`: each message is that text and its number (tests look for it on the wire).
    let marker = std::env::var("MARKER").ok();
    // `SIZE`: pad each message with zeros to this many bytes; every `LARGE_EVERY`th one to
    // `LARGE_SIZE` bytes instead (a shared sample among inline messages).
    let size = env_u64("SIZE", 0) as usize;
    let large_every = env_u64("LARGE_EVERY", 0);
    let large_size = env_u64("LARGE_SIZE", 64 << 10) as usize;
    let pace = Duration::from_millis(env_u64("PACE_MS", 0));
    for seq in 0..count {
        if seq > 0 {
            thread::sleep(pace);
        }
        let mut payload = match &marker {
            Some(m) => format!("{m}-{seq}").into_bytes(),
            None => seq.to_le_bytes().to_vec(),
        };
        let size = match large_every {
            n if n > 0 && seq % n == n - 1 => large_size,
            _ => size,
        };
        if payload.len() < size {
            payload.resize(size, 0);
        }
        node.send_output(&output, MetadataParameters::new(), &payload)?;
    }
    println!("flood sent={count}");
    if env_u64("WAIT_RELEASED", 0) == 1 {
        let started = Instant::now();
        while node.samples_in_flight() > 0 {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "receivers still hold {} sample(s) after 30 s",
                    node.samples_in_flight()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        println!("flood released");
    }
    Ok(())
}

fn hold() -> Result {
    if let Some(once) = std::env::var_os("ONCE_FILE") {
        if std::path::Path::new(&once).exists() {
            return recv();
        }
        std::fs::write(&once, b"held")?;
    }
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let count = env_u64("COUNT", 1) as usize;
    let mut held = Vec::new();
    while let Some(event) = events.recv() {
        if let Event::Input { data, .. } = event {
            held.push(data);
            if held.len() == count {
                println!("holding {count}");
                thread::sleep(Duration::from_millis(env_u64("HOLD_MS", 0)));
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL)?;
            }
        }
    }
    Err("the inputs closed before the node held COUNT messages".into())
}

fn outlive() -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let count = env_u64("COUNT", 1) as usize;
    let mut held = Vec::new();
    while let Some(event) = events.recv() {
        match event {
            Event::Input { data, .. } => held.push(data),
            Event::InputClosed { .. } => break,
            _ => {}
        }
    }
    if held.len() != count {
        return Err(format!("received {} messages, not {count}", held.len()).into());
    }
    let names: Vec<String> = held
        .iter()
        .map(|d| d.shared_memory_id().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or("a message was not in shared memory")?;
    let present = || {
        (names.iter())
            .filter(|n| std::path::Path::new("/dev/shm").join(n).exists())
            .count()
    };
    println!("outlived {count} present={}", present());
    drop(held);
    // Samples that came through the daemon are reported dropped with the next request.
    let _ = events.recv_timeout(Duration::from_millis(1));
    thread::sleep(Duration::from_millis(env_u64("WAIT_MS", 0)));
    println!("dropped present={}", present());
    Ok(())
}

fn count_pool() -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let mut received = 0;
    while received < env_u64("COUNT", 0) {
        match events.recv() {
            Some(Event::Input { .. }) => received += 1,
            Some(_) => {}
            None => return Err("the inputs closed before COUNT messages".into()),
        }
    }
    // Samples that came through the daemon are reported dropped with the next request.
    let _ = events.recv_timeout(Duration::from_millis(1));
    thread::sleep(Duration::from_millis(env_u64("WAIT_MS", 0)));
    let of = std::env::var("POOL_OF")?;
    let me = std::env::var("ADORA_NODE_ID")?;
    let config = std::env::var("ADORA_NODE_CONFIG")?;
    // Its own pool prefix (`"shm_prefix":"…"` in the JSON) is `{dataflow prefix}{me}-{instance}-`.
    let own = (config.split_once("\"shm_prefix\":\""))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(prefix, _)| prefix)
        .ok_or("no shm_prefix in ADORA_NODE_CONFIG")?;
    let dataflow = &own[..own
        .rfind(&format!("{me}-"))
        .ok_or("unexpected shm_prefix")?];
    if of == "~remote" {
        return count_held_remote_copies(dataflow);
    }
    let prefix = format!("{dataflow}{of}-");
    let samples = std::fs::read_dir("/dev/shm")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            // `{instance}-{n}`: digits, a dash, digits.
            n.strip_prefix(&prefix).is_some_and(|rest| {
                rest.split_once('-').is_some_and(|(a, b)| {
                    [a, b]
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
                })
            })
        })
        .count();
    println!("pool of {of}: {samples}");
    Ok(())
}

/// Prints how many samples of this daemon's pool of remote copies (`{dataflow}~remote-N`) some
/// lane still holds (a holder bit set).
fn count_held_remote_copies(dataflow: &str) -> Result {
    let prefix = format!("{dataflow}~remote-");
    let held = std::fs::read_dir("/dev/shm")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .filter_map(|n| adora_shm::ShmRegion::open(&n).ok())
        .filter(|region| adora_shm::holders(region).is_some_and(|h| h.lanes != 0))
        .count();
    println!("remote copies held: {held}");
    Ok(())
}

fn print_strings() -> Result {
    use arrow_array::{Array, StringArray};
    let (_node, mut events) = AdoraNode::init_from_env()?;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, data, .. } => {
                let array = data.to_arrow()?;
                let strings = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| format!("input {id}: not strings: {:?}", array.data_type()))?;
                for value in strings.iter() {
                    println!("got {id}: {}", value.unwrap_or("<null>"));
                }
            }
            Event::Stop => break,
            _ => {}
        }
    }
    println!("print-strings done");
    Ok(())
}

fn chatter() -> Result {
    let (_node, _events) = AdoraNode::init_from_env()?;
    let sleep = Duration::from_millis(env_u64("SLEEP_MS", 0));
    for i in 0..env_u64("COUNT", 3) {
        println!("line {i}");
        eprintln!("err {i}");
        thread::sleep(sleep);
    }
    Ok(())
}

fn spin() -> Result {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let stop = Arc::new(AtomicBool::new(false));
    let burner = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
        })
    };
    let output = "data".into();
    while let Some(event) = events.recv() {
        match event {
            Event::Stop => break,
            Event::Input { data, .. } => {
                // Nodes without an output `data` (the end of a chain) only count what they get.
                let _ = node.send_output(&output, MetadataParameters::new(), &data);
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = burner.join();
    println!("spin done");
    Ok(())
}

fn lock() -> Result {
    let (node, mut events) = AdoraNode::init_from_env()?;
    let reason = std::env::var("LOCK_REASON").unwrap_or_else(|_| "testing".into());
    thread::sleep(Duration::from_millis(env_u64("LOCK_DELAY_MS", 0)));
    let mut held = match node.update_lock(&reason) {
        Ok(lock) => {
            println!("locked");
            Some(lock)
        }
        Err(e) => {
            println!("lock refused: {e}");
            None
        }
    };
    let hold: Option<u64> = std::env::var("LOCK_SECS").ok().and_then(|v| v.parse().ok());
    if let Some(secs) = hold {
        if let Some(lock) = held.take() {
            thread::sleep(Duration::from_secs(secs));
            lock.release()?;
            println!("released");
        }
    }
    while let Some(event) = events.recv() {
        if let Event::Stop = event {
            break;
        }
    }
    drop(held); // held until Stop
    Ok(())
}

fn idle(ignore_stop: bool) -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    while let Some(event) = events.recv() {
        if let Event::Stop = event {
            if ignore_stop {
                println!("ignoring stop");
                thread::sleep(Duration::from_secs(600));
            }
            break;
        }
    }
    println!("idle done");
    Ok(())
}

fn seq_source() -> Result {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let output = "data".into();
    let count = env_u64("COUNT", 100);
    let len = (env_u64("PAYLOAD_BYTES", 8) as usize).max(8);
    let mut seq = 0u64;
    while seq < count {
        match events.recv() {
            Some(Event::Input { .. }) => {
                let mut sample = node.allocate_sample(len)?;
                sample[8..].fill(seq as u8);
                sample[..8].copy_from_slice(&seq.to_le_bytes());
                node.send_sample(&output, MetadataParameters::new(), sample)?;
                seq += 1;
            }
            Some(Event::Stop) | None => break,
            Some(_) => {}
        }
    }
    println!("source sent={seq}");
    Ok(())
}

fn arrow_send() -> Result {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let count = env_u64("COUNT", 10) as i64;
    let mut n = 0i64;
    while n < count {
        match events.recv() {
            Some(Event::Input { .. }) => {
                let numbers = arrow_array::Int64Array::from(vec![n, n * n]);
                node.send_arrow(&"numbers".into(), MetadataParameters::new(), &numbers)?;
                let text = arrow_array::StringArray::from(vec![format!("n={n}, \"q\"")]);
                node.send_arrow(&"text".into(), MetadataParameters::new(), &text)?;
                n += 1;
            }
            Some(Event::Stop) | None => break,
            Some(_) => {}
        }
    }
    println!("arrow-send sent={n}");
    Ok(())
}

fn relay() -> Result {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let output = "out".into();
    let mut forwarded = 0u64;
    let trace = std::env::var_os("TRACE").is_some();
    // A slow relay (the live-move test slows down one host's instance with it).
    let delay = std::time::Duration::from_millis(env_u64("DELAY_MS", 0));
    while let Some(event) = events.recv() {
        match event {
            Event::Input { metadata, data, .. } => {
                std::thread::sleep(delay);
                if trace {
                    let seq = data
                        .get(..8)
                        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                    println!(
                        "relay fwd pid={} seq={seq:?} t_ms={}",
                        std::process::id(),
                        now.as_millis()
                    );
                }
                node.send_output(&output, metadata.parameters, &data)?;
                forwarded += 1;
            }
            Event::Stop => break,
            Event::Error(e) => println!("error event: {e}"),
            _ => {}
        }
    }
    // What the daemon dropped or lost on the way to this input (remote drops included).
    println!(
        "relay forwarded={forwarded} dropped={}",
        events.drop_count(&"in".into())
    );
    Ok(())
}

fn seq_sink() -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let progress = env_u64("PROGRESS", 25).max(1);
    let expect_len = std::env::var("EXPECT_LEN")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let crash_at = std::env::var("CRASH_AT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let allow_duplicates = std::env::var_os("ALLOW_DUPLICATES").is_some();
    let trace = std::env::var_os("TRACE").is_some();
    let (mut received, mut lost, mut next, mut dups) = (0u64, 0u64, 0u64, 0u64);
    // With duplicates allowed: numbers skipped so far, and those that arrived after all.
    let (mut missing, mut late) = (std::collections::BTreeSet::new(), 0u64);
    // The inputs seen, for the drop counts at the end.
    let mut inputs = std::collections::BTreeSet::new();
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, data, .. } => {
                inputs.insert(id);
                let seq = u64::from_le_bytes(data.get(..8).ok_or("short message")?.try_into()?);
                if trace {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                    println!("seq-sink recv seq={seq} t_ms={}", now.as_millis());
                }
                if seq < next && allow_duplicates {
                    if missing.remove(&seq) {
                        late += 1;
                        lost -= 1;
                        received += 1;
                    } else {
                        dups += 1;
                    }
                    continue;
                }
                if seq < next {
                    return Err(format!("out of order: got {seq} after {}", next - 1).into());
                }
                if let Some(len) = expect_len {
                    if data.len() != len {
                        return Err(
                            format!("message {seq}: {} bytes, expected {len}", data.len()).into(),
                        );
                    }
                }
                if data.len() > 8 && (data[8] != seq as u8 || data[data.len() - 1] != seq as u8) {
                    return Err(format!("message {seq}: corrupted payload").into());
                }
                if crash_at == Some(seq) {
                    // Crash once per dataflow: a marker file lets the restarted instance go on.
                    let dataflow = std::env::var("ADORA_DATAFLOW_ID").unwrap_or_default();
                    let marker = std::env::temp_dir().join(format!("adora-crash-{dataflow}"));
                    if std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&marker)
                        .is_ok()
                    {
                        println!("seq-sink crashing at {seq}");
                        std::process::exit(9);
                    }
                    let _ = std::fs::remove_file(&marker);
                }
                if seq > next {
                    println!(
                        "seq-sink gap: {} message(s) missing before {seq}",
                        seq - next
                    );
                    lost += seq - next;
                    if allow_duplicates {
                        missing.extend(next..seq);
                    }
                }
                next = seq + 1;
                received += 1;
                if received % progress == 0 {
                    println!("seq-sink progress received={received} last={seq}");
                }
            }
            Event::Stop => break,
            Event::Error(e) => println!("error event: {e}"),
            Event::InputClosed { id } => println!("seq-sink input closed {id} next={next}"),
            _ => {}
        }
    }
    let dropped: u64 = inputs.iter().map(|i| events.drop_count(i)).sum();
    println!(
        "seq-sink done received={received} lost={lost} next={next} dups={dups} late={late} dropped={dropped}"
    );
    Ok(())
}
