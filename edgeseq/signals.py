"""SIGTERM handled like Ctrl-C, so every command cleans up its temporary files the same way.

>>> with sigterm_as_interrupt():      # doctest: +SKIP
...     long_job()                    # `kill PID` now raises KeyboardInterrupt in here
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt, so temporary outputs are cleaned up as on Ctrl-C.

    Only installs the handler in the main thread (elsewhere signals cannot be handled); restores the old one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
