"""Type hints of the `adora` package (Python nodes for Adora dataflows)."""

from typing import Any, Dict, Iterator, Optional, Union

import pyarrow

Event = Dict[str, Any]
"""An event: ``type`` ("INPUT", "INPUT_CLOSED", "STOP", "ERROR", "UPSTREAM_RESTARTED",
"UPSTREAM_FAILED"), ``id``, ``value`` (a pyarrow array), ``metadata`` (``timestamp`` in ns since
the Unix epoch, and the sender's parameters), ``error``."""

__version__: str

class Node:
    """An Adora node: its inputs as events, its outputs to send on."""

    def __init__(self) -> None:
        """Connects to the daemon that started this process; raises RuntimeError on a
        configuration error."""
    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None on timeout (seconds) or at the end of the stream."""
    def try_recv(self) -> Optional[Event]:
        """The next event if one is already here, else None."""
    async def recv_async(self) -> Optional[Event]:
        """The next event, for asyncio nodes."""
    def __iter__(self) -> Iterator[Event]: ...
    def __next__(self) -> Event: ...
    def send_output(
        self,
        output_id: str,
        data: Union[pyarrow.Array, bytes, bytearray, memoryview, list, Any],
        metadata: Optional[Dict[str, Any]] = None,
    ) -> None:
        """Sends a pyarrow array, bytes, a buffer, a numpy array (flattened) or a list."""
    def allocate(self, size: int) -> memoryview:
        """A writable memoryview to fill in place and send without a copy (4 KiB and more)."""
    def update_lock(self, reason: str) -> "UpdateLock":
        """Holds off `cluster upgrade` / `cluster drain` of this machine until released:
        ``with node.update_lock("grasping"): ...``. Raises RuntimeError when refused."""
    def samples_in_flight(self) -> int:
        """How many of this node's shared samples a receiver still holds."""
    def drop_count(self, input: str) -> int:
        """How many messages of ``input`` this node did not get: dropped from its full queue,
        or missing on their way from another machine."""
    def node_id(self) -> str: ...
    def dataflow_id(self) -> str: ...

class AllocatedSample:
    """The owner of a memoryview made by ``Node.allocate`` (internal)."""

class UpdateLock:
    """A held update lock (``Node.update_lock``); released by ``release()``, at the end of a
    ``with`` block, or when the node exits."""

    reason: Optional[str]
    held: bool
    def release(self) -> None: ...
    def __enter__(self) -> "UpdateLock": ...
    def __exit__(self, *args: Any) -> bool: ...
