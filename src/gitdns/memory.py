"""Giving memory back to the system after big, short-lived work.

Why: an AXFR of a million-record zone holds its messages (about 40 MB) for a moment, and a
full load of a big file holds the file and its lines; CPython frees those objects, but glibc's
malloc keeps the freed pages in the arena of the thread that used them (transfers and loads run
in worker threads) instead of returning them. The server's RSS then stays 40-70 MB above what
it holds, after every such job: measured on the 1.2M-record benchmark zone, 132 MiB before an
AXFR and 199 MiB for good after it; 146-168 MiB with a trim after each. `malloc_trim(0)` hands
the free pages of every arena back. It runs in a thread (ctypes releases the GIL for the call),
never on the event loop, and where there is no glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from functools import cache

log = logging.getLogger("gitdns.memory")

#: Seconds between the end of a big job and the trim: the job's buffers are usually freed by
#: then (a transfer's messages once written), and jobs close together share one trim.
TRIM_DELAY = 0.5

_lock = threading.Lock()
_due: float | None = None  # when the scheduled trim runs (monotonic), None: none scheduled


@cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library, or none found)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim() -> bool:
    """Return free heap pages to the system now; False where malloc_trim is missing."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def trim_soon(delay: float = TRIM_DELAY) -> None:
    """Trim in a thread once `delay` seconds have passed since the last call: jobs close
    together share one trim, which comes after the last of them has freed its memory.
    Callable from the event loop and from worker threads."""
    global _due
    if _malloc_trim() is None:
        return
    with _lock:
        start = _due is None
        _due = time.monotonic() + delay
    if start:
        threading.Thread(target=_trim_when_due, name="malloc-trim", daemon=True).start()


def _trim_when_due() -> None:
    global _due
    while True:
        with _lock:
            assert _due is not None
            wait = _due - time.monotonic()
            if wait <= 0:
                _due = None
                break
        time.sleep(wait)
    try:
        started = time.monotonic()
        trim()
        log.debug("malloc_trim took %.1f ms", (time.monotonic() - started) * 1000)
    except Exception:  # only memory the system gets back later: never worth a failure
        log.exception("malloc_trim failed")
