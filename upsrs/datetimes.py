"""DA / TM / DT values as instants and intervals, for range matching and time indexes.

A value of reduced precision names an interval ("2024" is the whole year), so single-value
and range matching compare by meaning (PS3.4 C.2.2.2.5): a range ``a-b`` matches values whose
instant lies between the start of ``a`` and the end of ``b``. DT values without a UTC offset
are taken in the offset the server is configured with (default UTC).
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from datetime import datetime, timedelta, timezone

# PS3.5 Table 6.2-1: the fraction .FFFFFF only follows the seconds (YYYYMMDDHHMMSS.FFFFFF,
# HHMMSS.FFFFFF); components are dropped from the right only.
_DT = re.compile(
    r"^(?P<Y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})(?:(?P<H>\d{2})(?:(?P<M>\d{2})"
    r"(?:(?P<S>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?)?)?)?(?P<z>[+-]\d{4})?$"
)
_DA = re.compile(r"^(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$")
_TM = re.compile(r"^(?P<H>\d{2})(?:(?P<M>\d{2})(?:(?P<S>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?$")
_DAY = 86400.0

DEFAULT_TZ = timezone.utc


def _offset(z: str | None, tz: timezone) -> timezone:
    if not z:
        return tz
    sign = -1 if z[0] == "-" else 1
    hours, minutes = int(z[1:3]), int(z[3:5])
    if hours > 14 or minutes > 59:
        raise ValueError(f"UTC offset {z} out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


@functools.lru_cache(maxsize=8192)
def dt_interval(value: str, tz: timezone = DEFAULT_TZ) -> tuple[float, float]:
    """[start, end) of a DT value in POSIX seconds; ValueError if it is not a valid DT.
    Cached: a workitem's DT values are parsed again at each of its changes (validation,
    the start-time index), and the parse is ~20 µs."""
    m = _DT.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a DT value (YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX])")
    g = m.groupdict()
    parts = [g["Y"], g["m"], g["d"], g["H"], g["M"], g["S"]]
    # precision is contiguous: the regex nests each component inside the one before it
    year = int(parts[0])
    month = int(parts[1] or 1)
    day = int(parts[2] or 1)
    hour = int(parts[3] or 0)
    minute = int(parts[4] or 0)
    second = int(parts[5] or 0)
    frac = g["f"]
    micro = int((frac or "0").ljust(6, "0"))
    tzinfo = _offset(g["z"], tz)
    if second == 60:  # leap second: DICOM allows it; compare as the last second
        second = 59
    start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tzinfo)
    # The end is computed in seconds, not as a datetime: the interval of a value in year 9999
    # ends in year 10000, which datetime cannot represent (the value itself is valid).
    if frac:
        step = 10.0 ** -len(frac)
    elif parts[5]:
        step = 1.0
    elif parts[4]:
        step = 60.0
    elif parts[3]:
        step = 3600.0
    elif parts[2]:
        step = _DAY
    elif parts[1]:
        step = calendar.monthrange(year, month)[1] * _DAY
    else:
        step = (366 if calendar.isleap(year) else 365) * _DAY
    begin = start.timestamp()
    return begin, begin + step


def da_interval(value: str, tz: timezone = DEFAULT_TZ) -> tuple[float, float]:
    m = _DA.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a DA value (YYYYMMDD)")
    start = datetime(int(m["Y"]), int(m["m"]), int(m["d"]), tzinfo=tz).timestamp()
    return start, start + _DAY


def tm_interval(value: str) -> tuple[float, float]:
    """[start, end) of a TM value in seconds since midnight."""
    m = _TM.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a TM value (HH[MM[SS[.F]]])")
    h, mi, s = int(m["H"]), int(m["M"] or 0), int(m["S"] or 0)
    if h > 23 or mi > 59 or s > 60:
        raise ValueError(f"{value!r} is not a valid time of day")
    frac = m["f"]
    start = h * 3600 + mi * 60 + s + (int(frac) / 10 ** len(frac) if frac else 0.0)
    if frac:
        step = 10 ** -len(frac)
    elif m["S"]:
        step = 1
    elif m["M"]:
        step = 60
    else:
        step = 3600
    return start, start + step


def interval(vr: str, value: str, tz: timezone = DEFAULT_TZ) -> tuple[float, float]:
    if vr == "DT":
        return dt_interval(value, tz)
    if vr == "DA":
        return da_interval(value, tz)
    if vr == "TM":
        return tm_interval(value)
    raise ValueError(f"VR {vr} has no time interval")


_SECOND: dict[timezone, tuple[int, str]] = {}  # per zone: the last second formatted, its text


def dt_now(tz: timezone = DEFAULT_TZ) -> str:
    """The current time as a DT value with its UTC offset, to the microsecond: what
    ``datetime.now(tz).strftime("%Y%m%d%H%M%S.%f%z")`` gives. Every commit stamps one, and
    commits come hundreds a second: the text up to the second is made once a second, the
    microseconds appended (``time.time_ns``: no rounding to a float)."""
    ns = time.time_ns()
    second, micro = divmod(ns // 1000, 1_000_000)
    cached = _SECOND.get(tz)
    if cached is None or cached[0] != second:
        # fixed-offset zones: the offset's text is the same at every instant
        cached = _SECOND[tz] = (second, datetime.fromtimestamp(second, tz).strftime("%Y%m%d%H%M%S.{}%z"))
    return cached[1].format(f"{micro:06d}")


def parse_offset(text: str) -> timezone:
    """A configured UTC offset such as ``+0100`` or ``UTC``."""
    return timezone.utc if text.upper() in ("", "UTC", "Z") else _offset(text, timezone.utc)
