"""Consumer of the python-camera example: reads each frame as a numpy array backed by the shared
memory sample (no copy), checks every pixel, and measures the frame rate and the latency (send
time in the metadata -> the moment the frame was handed over). Prints a summary line and exits 1
on a bad frame, or if fewer than ``FRAMES`` frames (default 90) arrived.
"""

import os
import sys
import time

from adora import Node

from frames import HEIGHT, WIDTH, CHANNELS, gradient, is_frame


def percentile(sorted_values, p):
    """Nearest-rank percentile of a non-empty sorted list."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def main():
    frames = int(os.environ.get("FRAMES", "90"))
    node = Node()
    base = gradient()
    received = 0
    bad = 0
    latencies_ms = []
    first = last = None
    for event in node:
        if event["type"] == "STOP":
            break
        if event["type"] != "INPUT" or event["id"] != "frame":
            continue
        now = time.time_ns()
        latencies_ms.append((now - event["metadata"]["timestamp"]) / 1e6)
        first = first if first is not None else now
        last = now
        # A view of the shared-memory sample: `zero_copy_only=True` raises instead of copying.
        image = event["value"].to_numpy(zero_copy_only=True).reshape(HEIGHT, WIDTH, CHANNELS)
        number = event["metadata"]["frame"]
        if number != received or not is_frame(image, base, number):
            print(f"BAD FRAME: expected frame {received}, metadata says {number}", flush=True)
            bad += 1
        received += 1
        # Drop every reference to the sample so that it returns to the camera's pool now rather
        # than when the next event replaces these variables.
        del image, event
    rate = (received - 1) / ((last - first) / 1e9) if received > 1 and last > first else 0.0
    latencies_ms.sort()
    latency = (
        f"latency p50 {percentile(latencies_ms, 50):.2f} ms, "
        f"p99 {percentile(latencies_ms, 99):.2f} ms, max {latencies_ms[-1]:.2f} ms"
        if latencies_ms
        else "no latency samples"
    )
    ok = bad == 0 and received >= frames
    print(
        f"consumer {'done' if ok else 'FAILED'}: {received}/{frames} frames of "
        f"{WIDTH}x{HEIGHT}x{CHANNELS} checked, {bad} bad, {rate:.1f} frames/s, {latency}",
        flush=True,
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
