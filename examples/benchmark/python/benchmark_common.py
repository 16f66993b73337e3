"""What the Python benchmark nodes share with the Rust ones (crate `benchmark-common`): the plan
from the environment, the payload pattern and its check, the Begin/End markers, the latency
statistics and the ``ADORA_BENCH_REPORT {json}`` line a receiver prints per size and phase.

Keep it in step with examples/benchmark/common/src/lib.rs: the runner parses the same report
lines from Rust and Python sinks, and a Rust sender feeds a Python sink.
"""

import json
import math
import os
import time

import numpy as np

#: Payload sizes of a full run (bytes), as `benchmark_common::SIZES`.
SIZES = [0, 8, 64, 512, 2 << 10, 4 << 10, 16 << 10, 64 << 10, 400 << 10, 4 << 20, 40 << 20]

#: Payloads of at least this many bytes travel through shared memory.
SHM_THRESHOLD = 4096
#: Most shared samples a sender keeps in flight (``MAX_IN_FLIGHT`` in benchmark-common).
MAX_IN_FLIGHT = 16

#: Prefix of the report lines (followed by JSON).
REPORT_PREFIX = "ADORA_BENCH_REPORT "

#: Byte filling payloads shorter than 8 bytes.
SHORT_PATTERN = 0xA5


class Plan:
    """What to measure, read from the ``ADORA_BENCH_*`` variables the runner sets."""

    def __init__(self):
        env = os.environ
        sizes = env.get("ADORA_BENCH_SIZES")
        self.sizes = [int(s) for s in sizes.split(",") if s.strip()] if sizes else list(SIZES)
        self.samples = int(env.get("ADORA_BENCH_SAMPLES", "500"))
        self.warmup = int(env.get("ADORA_BENCH_WARMUP", "20"))
        self.pace_s = int(env.get("ADORA_BENCH_PACE_US", "2000")) / 1e6
        self.throughput_s = int(env.get("ADORA_BENCH_THROUGHPUT_MS", "1000")) / 1e3


def begin_marker(size, phase, warmup):
    """The `Begin` marker (`benchmark_common::Marker`) as JSON bytes."""
    return json.dumps({"Begin": {"size": size, "phase": phase, "warmup": warmup}}).encode()


def end_marker(size, phase, sent):
    """The `End` marker as JSON bytes."""
    return json.dumps({"End": {"size": size, "phase": phase, "sent": sent}}).encode()


def pattern(seq):
    """Byte repeated through the payload of message `seq`."""
    return ((seq * 31) & 0xFF) ^ 0x5A


def write_payload(buf, seq):
    """Writes message `seq` into `buf` (a writable uint8 numpy array): the sequence number (little
    endian) in the first 8 bytes, then `pattern(seq)` to the end; shorter buffers get 0xA5."""
    if len(buf) < 8:
        buf[:] = SHORT_PATTERN
        return
    buf[:8] = np.frombuffer(seq.to_bytes(8, "little"), dtype=np.uint8)
    buf[8:] = pattern(seq)


def payload_bytes(size, seq):
    """Message `seq` of `size` bytes as `bytes` (for sizes sent inline)."""
    if size < 8:
        return bytes([SHORT_PATTERN]) * size
    return seq.to_bytes(8, "little") + bytes([pattern(seq)]) * (size - 8)


def check_payload(data):
    """Checks every byte of a payload (a uint8 numpy array). Returns ``(ok, seq)``; `seq` is None
    for payloads shorter than 8 bytes."""
    if len(data) < 8:
        return bool((data == SHORT_PATTERN).all()), None
    seq = int.from_bytes(data[:8].tobytes(), "little")
    return bool((data[8:] == pattern(seq)).all()), seq


class Pacer:
    """Spaces latency samples at least `pace_s` apart, and at least three times the time the
    previous payload took to write (as `benchmark_common::Pacer`)."""

    def __init__(self, pace_s):
        self.pace_s = pace_s
        self.next = time.perf_counter()

    def wait(self, write_s):
        """Sleeps until the next sample is due."""
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.next = time.perf_counter() + max(self.pace_s, write_s * 3)


def summary(values):
    """Nearest-rank min/p50/p90/p99/max of `values` (ns), or None when empty."""
    if not values:
        return None
    values = sorted(values)

    def rank(p):
        i = math.ceil(p * len(values))
        return values[min(max(i, 1), len(values)) - 1]

    return {
        "samples": len(values),
        "min": values[0],
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": values[-1],
    }


class Recorder:
    """Receiver-side bookkeeping of one size and phase (as `benchmark_common::Recorder`)."""

    def __init__(self, size, phase, warmup):
        self.size = size
        self.phase = phase
        self.warmup = warmup
        self.latencies = []
        self.received = 0
        self.bad = 0
        self.last_seq = None
        self.first_sent = None
        self.last_received = None

    def record(self, sent_ns, received_ns, data):
        """Records one message (`data`: a uint8 numpy array) sent and received at these times
        (ns since the Unix epoch); reads and checks the whole payload."""
        index = self.received
        self.received += 1
        if self.first_sent is None:
            self.first_sent = sent_ns
        self.last_received = received_ns
        ok, seq = check_payload(data)
        if seq is not None:
            ok = ok and (self.last_seq is None or seq > self.last_seq)
            self.last_seq = seq
        if not ok or len(data) != self.size:
            self.bad += 1
        if self.phase == "latency" and index >= self.warmup:
            self.latencies.append(max(0, received_ns - sent_ns))

    def report_line(self, sent):
        """The report line, after the `End` marker said `sent` messages were sent."""
        msgs_per_s = mib_per_s = None
        if self.phase == "throughput" and self.first_sent is not None:
            secs = max((self.last_received - self.first_sent) / 1e9, 1e-9)
            msgs_per_s = self.received / secs
            mib_per_s = msgs_per_s * self.size / (1 << 20)
        report = {
            "transport": "adora",
            "size": self.size,
            "phase": self.phase,
            "sent": sent,
            "received": self.received,
            "bad": self.bad,
            "latency_ns": summary(self.latencies),
            "msgs_per_s": msgs_per_s,
            "mib_per_s": mib_per_s,
        }
        return REPORT_PREFIX + json.dumps(report)
