"""The one timestamp form on the wire: ISO 8601 in UTC with its offset.

Every event is stamped, so `utc_now_iso` is on the publish path (BENCHMARKS.md, "Publish path").
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now_iso() -> str:
    """The current time as ISO 8601 with a UTC offset, the only timestamp form on the wire."""
    return utc_iso_of_micros(time.time_ns() // 1000)


_UTC_OFFSET = "+00:00"
_second_prefix: tuple[int, str] = (-1, "")
"""The last whole second `utc_iso_of_micros` formatted, and its text without the offset."""


def utc_iso_of_micros(micros: int) -> str:
    """The instant `micros` microseconds after the Unix epoch, as `datetime.isoformat()` writes
    it in UTC (the fraction left out when it is zero), byte for byte.

    Every event is stamped, so this is on the publish path: the date and time of day are
    formatted by `datetime` once per second and kept, and only the microseconds are added per
    call (about 2.5x cheaper than `datetime.now(UTC).isoformat()`).
    """
    global _second_prefix
    second, fraction = divmod(micros, 1_000_000)
    cached_second, prefix = _second_prefix
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).isoformat()[: -len(_UTC_OFFSET)]
        _second_prefix = (second, prefix)  # one assignment: never a torn pair
    if fraction:
        return f"{prefix}.{fraction:06d}{_UTC_OFFSET}"
    return prefix + _UTC_OFFSET
