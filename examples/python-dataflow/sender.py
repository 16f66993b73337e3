"""Sender of the python-dataflow example: on every tick, sends Arrow arrays to the Rust transformer.

- `numbers`: ``pa.array([i, i + 1, i + 2], pa.uint64())`` (arrives in Rust as a ``UInt64Array``)
- `words`: ``pa.array(["adora", f"msg-{i}"])`` (arrives in Rust as a ``StringArray``)

Both carry ``{"seq": i}`` as metadata. Stops after ``MESSAGES`` ticks (default 50).
"""

import os

import pyarrow as pa
from adora import Node

WIDTH = 3  # values per `numbers` message


def main():
    messages = int(os.environ.get("MESSAGES", "50"))
    node = Node()
    seq = 0
    for event in node:
        if event["type"] == "STOP":
            print(f"stop requested after {seq} messages", flush=True)
            break
        if event["type"] != "INPUT" or event["id"] != "tick":
            continue
        metadata = {"seq": seq}
        node.send_output("numbers", pa.array(range(seq, seq + WIDTH), pa.uint64()), metadata)
        node.send_output("words", pa.array(["adora", f"msg-{seq}"]), metadata)
        seq += 1
        if seq == messages:
            break
    print(f"sender done: {seq} messages sent on each output", flush=True)


if __name__ == "__main__":
    main()
