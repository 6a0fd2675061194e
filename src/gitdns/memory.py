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
from functools import cache

log = logging.getLogger("gitdns.memory")

#: Seconds between the end of a big job and the trim: the job's buffers are usually freed by
#: then (a transfer's messages once written), and jobs close together share one trim.
TRIM_DELAY = 0.5

_pending = threading.Lock()  # held while a trim is scheduled or running: one at a time


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
    """Trim in a thread `delay` seconds from now, unless a trim is already scheduled (that one
    also covers this job). Callable from the event loop and from worker threads."""
    if _malloc_trim() is None or not _pending.acquire(blocking=False):
        return

    def run() -> None:
        try:
            trim()
        except Exception:  # only memory the system gets back later: never worth a failure
            log.exception("malloc_trim failed")
        finally:
            _pending.release()

    timer = threading.Timer(delay, run)
    timer.name = "malloc-trim"
    timer.daemon = True
    timer.start()
