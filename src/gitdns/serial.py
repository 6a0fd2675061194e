"""SOA serial arithmetic (RFC 1982, SERIAL_BITS = 32)."""

from __future__ import annotations

import datetime

_HALF = 1 << 31
_MOD = 1 << 32


def serial_gt(a: int, b: int) -> bool:
    """True when serial `a` is greater than `b` in RFC 1982 arithmetic."""
    return a != b and ((a > b and a - b < _HALF) or (a < b and b - a > _HALF))


def serial_add(serial: int, n: int = 1) -> int:
    """`serial + n` modulo 2^32; RFC 1982 allows 0 < n < 2^31."""
    if not 0 < n < _HALF:
        raise ValueError("a serial may only be increased by 1 .. 2^31-1")
    return (serial + n) % _MOD


def serial_increase(
    serial: int, policy: str = "increment", today: datetime.date | None = None
) -> int:
    """The next serial after `serial`: +1, or with policy "date" the next YYYYMMDDnn."""
    if policy == "date":
        day = (today or datetime.date.today()).strftime("%Y%m%d")
        candidate = int(day) * 100
        if serial_gt(candidate, serial):
            return candidate
    return serial_add(serial, 1)
