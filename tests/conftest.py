"""Collect garbage after every test, so that an object one test leaks (a socket of a test's own
HTTP server, say) is reported at that test's end and not as an error inside a later test that
turns ResourceWarnings into failures."""

import gc

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test():
    yield
    gc.collect()
