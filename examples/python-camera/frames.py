"""The synthetic frames of the python-camera example, shared by the camera and the consumer.

Frame ``n`` is a 480x640 RGB image: red is a horizontal gradient (``x % 256``), green a vertical
one (``y % 256``), blue the frame counter (``n % 256``) in every pixel. A consumer can check every
pixel of a frame against its number with two numpy comparisons.
"""

import numpy as np

HEIGHT = 480
WIDTH = 640
CHANNELS = 3
FRAME_BYTES = HEIGHT * WIDTH * CHANNELS  # 921,600 bytes: travels through shared memory


def gradient():
    """Red and green channels of every frame (the blue channel is left 0)."""
    image = np.zeros((HEIGHT, WIDTH, CHANNELS), dtype=np.uint8)
    image[:, :, 0] = (np.arange(WIDTH) % 256).astype(np.uint8)[np.newaxis, :]
    image[:, :, 1] = (np.arange(HEIGHT) % 256).astype(np.uint8)[:, np.newaxis]
    return image


def draw(image, base, number):
    """Writes frame `number` into `image` (a writable (480, 640, 3) uint8 array) in place."""
    np.copyto(image[:, :, :2], base[:, :, :2])
    image[:, :, 2] = number % 256


def is_frame(image, base, number):
    """Whether `image` is exactly frame `number`."""
    return bool(
        image.shape == (HEIGHT, WIDTH, CHANNELS)
        and np.array_equal(image[:, :, :2], base[:, :, :2])
        and (image[:, :, 2] == number % 256).all()
    )
