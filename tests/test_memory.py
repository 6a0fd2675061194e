"""memory.trim gives freed heap pages back; trim_soon runs one trim at a time, off the loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gitdns import memory

SRC = Path(__file__).resolve().parent.parent / "src"

# In a worker thread (as transfers and loads run), allocate ~100 MB of objects too big for
# pymalloc, keep one in fifty (the arena cannot shrink from its top alone), free the rest;
# print the RSS in MiB before and after the trim.
PROBE = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from gitdns import memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
kept = []
def work():
    objects = [bytes(600 + (i % 7) * 100) for i in range(150_000)]
    kept.extend(objects[::50])
t = threading.Thread(target=work)
t.start()
t.join()
before = rss()
done = memory.trim() if sys.argv[2] == "trim" else None
print(before, rss(), done)
"""


def probe(mode: str) -> tuple[int, int, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(SRC), mode], capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return int(out[0]), int(out[1]), out[2]


@pytest.mark.skipif(memory._malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_a_trim_returns_the_freed_pages_of_a_thread_arena():
    before, after, done = probe("none")
    assert after > 80 and after >= before - 5  # without a trim glibc keeps them
    before, after, done = probe("trim")
    assert done == "True"
    assert before > 80 and after < before - 60, (before, after)


def test_trim_soon_runs_one_trim_in_a_thread_after_the_last_call(monkeypatch):
    if memory._malloc_trim() is None:
        pytest.skip("needs glibc's malloc_trim")
    ran: list[tuple[str, float]] = []
    done = threading.Event()

    def fake_trim() -> bool:
        ran.append((threading.current_thread().name, time.monotonic()))
        done.set()
        return True

    monkeypatch.setattr(memory, "trim", fake_trim)
    first = time.monotonic()
    memory.trim_soon(0.2)
    time.sleep(0.1)
    last = time.monotonic()
    memory.trim_soon(0.2)  # a second job: the trim moves after it, and stays one
    assert done.wait(10)
    time.sleep(0.3)  # (a second trim, wrongly scheduled, would have run by now)
    assert [name for name, _t in ran] == ["malloc-trim"]
    assert ran[0][1] >= last + 0.2 > first + 0.2
    assert memory._due is None
