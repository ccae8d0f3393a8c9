"""Time: the frequency of a set of series, their regular grid, calendar and holiday features.

Timestamps are numpy ``datetime64[s]`` (naive: PostgreSQL ``timestamp``, or ``date`` at midnight).
Frequencies are calendar units, so monthly, quarterly and yearly steps follow the calendar (month
ends stay month ends) while hours, days and weeks are fixed lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlml.errors import INVALID_PARAMETER, SqlmlError

# name -> (numpy unit used for arithmetic, steps of that unit, seasonal period, typical seconds)
FREQUENCIES = {
    "hour": ("h", 1, 24, 3600),
    "day": ("D", 1, 7, 86400),
    "week": ("D", 7, 52, 7 * 86400),
    "month": ("M", 1, 12, 30.44 * 86400),
    "quarter": ("M", 3, 4, 91.31 * 86400),
    "year": ("M", 12, 1, 365.25 * 86400),
}


@dataclass(frozen=True)
class Frequency:
    name: str

    @property
    def season(self) -> int:
        return FREQUENCIES[self.name][2]

    def add(self, ts: np.ndarray, steps) -> np.ndarray:
        """``ts`` moved by ``steps`` periods (element-wise; calendar months for month/quarter/year)."""
        unit, per, _, _ = FREQUENCIES[self.name]
        ts = np.asarray(ts, dtype="datetime64[s]")
        steps = np.asarray(steps, dtype=np.int64) * per
        if unit != "M":
            return ts + steps.astype(f"timedelta64[{unit}]")
        # month arithmetic: a month end stays a month end; another day keeps its day (clipped to the month)
        day = ts.astype("datetime64[D]")
        time_of_day = ts - day.astype("datetime64[s]")
        months = day.astype("datetime64[M]")
        new_months = months + steps.astype("timedelta64[M]")
        new_last = (new_months + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
        is_month_end = (day + np.timedelta64(1, "D")).astype("datetime64[M]") != months
        kept = np.minimum(new_months.astype("datetime64[D]") + (day - months.astype("datetime64[D]")), new_last)
        return np.where(is_month_end, new_last, kept).astype("datetime64[s]") + time_of_day

    def index(self, origin: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """How many periods ``ts`` lies after ``origin`` (rounded to the nearest period)."""
        unit, per, _, _ = FREQUENCIES[self.name]
        origin = np.asarray(origin, dtype="datetime64[s]")
        ts = np.asarray(ts, dtype="datetime64[s]")
        if unit != "M":
            seconds = (ts - origin).astype(np.int64)
            return np.rint(seconds / (per * {"h": 3600, "D": 86400}[unit])).astype(np.int64)
        months = (ts.astype("datetime64[M]") - origin.astype("datetime64[M]")).astype(np.int64)
        return np.rint(months / per).astype(np.int64)


def infer_frequency(series_ts: list[np.ndarray]) -> Frequency:
    """The frequency whose typical step is nearest to the median step between consecutive timestamps
    of every series (gaps make some steps multiples of it; the median ignores a minority of them).
    Raises when there is no step at all (every series has one timestamp)."""
    steps = [np.diff(np.unique(t.astype("datetime64[s]"))).astype(np.int64) for t in series_ts]
    steps = np.concatenate([s for s in steps if len(s)]) if any(len(s) for s in steps) else np.array([], np.int64)
    if len(steps) == 0:
        raise SqlmlError("the frequency cannot be inferred: no series has two distinct timestamps",
                         hint='pass it: options => \'{"frequency": "day"}\' (hour, day, week, month, quarter or year)',
                         sqlstate=INVALID_PARAMETER)
    step = float(np.median(steps))
    name = min(FREQUENCIES, key=lambda f: abs(np.log(step / FREQUENCIES[f][3])))
    typical = FREQUENCIES[name][3]
    if not 0.7 * typical <= step <= 1.4 * typical:
        raise SqlmlError(f"the time column's typical step ({step / 3600:g} hours) is not an hour, day, week, month, "
                         "quarter or year", sqlstate=INVALID_PARAMETER,
                         hint="aggregate the data to one of those frequencies first (date_trunc), or pass "
                              'options => \'{"frequency": "..."}\'')
    return Frequency(name)


def frequency(name: str) -> Frequency:
    if name not in FREQUENCIES:
        raise SqlmlError(f'unknown frequency "{name}"', hint=f"use one of: {', '.join(FREQUENCIES)}",
                         sqlstate=INVALID_PARAMETER)
    return Frequency(name)


# --- holidays -------------------------------------------------------------------------------------
# A small built-in calendar (no download, no extra package): the fixed-date and Easter-based public
# holidays most Western calendars share, plus the US floating ones. A holiday as a feature only has
# to mark the days where demand behaves differently; the model learns how.

FIXED_HOLIDAYS = ((1, 1), (5, 1), (7, 4), (11, 11), (12, 24), (12, 25), (12, 26), (12, 31))


def _easter(year: int) -> np.datetime64:
    """Gregorian Easter Sunday (the anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month = (h + m - 7 * n + 114) // 31
    day = (h + m - 7 * n + 114) % 31 + 1
    return np.datetime64(f"{year:04d}-{month:02d}-{day:02d}")


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> np.datetime64:
    """The n-th ``weekday`` (0 = Monday) of a month; n = -1 for the last one."""
    first = np.datetime64(f"{year:04d}-{month:02d}-01")
    if n > 0:
        shift = (weekday - _weekday(first)) % 7
        return first + np.timedelta64(shift + 7 * (n - 1), "D")
    last = (first.astype("datetime64[M]") + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
    return last - np.timedelta64((_weekday(last) - weekday) % 7, "D")


def _weekday(day) -> np.ndarray:
    """0 = Monday (1970-01-01 was a Thursday)."""
    return (np.asarray(day, dtype="datetime64[D]").astype(np.int64) + 3) % 7


def holidays(first_year: int, last_year: int) -> np.ndarray:
    """Sorted holiday dates (datetime64[D]) of the built-in calendar from ``first_year`` to ``last_year``."""
    days = []
    for y in range(first_year, last_year + 1):
        days += [np.datetime64(f"{y:04d}-{m:02d}-{d:02d}") for m, d in FIXED_HOLIDAYS]
        easter = _easter(y)
        days += [easter - np.timedelta64(2, "D"), easter, easter + np.timedelta64(1, "D")]
        days += [_nth_weekday(y, 5, 0, -1), _nth_weekday(y, 9, 0, 1),
                 _nth_weekday(y, 11, 3, 4)]  # US: Memorial, Labor, Thanksgiving
        days.append(_nth_weekday(y, 11, 3, 4) + np.timedelta64(1, "D"))  # the Friday after Thanksgiving
    return np.unique(np.array(days, dtype="datetime64[D]"))


# --- calendar features ---------------------------------------------------------------------------

def calendar_features(ts: np.ndarray, freq: Frequency) -> dict[str, np.ndarray]:
    """Features of each timestamp that the global model learns seasonality and holiday effects from.

    Which ones depends on the frequency: an hourly series gets the hour, a daily one the weekday,
    every one below a year the position in the year. Holiday features (the day is one; days to the
    next and since the last, clipped at 7) are for hourly and daily data, where a single day matters."""
    ts = np.asarray(ts, dtype="datetime64[s]")
    day = ts.astype("datetime64[D]")
    out: dict[str, np.ndarray] = {}
    if freq.name == "hour":
        out["hour"] = ((ts - day.astype("datetime64[s]")).astype(np.int64) // 3600).astype(np.float64)
    if freq.name in ("hour", "day"):
        out["weekday"] = _weekday(day).astype(np.float64)
        out["day_of_month"] = (day - day.astype("datetime64[M]").astype("datetime64[D]")).astype(np.float64) + 1
    if freq.name != "year":
        year_start = day.astype("datetime64[Y]").astype("datetime64[D]")
        out["day_of_year"] = (day - year_start).astype(np.float64) + 1
        out["month"] = (day.astype("datetime64[M]").astype(np.int64) % 12).astype(np.float64) + 1
    if freq.name in ("hour", "day") and len(day):
        years = day.astype("datetime64[Y]").astype(np.int64) + 1970
        cal = holidays(int(years.min()) - 1, int(years.max()) + 1).astype(np.int64)
        d = day.astype(np.int64)
        pos = np.searchsorted(cal, d)
        nxt = cal[np.minimum(pos, len(cal) - 1)]
        prev = cal[np.maximum(np.searchsorted(cal, d, side="right") - 1, 0)]
        out["holiday"] = (nxt == d).astype(np.float64)
        out["days_to_holiday"] = np.clip(nxt - d, 0, 7).astype(np.float64)
        out["days_since_holiday"] = np.clip(d - prev, 0, 7).astype(np.float64)
    return out
