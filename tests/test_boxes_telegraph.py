"""The fire alarm telegraph decoder: pulse trains in, box numbers (or flags) out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firebox.boxes.telegraph import (
    BoxAlarm,
    Gap,
    GarbledRound,
    MismatchedRounds,
    RoundDecoded,
    TelegraphDecoder,
    Timing,
    TransmissionEnded,
    box_digits,
    classify,
    pulse_train,
)

T = Timing()


def decode(times: list[float], timing: Timing = T) -> list[object]:
    d = TelegraphDecoder(timing)
    events: list[object] = []
    for t in times:
        # As the receiver's timer does: tick at every deadline that falls before the pulse.
        while (deadline := d.next_deadline()) is not None and deadline <= t:
            events += d.tick(deadline)
        events += d.pulse(t)
    # Let the circuit fall quiet: the adapter calls tick at the decoder's deadlines.
    while (deadline := d.next_deadline()) is not None:
        events += d.tick(deadline)
    return events


def alarms(events: list[object]) -> list[BoxAlarm]:
    return [e for e in events if isinstance(e, BoxAlarm)]


def test_box_1818_is_four_rounds_of_1_8_1_8_and_is_called_once_after_two_rounds():
    times = pulse_train("1818", rounds=4)
    assert len(times) == 4 * (1 + 8 + 1 + 8)
    events = decode(times)
    rounds = [e.number for e in events if isinstance(e, RoundDecoded)]
    assert rounds == ["1818"] * 4
    (alarm,) = alarms(events)
    assert (alarm.number, alarm.rounds, alarm.first_pulse) == ("1818", 2, 0.0)
    # Called after the second round, not at the end of the fourth.
    second_round_end = [e for e in events if isinstance(e, RoundDecoded)][1].end
    assert second_round_end < alarm.at < second_round_end + T.round_gap * T.period
    end = events[-1]
    assert isinstance(end, TransmissionEnded) and end.number == "1818" and end.garbled == 0


def test_zero_is_ten_pulses_and_separators_are_not_sent():
    assert box_digits("12-317") == (1, 2, 3, 1, 7)
    assert box_digits(2105) == (2, 1, 10 % 10 or 0, 5)
    times = pulse_train("2105", rounds=2)
    assert len(times) == 2 * (2 + 1 + 10 + 5)
    assert alarms(decode(times))[0].number == "2105"
    with pytest.raises(ValueError):
        box_digits("--")


def test_classify_with_boundaries_and_an_ambiguous_band():
    p = T.period
    assert classify(1.0 * p, T) is Gap.PULSE
    assert classify(4.0 * p, T) is Gap.DIGIT
    assert classify(10.0 * p, T) is Gap.ROUND
    assert classify(T.digit_boundary * p, T) is Gap.AMBIGUOUS
    assert classify(T.round_boundary * p, T) is Gap.AMBIGUOUS


def test_jitter_of_30_percent_is_read_correctly():
    for seed in range(50):
        times = pulse_train("4267", rounds=3, jitter=0.30, rng=random.Random(seed))
        events = decode(times)
        assert [a.number for a in alarms(events)] == ["4267"], seed
        assert not [e for e in events if isinstance(e, GarbledRound | MismatchedRounds)], seed


def test_a_garbled_round_is_flagged_and_the_matching_rounds_still_call_the_box():
    # Round 2 gets an extra digit group of 12 pulses (a line fault chattering the circuit).
    good = pulse_train("1818", rounds=1)
    span = good[-1] + T.round_gap * T.period
    chatter = [span + i * T.period for i in range(12)]
    rest = pulse_train("1818", rounds=2, start=chatter[-1] + T.round_gap * T.period)
    events = decode(good + chatter + rest)
    garbled = [e for e in events if isinstance(e, GarbledRound)]
    assert len(garbled) == 1 and garbled[0].groups == (12,) and "12 pulses" in garbled[0].reason
    assert [a.number for a in alarms(events)] == ["1818"]
    assert events[-1].garbled == 1  # type: ignore[attr-defined]


def test_rounds_that_disagree_call_no_box_and_are_flagged():
    a = pulse_train("1818", rounds=1)
    b = pulse_train("1816", rounds=1, start=a[-1] + T.round_gap * T.period)
    events = decode(a + b)
    assert alarms(events) == []
    (mismatch,) = [e for e in events if isinstance(e, MismatchedRounds)]
    assert mismatch.numbers == ("1818", "1816") and mismatch.alarm is None
    end = events[-1]
    assert isinstance(end, TransmissionEnded) and end.number is None and end.unconfirmed is None


def test_a_single_clean_round_is_unconfirmed_not_lost():
    events = decode(pulse_train("2341", rounds=1))
    assert alarms(events) == []
    end = events[-1]
    assert isinstance(end, TransmissionEnded) and end.unconfirmed == "2341"


def test_an_ambiguous_pause_garbles_its_round():
    times = pulse_train("23", rounds=1)
    # Move the digit pause onto the pulse/digit boundary.
    shift = T.digit_boundary * T.period - (times[2] - times[1])
    times = times[:2] + [t + shift for t in times[2:]]
    events = decode(times)
    (garbled,) = [e for e in events if isinstance(e, GarbledRound)]
    assert "neither a digit's nor a round's" in garbled.reason


def test_contact_bounce_is_one_pulse_and_two_transmissions_are_two_alarms():
    times = pulse_train("1234", rounds=2)
    bounced = sorted(times + [times[5] + 0.02])
    second = pulse_train("1234", rounds=2, start=bounced[-1] + (T.end_gap + 5) * T.period)
    events = decode(bounced + second)
    assert [a.number for a in alarms(events)] == ["1234", "1234"]
    assert len([e for e in events if isinstance(e, TransmissionEnded)]) == 2


def test_out_of_order_pulse_is_refused():
    d = TelegraphDecoder()
    d.pulse(5.0)
    with pytest.raises(ValueError):
        d.pulse(4.0)


@settings(max_examples=200, deadline=None)
@given(
    number=st.text(alphabet="0123456789", min_size=1, max_size=6),
    jitter=st.floats(min_value=0.0, max_value=0.28),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_number_with_jitter_round_trips(number: str, jitter: float, seed: int):
    events = decode(pulse_train(number, rounds=3, jitter=jitter, rng=random.Random(seed)))
    assert [a.number for a in alarms(events)] == [number]


@pytest.mark.realdata
def test_every_boston_box_is_decoded_from_jittered_pulse_trains(shared_data):
    import json

    boxes = json.loads((shared_data / "boston" / "fire_alarm_boxes.geojson").read_bytes())["features"]
    numbers = [str(f["properties"]["BOX"]) for f in boxes]
    assert len(numbers) == 1850
    rng = random.Random(1850)
    for number in numbers:
        digits = "".join(c for c in number if c.isdigit())
        events = decode(pulse_train(number, rounds=4, jitter=0.25, rng=rng))
        assert [a.number for a in alarms(events)] == [digits], number
        # ...and the same box with its rounds corrupted differently is not called.
        other = digits[:-1] + str((int(digits[-1]) % 9) + 1)
        first = pulse_train(number, rounds=1, jitter=0.25, rng=rng)
        mixed = first + pulse_train(other, rounds=1, jitter=0.25, rng=rng, start=first[-1] + T.round_gap * T.period)
        mixed_events = decode(mixed)
        assert alarms(mixed_events) == [], number
        assert any(isinstance(e, MismatchedRounds) for e in mixed_events), number
