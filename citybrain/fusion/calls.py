"""Calls judged against what is usual: the statistics of the call-driven early warnings.

A street's calls of one category are compared with a baseline for the same street, category and hour of
the week, and the excess is judged with a test of the surveillance literature rather than a fixed count:

- **Baseline.** The calls the worker saw in the same window one, two, ... ``HISTORY_WEEKS`` weeks before
  (the same hour of the same weekday), shrunk towards a prior: what the rest of the city's calls in the
  window imply for a street of its population (the city's rhythm now: a stormy evening raises every
  street's expectation). A city with no history yet is judged on the prior alone, which is as uncertain as
  the city's count it rests on and as streets stray from their population share, and weighs as much as
  ``PRIOR_WEEKS`` weeks of history (Gamma-Poisson: the baseline's own uncertainty widens the range of what is
  usual): a worker that has just started, and has seen few of the city's calls, expects little with
  little certainty (the fusion worker's warm-up re-reads a day before it judges live calls).
- **Burst.** The calls in the last hour and in the last three hours, each against the negative-binomial
  predictive of the baseline: a warning when the chance of that many calls at the usual rate is below the
  city's false-alarm rate (split over the windows). The call being judged is not counted against itself
  (the chance is of the *other* calls in the window, given that this one came), so a street at its usual
  rate warns at most at that rate per call.
- **Trend.** A Poisson CUSUM per street and category (Page; Lucas 1985) for a rate ``CUSUM_RATIO`` times
  the baseline: each call adds ln(ratio), each hour takes away (ratio - 1) x the hour's usual rate, never
  below zero; a warning when it reaches ln(1 / false-alarm rate) (Wald's bound: a street at its usual
  rate climbs from zero that far with at most that chance). It catches a rate a few times the usual one
  held for hours that no single window shows.
- **Held.** A warning is a call judged beyond chance; a city event from calls alone (a street's noise
  complaints with no gauge or inspector there yet) needs the excess *held*: at a call judged beyond chance,
  each of the last ``PIECES`` pieces of ``PIECE`` (three of 80 minutes: four hours) holds more calls than
  usual, each piece's chance at the usual rate below the square root of the false-alarm rate (any two
  together below the rate itself). A burst no longer than a piece lies in two pieces at most, whatever its
  size, so the third must show an excess of its own: a short burst opens no event; a rise held for four
  hours, or a burst that goes on, does. Two symptoms of one hazard (a burst main's leak and no-water calls)
  corroborate each other the same way: each *unusual*, a window's chance below the square root of the rate.

Everything is in event time: the same calls give the same warnings, whatever the wall clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from citybrain.settings import Settings

#: What a city gets when it sets no false-alarm rate (``CITYBRAIN_CALL_FALSE_ALARM_RATE``): the chance, per call,
#: that a street at its usual rate is warned of (one in 5,000 calls at most, and fewer: counts are whole numbers).
DEFAULT_FALSE_ALARM_RATE: float = Settings.model_fields["call_false_alarm_rate"].default
WINDOWS = (timedelta(hours=1), timedelta(hours=3))
HISTORY_WEEKS = 8            # how many weeks back the same hour of the week is looked up
PRIOR_WEEKS = 2.0            # the prior weighs as much as this many weeks of history
STREET_SPREAD = 0.5          # how far a street's calls stray from its population share of the city's (relative)
MIN_EXPECTED_PER_H = 0.2 / 3   # the least a street is expected to call in an hour, whatever the city's calls say
CUSUM_RATIO = 3.0            # the trend the CUSUM looks for: three times the usual rate, sustained
PIECE = timedelta(minutes=80)   # an excess held in PIECES of these in a row opens an event from calls alone
PIECES = 3
BUCKET = timedelta(minutes=15)
WEEK = timedelta(days=7)
_EPOCH = datetime(2000, 1, 3)   # a Monday; buckets are counted from it (UTC)


def bucket_of(at: datetime) -> int:
    """The 15-minute bucket ``at`` falls in, counted from a fixed Monday (UTC)."""
    return int((at.replace(tzinfo=None) - _EPOCH) // BUCKET)


@dataclass(frozen=True)
class Baseline:
    """What is usual for a window: the predictive of its count (mean and spread) and what it rests on."""

    expected: float            # mean calls in the window
    spread: float              # standard deviation of the predictive (the baseline's uncertainty included)
    shape: float               # the negative binomial's shape (Gamma-Poisson); infinite would be Poisson
    weeks: int                 # weeks of history in it (0: the prior alone)

    def chance_of_at_least(self, count: int) -> float:
        """P(N >= count) at the usual rate: the predictive's upper tail."""
        return negative_binomial_tail(count, self.expected, self.shape)


def negative_binomial_tail(count: int, mean: float, shape: float) -> float:
    """P(N >= count) for N negative binomial with this mean and shape (variance mean + mean^2 / shape); Poisson
    for an infinite shape (a mean known exactly). With no mean to judge against (nothing usual known yet: the
    city's first calls, no history) no count is beyond chance: 1.0."""
    if count <= 0 or not mean > 0:
        return 1.0
    p = shape / (shape + mean) if math.isfinite(shape) and shape > 0 else 1.0   # success probability, (shape, p) form
    if p < 1.0:                                      # else as good as Poisson (a spread far below the mean's)
        log_p, log_q = math.log(p), math.log1p(-p)
        base = math.lgamma(shape)

        def pmf(k: int) -> float:
            return math.exp(math.lgamma(k + shape) - base - math.lgamma(k + 1) + shape * log_p + k * log_q)
    else:
        log_mean = math.log(mean)

        def pmf(k: int) -> float:
            return math.exp(k * log_mean - mean - math.lgamma(k + 1))

    if count <= mean:                                # a large tail: one minus the few terms below it
        return max(0.0, 1.0 - sum(pmf(k) for k in range(count)))
    total, k = 0.0, count
    while True:
        term = pmf(k)
        total += term
        if term < 1e-16 * max(total, 1e-300) or k > count + 10_000:
            return min(1.0, total)
        k += 1


class CallHistory:
    """Calls seen by (area, category) in 15-minute buckets, and the hours in which the city called at all (the
    hours the worker was there to see), for ``HISTORY_WEEKS`` weeks and a day behind the newest call."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], dict[int, int]] = {}
        self.hours_seen: set[int] = set()
        self.newest = -1

    def add(self, area: str, category: str, at: datetime) -> None:
        b = bucket_of(at)
        counts = self.buckets.setdefault((area, category), {})
        counts[b] = counts.get(b, 0) + 1
        self.hours_seen.add(b // 4)
        if b > self.newest + 4 * 24:       # forget what no baseline looks at any more, once a day
            self.newest = b
            self._forget(b - (HISTORY_WEEKS + 1) * 7 * 24 * 4)

    def _forget(self, oldest: int) -> None:
        self.hours_seen = {h for h in self.hours_seen if h * 4 >= oldest}
        for key in list(self.buckets):
            kept = {b: n for b, n in self.buckets[key].items() if b >= oldest}
            if kept:
                self.buckets[key] = kept
            else:
                del self.buckets[key]

    def weeks_before(self, area: str, category: str, at: datetime, window: timedelta) -> tuple[int, int]:
        """(weeks seen, calls in them) of the window ending at ``at`` one to ``HISTORY_WEEKS`` weeks before; a week
        counts when the city called in its hour (the worker was there to see it)."""
        counts = self.buckets.get((area, category), {})
        end = bucket_of(at)
        width = max(1, round(window / BUCKET))
        weeks = calls = 0
        for k in range(1, HISTORY_WEEKS + 1):
            last = end - k * 7 * 24 * 4
            if last // 4 not in self.hours_seen:
                continue
            weeks += 1
            calls += sum(counts.get(b, 0) for b in range(last - width + 1, last + 1))
        return weeks, calls


def baseline(prior: float, city_calls: int, weeks: int, calls: int) -> Baseline:
    """The predictive of a window's count: negative binomial around a mean that shrinks ``calls`` over ``weeks``
    weeks of history towards ``prior`` (read off ``city_calls`` calls of the rest of the city; it weighs
    ``PRIOR_WEEKS`` weeks), as uncertain as that mean is: the prior as uncertain as the city's count it rests on
    (Poisson) and as streets stray from their population share (``STREET_SPREAD``), the history as its count."""
    w_prior, w_history = PRIOR_WEEKS / (PRIOR_WEEKS + weeks), weeks / (PRIOR_WEEKS + weeks)
    mean = w_prior * prior + (w_history * calls / weeks if weeks else 0.0)
    variance = (w_prior * prior) ** 2 * (1 / (max(city_calls, 0) + 1) + STREET_SPREAD ** 2) \
        + (w_history ** 2 * max(calls, 1) / weeks ** 2 if weeks else 0.0)
    shape = mean ** 2 / variance if variance > 0 else math.inf   # Gamma over the mean: the negative binomial's shape
    return Baseline(expected=mean, spread=math.sqrt(mean + variance), shape=shape, weeks=weeks)


@dataclass
class Cusum:
    """A Poisson CUSUM in event time for one street and category (see the module's docstring)."""

    score: float = 0.0
    last: datetime | None = None
    since: datetime | None = None     # when the score last left zero: the trend's start
    calls: int = 0                    # calls since then
    #: the first call since then at which the score passed half the alarm level: when the rise became evident (a
    #: street with few usual calls keeps one call in its score for hours; ``since`` may be long before the rise)
    evident: datetime | None = None

    def add(self, at: datetime, usual_per_h: float, alarm: float) -> float:
        """The score after a call at ``at``, where ``usual_per_h`` calls an hour are usual and ``alarm`` is the
        alarm level. A call more than a day behind the last starts again (a backlog holding an earlier day)."""
        if self.last is None or at < self.last - timedelta(days=1):
            self.score, self.last, self.since, self.calls = 0.0, at, None, 0
        hours = max(0.0, (at - self.last).total_seconds() / 3600)
        self.score = max(0.0, self.score - (CUSUM_RATIO - 1) * usual_per_h * hours)
        if self.score == 0.0:
            self.since, self.calls, self.evident = at, 0, None
        self.score += math.log(CUSUM_RATIO)
        self.calls += 1
        if self.evident is None and self.score >= alarm / 2:
            self.evident = at
        self.last = max(self.last, at)
        return self.score


def threshold(false_alarm_rate: float) -> float:
    """The CUSUM's alarm level for a false-alarm rate (Wald's bound)."""
    return math.log(1 / false_alarm_rate)


def one_in(chance: float) -> str:
    """A small chance as people say it: "1 in 33,000" (two significant figures)."""
    odds = 1 / chance
    digits = max(0, int(math.floor(math.log10(odds))) - 1)
    return f"1 in {round(odds, -digits):,.0f}"


def _number(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".rstrip("0").rstrip(".") or "0"


def _hours(window: timedelta) -> float:
    return window.total_seconds() / 3600


def say_burst(language: str, place: str, what: str, observed: int, usual: Baseline, window: timedelta) -> str:
    """The burst in the words of a duty officer, in ``language`` (zh, else English)."""
    range_ = f"{_number(usual.expected)} ± {_number(usual.spread)}"
    if language.split("-")[0] == "zh":
        basis = (f"前{usual.weeks}周同一时段" if usual.weeks else "按全市当前来电和人口推算")
        return f"{place}近{_hours(window):g}小时{what}来电{observed}件，{basis}通常为{range_}件。"
    basis = (f"usual at this hour of the week over the last {usual.weeks} week{'s' if usual.weeks != 1 else ''}"
             if usual.weeks else "usual for a street of its population from the rest of the city's calls now")
    hours = f"{_hours(window):g} hour{'s' if _hours(window) != 1 else ''}"
    return f"{observed} {what} calls in {place} in the last {hours}, where {range_} are {basis}."


def say_held(place: str, what: str, pieces: list[tuple[int, Baseline]], at: datetime, level: float) -> str:
    """The held excess as an event's explanation says it (English, as the events' explanations are)."""
    minutes = int(PIECE.total_seconds() // 60)
    counts = ", ".join(f"{n} ({_number(u.expected)} ± {_number(u.spread)} usual)" for n, u in pieces)
    return (f"{what} calls in {place} in each {minutes} minutes of the {_hours(PIECES * PIECE):g} hours to "
            f"{at:%H:%M} UTC: {counts}: an excess held, each piece's chance at the usual rate below {one_in(level)}")


def say_trend(language: str, place: str, what: str, calls: int, since: datetime, now: datetime,
              usual_per_h: float) -> str:
    """The sustained trend in the words of a duty officer, in ``language`` (zh, else English)."""
    hours = max((now - since).total_seconds() / 3600, 0.1)
    usual = usual_per_h * hours
    if language.split("-")[0] == "zh":
        return (f"{place}{what}来电持续偏多：近{hours:.1f}小时{calls}件，通常约{_number(usual)}件"
                f"（每小时{_number(usual_per_h)}件）。")
    return (f"{calls} {what} calls in {place} over the last {hours:.1f} hours, where about {_number(usual)} are usual "
            f"({_number(usual_per_h)} an hour): a sustained rise.")
