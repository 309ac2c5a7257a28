"""Street fire alarm box telegraph code: a sans-I/O decoder and a pulse-train generator.

A pulled box (Gamewell-type, as in Boston) turns a code wheel that opens the alarm circuit
once per tooth: box 1818 sends 1 pulse, a pause, 8 pulses, a pause, 1, a pause, 8, and then
the whole round again after a longer pause, usually four rounds in all. A digit 0 is ten
pulses. The receiver at the alarm office hears only the instants at which the circuit
opened. It must:

* group pulses into digits and digits into rounds from the pauses between them, with the
  spring-driven wheel's timing jitter (the wheel's nominal pulse period is known to the
  office, per circuit);
* call the box only when rounds agree: one round may be garbled by a line fault, so
  ``min_matching`` identical rounds (default 2) are required, and a round that disagrees is
  flagged, never silently merged;
* flag what it cannot read (a group of more than ten pulses, a pause that is neither a
  digit's nor a round's) so that a person looks at it: a box alarm is never dropped.

``TelegraphDecoder`` takes pulse instants (``pulse(t)``) and the passing of time
(``tick(now)``, due at ``next_deadline()``) and returns events; there is no clock and no I/O
inside. ``pulse_train`` generates the instants a box would send, with jitter, for tests,
benchmarks and the simulator.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BoxAlarm",
    "DecoderEvent",
    "Gap",
    "GarbledRound",
    "MismatchedRounds",
    "RoundDecoded",
    "TelegraphDecoder",
    "Timing",
    "TransmissionEnded",
    "box_digits",
    "pulse_train",
]


@dataclass(frozen=True, slots=True)
class Timing:
    """A circuit's nominal timing, in seconds, and how far the decoder trusts it.

    The pauses are multiples of the pulse period: within a digit 1 period, between digits
    ``digit_gap`` periods, between rounds ``round_gap``. A pause is classified by the
    boundary between neighbouring classes (their geometric mean), and one within
    ``ambiguity`` (a fraction) of a boundary is unreadable: the round is flagged garbled.
    """

    period: float = 0.3
    digit_gap: float = 4.0
    round_gap: float = 10.0
    #: Silence (in periods) after which a transmission is over.
    end_gap: float = 30.0
    #: Pulses closer than this (in periods) are contact bounce: merged into one.
    debounce: float = 0.3
    ambiguity: float = 0.08
    min_matching: int = 2

    def __post_init__(self) -> None:
        if not (self.period > 0 and 1 < self.digit_gap < self.round_gap < self.end_gap):
            raise ValueError("timing needs period > 0 and 1 < digit_gap < round_gap < end_gap")
        if self.min_matching < 1:
            raise ValueError("min_matching must be at least 1")

    @property
    def digit_boundary(self) -> float:
        """Periods: a pause longer than this ends a digit."""
        return self.digit_gap**0.5

    @property
    def round_boundary(self) -> float:
        """Periods: a pause longer than this ends a round."""
        return (self.digit_gap * self.round_gap) ** 0.5


class Gap(StrEnum):
    PULSE = "pulse"  # the next pulse of the same digit
    DIGIT = "digit"  # the next digit
    ROUND = "round"  # the next round
    AMBIGUOUS = "ambiguous"


def classify(gap: float, timing: Timing) -> Gap:
    """The kind of pause ``gap`` seconds long, under ``timing``."""
    units = gap / timing.period
    for boundary, below in ((timing.digit_boundary, Gap.PULSE), (timing.round_boundary, Gap.DIGIT)):
        if abs(units - boundary) <= boundary * timing.ambiguity:
            return Gap.AMBIGUOUS
        if units < boundary:
            return below
    return Gap.ROUND


@dataclass(frozen=True, slots=True)
class RoundDecoded:
    number: str  # the digits read, e.g. "1818"
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class GarbledRound:
    reason: str
    groups: tuple[int, ...]  # pulse counts of the groups read (a reader sees what came in)
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class BoxAlarm:
    """``min_matching`` rounds agree: the box is called. Emitted once per transmission."""

    number: str
    rounds: int
    first_pulse: float
    at: float  # when the decoder decided (the silence after the confirming round)


@dataclass(frozen=True, slots=True)
class MismatchedRounds:
    """Rounds read cleanly but disagree (two boxes on one circuit, or a line fault that
    changed a digit). With no alarm yet, a person must look; after an alarm it is a flag."""

    numbers: tuple[str, ...]
    at: float
    alarm: str | None = None


@dataclass(frozen=True, slots=True)
class TransmissionEnded:
    """The circuit has been quiet for ``end_gap``: a summary of the transmission."""

    number: str | None  # the box called, if any
    rounds: tuple[str, ...]  # each clean round's number, in order
    garbled: int
    start: float
    at: float

    @property
    def unconfirmed(self) -> str | None:
        """A single clean round with no alarm: a box may have been pulled (flag it)."""
        return self.rounds[0] if self.number is None and len(set(self.rounds)) == 1 else None


DecoderEvent = RoundDecoded | GarbledRound | BoxAlarm | MismatchedRounds | TransmissionEnded


@dataclass(slots=True)
class _Round:
    start: float
    groups: list[int] = field(default_factory=list)
    count: int = 0  # pulses in the current group
    problem: str | None = None


class TelegraphDecoder:
    """Pulse instants in, ``DecoderEvent``s out (see the module docstring)."""

    def __init__(self, timing: Timing | None = None):
        self.timing = timing or Timing()
        self._last: float | None = None
        self._round: _Round | None = None
        self._start: float | None = None
        self._clean: list[str] = []
        self._garbled = 0
        self._alarm: str | None = None
        self._mismatch_flagged = False

    # --- input ---------------------------------------------------------------------------

    def pulse(self, t: float) -> list[DecoderEvent]:
        """The circuit opened at ``t`` (seconds, monotonic, non-decreasing)."""
        events: list[DecoderEvent] = []
        last = self._last
        if last is not None:
            gap = t - last
            if gap < 0:
                raise ValueError(f"pulse at {t} is before the previous one at {last}")
            if gap < self.timing.debounce * self.timing.period:
                return events  # contact bounce: the same pulse
            events += self.tick(t)  # silence may already have ended a round or a transmission
        last = self._last  # tick may have ended the transmission
        if self._round is None:
            self._round = _Round(start=t)
            self._start = t if self._start is None else self._start
        else:
            assert last is not None
            kind = classify(t - last, self.timing)
            r = self._round
            if kind is Gap.PULSE:
                pass
            elif kind is Gap.DIGIT:
                self._close_group(r)
            elif kind is Gap.AMBIGUOUS:
                r.problem = r.problem or f"a pause of {t - last:.2f} s is neither a digit's nor a round's"
                self._close_group(r)
            else:  # Gap.ROUND cannot happen here: tick(t) closed the round
                raise AssertionError("round gap not closed by tick")
        self._round.count += 1
        self._last = t
        return events

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do (a round or a transmission to close)."""
        if self._last is None:
            return None
        return self._round_closes() if self._round is not None else self._transmission_ends()

    def _round_closes(self) -> float:
        assert self._last is not None
        return self._last + self.timing.round_boundary * self.timing.period * (1 + self.timing.ambiguity)

    def _transmission_ends(self) -> float:
        assert self._last is not None
        return self._last + self.timing.end_gap * self.timing.period

    def tick(self, now: float) -> list[DecoderEvent]:
        """Time has passed: close the round and the transmission the silence has ended."""
        events: list[DecoderEvent] = []
        if self._last is None:
            return events
        if self._round is not None and now >= self._round_closes():
            events += self._close_round(self._round, self._last, now)
            self._round = None
        if self._round is None and now >= self._transmission_ends():
            events.append(self._end(now))
        return events

    # --- rounds --------------------------------------------------------------------------

    @staticmethod
    def _close_group(r: _Round) -> None:
        if r.count:
            r.groups.append(r.count)
        r.count = 0

    def _close_round(self, r: _Round, end: float, now: float) -> list[DecoderEvent]:
        self._close_group(r)
        if r.problem is None and any(g > 10 for g in r.groups):
            r.problem = f"a group of {max(r.groups)} pulses (a digit is 1 to 10)"
        if r.problem is not None:
            self._garbled += 1
            return [GarbledRound(r.problem, tuple(r.groups), r.start, end)]
        number = "".join(str(g % 10) for g in r.groups)
        self._clean.append(number)
        events: list[DecoderEvent] = [RoundDecoded(number, r.start, end)]
        counts = Counter(self._clean)
        if self._alarm is None:
            best, n = counts.most_common(1)[0]
            if n >= self.timing.min_matching:
                self._alarm = best
                assert self._start is not None
                events.append(BoxAlarm(best, n, self._start, now))
        if len(counts) > 1 and not self._mismatch_flagged and (self._alarm is not None or len(self._clean) >= 2):
            # Flag the disagreement once: at once if an alarm stands, else when two clean
            # rounds disagree (a third may still settle it; the end summary tells).
            self._mismatch_flagged = True
            events.append(MismatchedRounds(tuple(self._clean), now, self._alarm))
        return events

    def _end(self, now: float) -> TransmissionEnded:
        assert self._start is not None
        ended = TransmissionEnded(self._alarm, tuple(self._clean), self._garbled, self._start, now)
        self._last = self._start = None
        self._clean, self._garbled, self._alarm, self._mismatch_flagged = [], 0, None, False
        return ended


# --- generation ----------------------------------------------------------------------------


def box_digits(number: str | int) -> tuple[int, ...]:
    """The digits a box's wheel sends: its number's digits (separators such as the "-" in
    Boston's "12-317" are not sent); each 1..9 pulses, 0 as ten."""
    digits = tuple(int(c) for c in str(number) if c.isdigit())
    if not digits:
        raise ValueError(f"box number {number!r} has no digits")
    return digits


def pulse_train(
    number: str | int,
    *,
    timing: Timing | None = None,
    rounds: int = 4,
    jitter: float = 0.0,
    rng: random.Random | None = None,
    start: float = 0.0,
) -> list[float]:
    """The pulse instants of ``rounds`` rounds of box ``number``; each pause is scaled by a
    uniform factor in [1 - jitter, 1 + jitter] (the wheel's governor is not exact)."""
    timing = timing or Timing()
    rng = rng or random.Random(0)
    digits = box_digits(number)
    times: list[float] = []
    t = start
    for _ in range(rounds):
        for d, digit in enumerate(digits):
            for p in range(digit or 10):
                if times:
                    if p:
                        units = 1.0
                    elif d:
                        units = timing.digit_gap
                    else:
                        units = timing.round_gap
                    t += units * timing.period * (1 + rng.uniform(-jitter, jitter))
                times.append(t)
    return times
