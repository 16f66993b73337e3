"""Benchmark sink node in Python (the Python twin of `adora-bench-sink`). Times every message on
`data` (send timestamp from the metadata -> the moment the event was handed over), checks every
byte (numpy, on a view of the shared-memory sample), and at each End marker on `control` prints
one report line (``ADORA_BENCH_REPORT {json}``) for the runner.
"""

import json
import sys
import time

from adora import Node

from benchmark_common import Recorder


def main():
    node = Node()
    recorder = None
    stray = 0
    for event in node:
        kind = event["type"]
        if kind == "INPUT" and event["id"] == "data":
            received = time.time_ns()
            value = event["value"]
            if recorder is not None and len(value) == recorder.size:
                data = value.to_numpy(zero_copy_only=True)
                recorder.record(event["metadata"]["timestamp"], received, data)
                del data
            else:
                stray += 1
            # Release the sample now: the sender may wait for it before sending the next one.
            del value, event
        elif kind == "INPUT" and event["id"] == "control":
            marker = json.loads(event["value"].to_numpy().tobytes())
            if "Begin" in marker:
                begin = marker["Begin"]
                recorder = Recorder(begin["size"], begin["phase"], begin["warmup"])
            elif recorder is not None:
                print(recorder.report_line(marker["End"]["sent"]), flush=True)
                recorder = None
        elif kind == "ERROR":
            print(f"error event: {event.get('error')}", file=sys.stderr, flush=True)
        elif kind == "STOP":
            break
    if stray:
        print(f"{stray} data messages arrived outside a Begin/End pair", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
