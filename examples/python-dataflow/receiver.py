"""Receiver of the python-dataflow example: checks what the Rust transformer sent back.

- `squared` must be a ``pa.uint64()`` array ``[i*i, (i+1)**2, (i+2)**2]``;
- `upper` must be a ``pa.string()`` array ``["ADORA", f"MSG-{i}"]``;

where ``i`` is the message's ``seq`` metadata, which must count up from 0 on each input. Prints
a summary line at the end and exits 1 on any mismatch, or if fewer than ``MESSAGES`` (default 50)
messages arrived on an input.
"""

import os
import sys

import pyarrow as pa
from adora import Node

WIDTH = 3  # values per `numbers` message of the sender


def expected(input_id, seq):
    """The array the transformer must send on `input_id` for message `seq`."""
    if input_id == "squared":
        return pa.array([n * n for n in range(seq, seq + WIDTH)], pa.uint64())
    return pa.array(["ADORA", f"MSG-{seq}"], pa.string())


def check(event, count):
    """Returns a description of what is wrong with `event`, or None when it is right."""
    input_id = event["id"]
    value = event["value"]
    seq = event["metadata"].get("seq")
    if seq != count:
        return f"{input_id}: expected seq {count}, got {seq!r}"
    want = expected(input_id, seq)
    if value.type != want.type:
        return f"{input_id} #{seq}: expected type {want.type}, got {value.type}"
    if not value.equals(want):
        return f"{input_id} #{seq}: expected {want.to_pylist()}, got {value.to_pylist()}"
    return None


def main():
    messages = int(os.environ.get("MESSAGES", "50"))
    node = Node()
    counts = {"squared": 0, "upper": 0}
    errors = []
    for event in node:
        kind = event["type"]
        if kind == "INPUT" and event["id"] in counts:
            problem = check(event, counts[event["id"]])
            if problem:
                print(f"MISMATCH {problem}", flush=True)
                errors.append(problem)
            counts[event["id"]] += 1
        elif kind == "INPUT_CLOSED":
            print(f"input `{event['id']}` closed", flush=True)
        elif kind == "ERROR":
            print(f"error event: {event.get('error')}", flush=True)
        elif kind == "STOP":
            break
    missing = {i: messages - n for i, n in counts.items() if n < messages}
    ok = not errors and not missing
    print(
        f"receiver {'done' if ok else 'FAILED'}: {counts['squared']} squared and "
        f"{counts['upper']} upper-case messages checked (expected {messages} each), "
        f"{len(errors)} mismatches",
        flush=True,
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
