"""The hybrid logical clock that orders every write across nodes.

A clock value is one 64-bit integer: wall-clock milliseconds shifted left by
16 bits, plus a counter in the low bits. Integers compare, sort and index the
same way on every engine, and the triggers can produce the wall part in SQL
(``wall_ms << 16``). Ties between nodes are broken by the node id, so a
``Stamp`` is the pair (clock, node id) and every node picks the same winner.

The counter only grows when two events fall in the same millisecond or when a
node has seen a clock ahead of its own wall clock (a peer whose clock runs
fast): ``tick`` then continues from the largest clock seen, which is what makes
a local edit made after receiving a change always order after it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

COUNTER_BITS = 16


class Stamp(NamedTuple):
    """When a value was written and by which node: compares by clock, then node id."""

    hlc: int
    node: str


def wall_clock() -> int:
    """The current wall clock as an HLC value with a zero counter."""
    return time.time_ns() // 1_000_000 << COUNTER_BITS


def tick(last: int, wall: int | None = None) -> int:
    """The next local clock after ``last`` (the largest clock this node has issued or seen)."""
    now = wall_clock() if wall is None else wall
    return now if now > last else last + 1


def from_wall_ms(ms: int) -> int:
    """An HLC value for a wall time in milliseconds (what the triggers record)."""
    return ms << COUNTER_BITS


def to_wall_ms(hlc: int) -> int:
    """The wall-clock milliseconds of an HLC value, for display."""
    return hlc >> COUNTER_BITS


def describe(hlc: int) -> str:
    """An HLC value as an ISO time with its counter, e.g. ``2026-03-01T10:15:02.125Z+3``."""
    ms = to_wall_ms(hlc)
    seconds, millis = divmod(ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    counter = hlc & ((1 << COUNTER_BITS) - 1)
    return f"{text}+{counter}" if counter else text
