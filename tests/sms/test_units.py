"""Small pure pieces: phone checks for SMS, segment counting, the shared pacer, the
pre-campaign number report."""

import io
import itertools
import time

import pytest
from django.core.management import call_command

from bitrixapp import phones, ratelimit
from sms.segments import segment


@pytest.mark.parametrize(
    "raw", ["80291234567", "375 29 123-45-67", "+375 (29) 123 45 67", "29 1234567"]
)
def test_belarusian_spellings_become_e164(raw):
    assert phones.check(raw, "BY", ["BY"]) == phones.Checked("+375291234567")


@pytest.mark.parametrize(
    "raw, allowed, reason",
    [
        ("+79161234567", ["BY"], "+79161234567 is a number in RU; allowed: BY"),
        ("12345", ["BY"], "'12345' is not a valid phone number (read in region BY)"),
        ("", [], "'(empty)' is not a valid phone number"),
    ],
)
def test_refused_numbers_come_with_a_reason(raw, allowed, reason):
    checked = phones.check(raw, "BY", allowed)
    assert not checked.ok and checked.reason.startswith(reason)


def test_any_region_when_none_is_listed():
    assert phones.check("+79161234567", "BY", []).e164 == "+79161234567"


@pytest.mark.parametrize(
    "text, encoding, segments",
    [
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("{" * 80, "gsm7", 1),  # extension characters count twice: 160
        ("{" * 81, "gsm7", 2),
        ("Привет" + "a" * 64, "ucs2", 1),  # 70
        ("Привет" + "a" * 65, "ucs2", 2),
        ("ж" * 134, "ucs2", 2),
        ("ж" * 135, "ucs2", 3),
    ],
)
def test_segments_by_encoding(text, encoding, segments):
    parts = segment(text)
    assert (parts.encoding, parts.segments) == (encoding, segments)


def test_reserve_spaces_slots_and_refuses_far_ones():
    key = f"test:{time.monotonic()}"
    waits = [ratelimit.reserve(key, 10, 1.0) for _ in range(5)]
    assert all(w.booked for w in waits)
    gaps = [b.wait - a.wait for a, b in itertools.pairwise(waits)]
    assert all(0.09 < gap < 0.11 for gap in gaps), gaps
    for _ in range(6):
        ratelimit.reserve(key, 10, 1.0)
    far = ratelimit.reserve(key, 10, 1.0)
    assert not far.booked and far.wait > 1.0
    assert ratelimit.reserve(key, 10, 5.0).wait == pytest.approx(far.wait, abs=0.05)


def test_a_send_held_up_past_its_slot_takes_a_new_one_instead_of_bunching():
    """A worker whose claim (or a busy machine) made it miss its slot by more than half a
    slot books the next free one and leaves then; one on time leaves without booking."""
    from sms import tasks

    key = f"test:{time.monotonic()}"
    on_time = ratelimit.reserve(key, 10, 1.0)
    tasks._wait_for_slot(key, 10, time.monotonic() + on_time.wait)
    assert ratelimit.reserve(key, 10, 1.0).wait == pytest.approx(0.1, abs=0.03)  # not moved

    key = f"test:late:{time.monotonic()}"
    late = ratelimit.reserve(key, 10, 1.0)
    started = time.monotonic()
    tasks._wait_for_slot(key, 10, started + late.wait - 0.2)  # 200 ms behind its slot
    waited = time.monotonic() - started
    # It booked the slot after its own (0.1 s on) and slept until it.
    assert 0.07 < waited < 0.3, waited
    assert ratelimit.reserve(key, 10, 1.0).wait == pytest.approx(0.1, abs=0.05)


def test_normalize_report_counts_and_lists_invalid_rows(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text(
        "name,phone\nAnna,80291234567\nBoris,+375 29 123-45-67\nOleg,12345\nIvan,+79161234567\n"
    )
    out = io.StringIO()
    bad = tmp_path / "bad.csv"
    call_command(
        "sms_normalize_report", str(path), "--column", "phone", "--output", str(bad), stdout=out
    )
    text = out.getvalue()
    assert text.splitlines()[0] == "4 numbers: 2 valid (1 distinct), 2 invalid"
    assert "line 4: '12345': '12345' is not a valid phone number" in text
    assert "line 5: '+79161234567': +79161234567 is a number in RU; allowed: BY" in text
    assert bad.read_text().splitlines()[0] == "line,number,reason"
