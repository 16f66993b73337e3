"""Camera of the python-camera example: on every tick (30 Hz) produces one 640x480x3 uint8 frame,
written in place into a shared-memory sample from ``node.allocate`` and sent with no copy. Stops
after ``FRAMES`` frames (default 90). The frame number goes in the metadata (``"frame"``) and in
the pixels (see frames.py).
"""

import os

import numpy as np
from adora import Node

from frames import FRAME_BYTES, HEIGHT, WIDTH, CHANNELS, draw, gradient


def capture(node, base, number):
    """A sample holding frame `number`: a writable memoryview over shared memory."""
    sample = node.allocate(FRAME_BYTES)
    # A numpy view of the sample: drawing writes straight into shared memory. The view is dropped
    # when this function returns, before the sample is sent.
    image = np.frombuffer(sample, dtype=np.uint8).reshape(HEIGHT, WIDTH, CHANNELS)
    draw(image, base, number)
    return sample


def main():
    frames = int(os.environ.get("FRAMES", "90"))
    node = Node()
    base = gradient()
    sent = 0
    for event in node:
        if event["type"] == "STOP":
            break
        if event["type"] != "INPUT" or event["id"] != "tick":
            continue
        node.send_output("frame", capture(node, base, sent), {"frame": sent})
        sent += 1
        if sent == frames:
            break
    print(f"camera done: {sent} frames of {WIDTH}x{HEIGHT}x{CHANNELS} sent", flush=True)


if __name__ == "__main__":
    main()
