"""SOA serial arithmetic (RFC 1982, SERIAL_BITS = 32) and the serial-increase policies."""

from __future__ import annotations

import datetime

import pytest

from gitdns.serial import serial_add, serial_gt, serial_increase

MAX = 0xFFFFFFFF
HALF = 1 << 31


# --- RFC 1982 section 3.2: comparison ----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 0),
        (2, 1),
        (100, 99),
        (2024010102, 2024010101),
        (HALF - 1, 0),  # the largest forward step still counts as greater
        (0, MAX),  # wrap-around: 0xFFFFFFFF -> 0 is an increase
        (5, MAX),
        (0, HALF + 1),
        (HALF, HALF - 1),
        (HALF + 1, HALF),
        (MAX, MAX - 1),
        (MAX, HALF),  # MAX - HALF = 2^31 - 1 < 2^31
    ],
)
def test_serial_gt_true(a: int, b: int) -> None:
    assert serial_gt(a, b)
    # RFC 1982: exactly one of a < b, a == b, a > b holds when defined.
    assert not serial_gt(b, a)


@pytest.mark.parametrize("s", [0, 1, 12345, HALF - 1, HALF, MAX])
def test_serial_gt_equal_is_not_greater(s: int) -> None:
    assert not serial_gt(s, s)


@pytest.mark.parametrize(("a", "b"), [(HALF, 0), (0, HALF), (MAX, HALF - 1), (HALF - 1, MAX)])
def test_serial_gt_undefined_pairs_are_neither(a: int, b: int) -> None:
    # RFC 1982 3.2: for i1 and i2 exactly 2^31 apart the comparison is undefined;
    # an implementation must not claim either is greater (a change must not look like an increase).
    assert abs(a - b) == HALF
    assert not serial_gt(a, b)
    assert not serial_gt(b, a)


def test_serial_gt_is_not_plain_integer_comparison() -> None:
    assert serial_gt(0, MAX)
    assert not serial_gt(MAX, 0)
    assert not serial_gt(HALF + 10, 5)  # more than half the space ahead is "behind"


# --- RFC 1982 section 3.1: addition ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "n", "expected"),
    [
        (0, 1, 1),
        (41, 1, 42),
        (MAX, 1, 0),  # wrap-around
        (MAX - 1, 3, 1),
        (0, HALF - 1, HALF - 1),  # largest allowed step
        (MAX, HALF - 1, HALF - 2),
    ],
)
def test_serial_add(s: int, n: int, expected: int) -> None:
    result = serial_add(s, n)
    assert result == expected
    assert 0 <= result <= MAX
    assert serial_gt(result, s)


def test_serial_add_default_is_one() -> None:
    assert serial_add(7) == 8
    assert serial_add(MAX) == 0


@pytest.mark.parametrize("n", [0, -1, HALF, HALF + 1, MAX, 1 << 32])
def test_serial_add_out_of_bounds(n: int) -> None:
    # RFC 1982 3.1: only 0 < n <= 2^31 - 1 may be added.
    with pytest.raises(ValueError):
        serial_add(1000, n)


# --- serial_increase ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"), [(0, 1), (1, 2), (2024010101, 2024010102), (MAX, 0), (HALF, HALF + 1)]
)
def test_serial_increase_increment(s: int, expected: int) -> None:
    assert serial_increase(s) == expected
    assert serial_increase(s, "increment") == expected


def test_serial_increase_increment_ignores_today() -> None:
    assert serial_increase(5, "increment", today=datetime.date(2024, 3, 5)) == 6


@pytest.mark.parametrize(
    ("s", "today", "expected"),
    [
        # An older date serial, or a small counter serial: the day's first serial YYYYMMDD00.
        (2024030400, datetime.date(2024, 3, 5), 2024030500),
        (2023123199, datetime.date(2024, 1, 1), 2024010100),
        (1, datetime.date(2024, 3, 5), 2024030500),
        (0, datetime.date(1999, 12, 31), 1999123100),
        # Wrap-around: from 0xFFFFFFFF the date serial is more than 2^31 behind, i.e. ahead.
        (MAX, datetime.date(2024, 3, 5), 2024030500),
    ],
)
def test_serial_increase_date_moves_to_today(s: int, today: datetime.date, expected: int) -> None:
    result = serial_increase(s, "date", today=today)
    assert result == expected
    assert serial_gt(result, s)


@pytest.mark.parametrize(
    ("s", "today", "expected"),
    [
        # Same day, already at YYYYMMDD00 or later: the date serial would not increase, so +1.
        (2024030500, datetime.date(2024, 3, 5), 2024030501),
        (2024030507, datetime.date(2024, 3, 5), 2024030508),
        # Used up the day's 100 serials: +1 carries into "tomorrow" rather than going backwards.
        (2024030599, datetime.date(2024, 3, 5), 2024030600),
        # A serial ahead of today's date (clock behind, or operator's choice): +1.
        (2030010100, datetime.date(2024, 3, 5), 2030010101),
        # Far ahead in RFC 1982 terms (YYYYMMDD00 would be a decrease): +1.
        (4000000000, datetime.date(2024, 3, 5), 4000000001),
    ],
)
def test_serial_increase_date_when_date_would_not_increase(
    s: int, today: datetime.date, expected: int
) -> None:
    result = serial_increase(s, "date", today=today)
    assert result == expected
    assert serial_gt(result, s)


def test_serial_increase_date_is_deterministic_given_today() -> None:
    today = datetime.date(2021, 7, 9)
    assert serial_increase(10, "date", today=today) == serial_increase(10, "date", today=today)
    assert serial_increase(10, "date", today=today) == 2021070900
