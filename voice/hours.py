"""Business hours and holidays: `[hours NAME]` sections, and `open("NAME")` in flow expressions.

    [hours support]
    timezone = Europe/Berlin
    mon = 08:00-18:00
    tue = 08:00-12:00, 13:00-18:00
    sat = closed                       # a day not listed is closed too
    holidays = 2026-12-24, 2026-12-25, 2026-12-31

A range may cross midnight (`fri = 20:00-02:00` is open Friday night into Saturday); `24h`
opens the whole day. Holidays close the day whatever its hours (a range crossing into a holiday
still ends at midnight).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True, kw_only=True)
class BusinessHours:
    name: str
    timezone: str = "UTC"
    week: dict[int, tuple[tuple[time, time], ...]] = field(default_factory=dict)  # weekday -> ranges
    holidays: frozenset[date] = frozenset()

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def is_open(self, when: datetime) -> bool:
        """Open at `when` (an aware datetime, any zone)?"""
        local = when.astimezone(self.zone)
        today, now = local.date(), local.time()
        yesterday = today - timedelta(days=1)
        if today not in self.holidays:
            for start, end in self.week.get(today.weekday(), ()):
                if start <= end and start <= now < end:
                    return True
                if start > end and now >= start:  # crossing midnight: the evening part
                    return True
        # the part after midnight of yesterday's range that crosses midnight
        if yesterday not in self.holidays and today not in self.holidays:
            for start, end in self.week.get(yesterday.weekday(), ()):
                if start > end and now < end:
                    return True
        return False

    def next_open(self, after: datetime, *, days: int = 366) -> datetime | None:
        """`after` itself when open then, else the next opening (an aware datetime in the
        schedule's zone) within `days` days; None when the line never opens in that time."""
        if self.is_open(after):
            return after
        local = after.astimezone(self.zone)
        for offset in range(days + 1):
            day = local.date() + timedelta(days=offset)
            if day in self.holidays:
                continue
            starts = sorted(start for start, _end in self.week.get(day.weekday(), ()))
            for start in starts:
                at = datetime.combine(day, start, tzinfo=self.zone)
                if at > local and self.is_open(at):
                    return at
        return None

    def describe(self) -> str:
        """The opening hours as a caller hears them: "Monday to Friday from 8 AM to 6 PM and
        Saturday from 9 AM to noon" ("" when no day is open). Holidays are not listed."""
        groups: list[tuple[int, int, tuple[tuple[time, time], ...]]] = []  # first day, last day, ranges
        for day in range(7):
            ranges = self.week.get(day, ())
            if not ranges:
                continue
            if groups and groups[-1][1] == day - 1 and groups[-1][2] == ranges:
                groups[-1] = (groups[-1][0], day, ranges)
            else:
                groups.append((day, day, ranges))
        parts = []
        for first, last, ranges in groups:
            days = SPOKEN_DAYS[first] if first == last else (
                f"{SPOKEN_DAYS[first]} and {SPOKEN_DAYS[last]}" if last == first + 1
                else f"{SPOKEN_DAYS[first]} to {SPOKEN_DAYS[last]}")
            times = " and ".join("all day" if _all_day(a, b) else f"from {_spoken(a)} to {_spoken(b)}"
                                 for a, b in ranges)
            parts.append(f"{days} {times}")
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else ""


SPOKEN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _all_day(start: time, end: time) -> bool:
    return start == time(0, 0) and end == time(23, 59, 59, 999999)


def _spoken(t: time) -> str:
    """08:00 -> "8 AM", 13:30 -> "1:30 PM", 12:00 -> "noon", 00:00 / 24:00 -> "midnight"."""
    if t in (time(0, 0), time(23, 59, 59, 999999)):
        return "midnight"
    if t == time(12, 0):
        return "noon"
    hour = t.hour % 12 or 12
    return f"{hour}{f':{t.minute:02d}' if t.minute else ''} {'AM' if t.hour < 12 else 'PM'}"


def _ranges(text: str) -> tuple[tuple[time, time], ...]:
    t = text.strip().lower()
    if t in ("closed", "no", ""):
        return ()
    if t in ("24h", "open", "all day"):
        return ((time(0, 0), time(23, 59, 59, 999999)),)
    out: list[tuple[time, time]] = []
    for part in (p.strip() for p in t.split(",")):
        m = _RANGE.fullmatch(part)
        if not m:
            raise ValueError(f"expected HH:MM-HH:MM ranges, 24h or closed, found {part!r}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise ValueError(f"not a time of day in {part!r}")
        start = time(h1, m1)
        end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
        if start == end:
            raise ValueError(f"empty range {part!r}")
        out.append((start, end))
    return tuple(out)


def parse_hours(name: str, raw: Mapping[str, str]) -> BusinessHours:
    """One `[hours NAME]` section; ValueError naming the key and the problem."""
    week: dict[int, tuple[tuple[time, time], ...]] = {}
    timezone, holidays = "UTC", frozenset[date]()
    for key, value in raw.items():
        try:
            if key == "timezone":
                timezone = value.strip()
                zoneinfo.ZoneInfo(timezone)
            elif key == "holidays":
                holidays = frozenset(date.fromisoformat(d.strip()) for d in value.split(",") if d.strip())
            elif key in DAYS:
                week[DAYS.index(key)] = _ranges(value)
            else:
                raise ValueError(f"unknown key (known: timezone, holidays, {', '.join(DAYS)})")
        except zoneinfo.ZoneInfoNotFoundError:
            raise ValueError(f"{key}: unknown time zone {value.strip()!r}") from None
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return BusinessHours(name=name, timezone=timezone, week=week, holidays=holidays)


def now_view(when: datetime) -> dict[str, object]:
    """What `now` is in a flow expression: `now.hour < 9`, `now.weekday == "sat"`..."""
    return {"year": when.year, "month": when.month, "day": when.day, "hour": when.hour,
            "minute": when.minute, "weekday": DAYS[when.weekday()], "date": when.date().isoformat(),
            "time": when.strftime("%H:%M"), "timestamp": when.timestamp()}
