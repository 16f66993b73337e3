"""Benchmark sender node in Python (the Python twin of `adora-bench-sender`). For every size of
the plan: a latency phase of paced messages, then a throughput phase of back-to-back messages,
each framed by Begin/End markers (JSON bytes) on the `control` output. Payloads of 4 KiB and more
are written in place into a shared-memory sample from ``node.allocate`` and sent with no copy;
smaller ones are sent as ``bytes``. Like the Rust sender, it waits until the sink released every
shared sample before each latency message, and keeps at most ``MAX_IN_FLIGHT`` in flight while
sending back to back (``node.samples_in_flight()``).
"""

import sys
import time

import numpy as np
from adora import Node

from benchmark_common import (
    MAX_IN_FLIGHT,
    SHM_THRESHOLD,
    Pacer,
    Plan,
    begin_marker,
    end_marker,
    payload_bytes,
    write_payload,
)

#: Pause between sizes so that the receiver drains and phases do not overlap.
BETWEEN_SIZES_S = 0.02
#: How long to sleep while shared samples are still held by the sink.
IN_FLIGHT_POLL_S = 20e-6
#: Longest wait for the sink to release the samples before a latency message.
RELEASE_TIMEOUT_S = 1.0


class Sender:
    """Sends the data messages and markers of a plan."""

    def __init__(self, node):
        self.node = node
        self.seq = 0

    def marker(self, marker):
        self.node.send_output("control", marker)

    def payload(self, size):
        """Message `self.seq`: a filled shared-memory sample, or bytes below the threshold."""
        if size < SHM_THRESHOLD:
            return payload_bytes(size, self.seq)
        sample = self.node.allocate(size)
        # The numpy view is dropped when this function returns, before the sample is sent.
        write_payload(np.frombuffer(sample, dtype=np.uint8), self.seq)
        return sample

    def send(self, size):
        """Writes and sends one message; returns how long writing the payload took (s)."""
        started = time.perf_counter()
        data = self.payload(size)
        written = time.perf_counter() - started
        self.node.send_output("data", data)
        self.seq += 1
        return written

    def wait_released(self):
        """Waits until the sink dropped every shared sample (the next one then reuses the region)."""
        deadline = time.perf_counter() + RELEASE_TIMEOUT_S
        while self.node.samples_in_flight() > 0 and time.perf_counter() < deadline:
            time.sleep(IN_FLIGHT_POLL_S)

    def latency(self, plan, size):
        self.marker(begin_marker(size, "latency", plan.warmup))
        pacer = Pacer(plan.pace_s)
        write_s = 0.0
        count = plan.warmup + plan.samples
        for _ in range(count):
            pacer.wait(write_s)
            self.wait_released()
            write_s = self.send(size)
        pacer.wait(write_s)
        self.wait_released()
        self.marker(end_marker(size, "latency", count))

    def throughput(self, plan, size):
        self.marker(begin_marker(size, "throughput", 0))
        deadline = time.perf_counter() + plan.throughput_s
        sent = 0
        while time.perf_counter() < deadline:
            while size >= SHM_THRESHOLD and self.node.samples_in_flight() >= MAX_IN_FLIGHT:
                time.sleep(IN_FLIGHT_POLL_S)
            self.send(size)
            sent += 1
        self.marker(end_marker(size, "throughput", sent))


def main():
    plan = Plan()
    sender = Sender(Node())
    for size in plan.sizes:
        sender.latency(plan, size)
        sender.throughput(plan, size)
        time.sleep(BETWEEN_SIZES_S)
    print(f"sender done: {sender.seq} messages", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
