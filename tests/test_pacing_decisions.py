"""The pacer's decisions on a clock the test moves (issue 22): each runs in milliseconds.

``tests/test_pacing.py`` checks pacing end to end against the simulator's real limiters on the
wall clock; here each decision is taken alone, with exact times: the window learned (the burst,
the probe, the bounds, whole seconds), the rate found (the first cut, a measured cut), the slow
start, backing off (holds, cuts on a refusal and on a latency rise) and recovering (the rate's
growth). The regimes (:class:`HeaderWindow`, :class:`SendRate`) are told the time; the
:class:`Pacer` takes a :class:`FakeClock` whose ``wait`` moves the time instead of sleeping, so
no test here has a thread or a sleep. Every expected figure is worked out in the test from the
rules in the module docstrings, not read back from the code.
"""

from __future__ import annotations

import math
import threading

import pytest

from mihu_frames.pacing import MAX_HOLD, Pacer, PacerStats
from mihu_frames.pacing.accounting import Tally
from mihu_frames.pacing.flight import START_IN_FLIGHT, InFlight
from mihu_frames.pacing.holds import Holds
from mihu_frames.pacing.rate import SendRate
from mihu_frames.pacing.signals import int_header, refusal_end, retry_after
from mihu_frames.pacing.window import HeaderWindow

#: Unix time when the fake monotonic clock reads 0 (so wall(t) is a whole second for whole t).
EPOCH = 1_700_000_000.0


class FakeClock:
    """A clock the test moves; waiting on it moves it by the whole wait (nobody notifies)."""

    def __init__(self, start: float = 100.0) -> None:
        self.t = start
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return EPOCH + self.t

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        assert seconds < math.inf and len(self.waits) < 1000, "waited for ever"
        self.waits.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


def headers(limit: int | None = None, remaining: int | None = None, **more: str) -> dict:
    out = {k.replace("_", "-"): v for k, v in more.items()}
    if limit is not None:
        out["X-RateLimit-Limit"] = str(limit)
    if remaining is not None:
        out["X-RateLimit-Remaining"] = str(remaining)
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- the window learned (the header regime) ---------------------------------------------------
def test_a_window_is_spent_in_a_burst_then_one_probe_learns_its_end_and_later_windows_open_on_time(
    clock,
):
    """Limit 5, a 1 s window: a burst of 5, one probe refused, then a window that opens when
    the learned one is sure to be over, without a 429."""
    pacer = Pacer(clock=clock)
    # Times are multiples of 1/16 s, exact in binary: the waits below are exact too.
    first = pacer.acquire()  # at 100.0: the window's opener
    clock.advance(0.0625)
    pacer.release(first, 200, headers(5, 4))
    assert pacer.window == (5, 0.0, None)  # the limit is known, the length is not
    # The budget (4) goes at once, without a wait.
    burst = [pacer.acquire() for _ in range(4)]
    assert clock.waits == [] and clock.now() == 100.0625
    clock.advance(0.0625)
    for ticket, remaining in zip(burst, (3, 2, 1, 0), strict=True):
        pacer.release(ticket, 200, headers(5, remaining))
    # Spent, its end unknown: one request goes at once, as the probe ...
    probe = pacer.acquire()
    assert clock.waits == [] and pacer.waiting() == 0.0
    # ... and the others wait for its answer (here until their deadline; they give up).
    other = pacer.acquire(deadline=clock.now() + 0.25)
    assert clock.waits == [0.25]
    pacer.release(other, None, {})
    # The probe is refused: Retry-After 1, Reset at 101 (whole seconds of the server's clock).
    clock.advance(0.0625)  # 100.4375
    refusal = headers(5, 0, Retry_After="1", X_RateLimit_Reset=str(int(EPOCH) + 101))
    pacer.release(probe, 429, refusal)
    # The hold ends at the earlier bound, Reset (101.0), not now + Retry-After (101.4375) ...
    assert pacer.waiting() == 0.5625
    assert pacer.hold(1.0, probe) == 101.0
    # ... and bounds the window: at least 0.0625 s (the probe was sent that long after the
    # opener's answer), at most 1.0 s (the hold's end less the opener's sending).
    assert pacer.window == (5, 0.0625, 1.0)
    # The next window: its opener goes at the hold's end.
    opener = pacer.acquire(not_before=101.0)
    assert clock.now() == 101.0
    clock.advance(0.0625)
    pacer.release(opener, 200, headers(5, 4))  # opened between 101.0 and 101.0625
    burst = [pacer.acquire() for _ in range(4)]
    clock.advance(0.0625)
    for ticket, remaining in zip(burst, (3, 2, 1, 0), strict=True):
        pacer.release(ticket, 200, headers(5, remaining))
    # Spent again: the next request waits until the window is surely over, the opener's answer
    # plus the 1 s length learned (whole seconds), and goes then: no probe, no 429.
    waits = len(clock.waits)
    pacer.acquire()
    assert clock.now() == 102.0625
    assert clock.waits[waits:] == [0.9375]
    stats = pacer.stats()
    assert (stats.attempts, stats.rate_limited) == (12, 1)
    # Waited for the limit: behind the probe, the hold, the window.
    assert stats.waited_seconds == 0.25 + 0.5625 + 0.9375


def test_the_window_takes_whole_seconds_until_a_429_shows_it_is_longer():
    window = HeaderWindow()
    window.answered(sent=0.0, answered=0.1, limit=5, remaining=4)
    window.refused(sent=0.5, earliest=0.5, end=1.7)  # the probe: ends after 0.5, by 1.7
    assert window.bounds == (pytest.approx(0.4), pytest.approx(1.7))
    window.answered(sent=1.7, answered=1.75, limit=5, remaining=4)  # the next opener
    window.answered(sent=1.75, answered=1.8, limit=5, remaining=0)
    # Between 0.4 s and 1.7 s: Laravel's windows last whole seconds, so 1 s.
    assert window.end() == pytest.approx(2.75)
    assert window.wait(now=2.0, in_flight=0) == pytest.approx(0.75)
    # Refused then: the window lasts longer than 1 s (at least 2.75 - 1.75), at most 1.55 s.
    window.refused(sent=2.75, earliest=2.75, end=3.25)
    assert window.bounds == (pytest.approx(1.0), pytest.approx(1.55))
    assert window.end() == pytest.approx(3.25)  # this window: the refusal's end
    window.answered(sent=3.25, answered=3.3, limit=5, remaining=4)
    window.counted(0, now=3.35)  # a 429's Remaining: 0
    assert window.end() == pytest.approx(3.3 + 1.55)  # no whole second within the bounds


def test_two_openings_bound_the_window_without_any_429():
    window = HeaderWindow()
    window.answered(sent=0.0, answered=0.1, limit=5, remaining=4)
    window.answered(sent=0.2, answered=0.3, limit=5, remaining=3)  # counted: still open at 0.2
    window.answered(sent=2.5, answered=2.6, limit=5, remaining=4)  # a new window's opener
    assert window.bounds == (pytest.approx(0.1), pytest.approx(2.6))
    window.counted(0, now=2.7)
    assert window.end() == pytest.approx(2.6 + 2.0)  # whole seconds: 2 s


def test_a_request_after_an_answer_seeing_as_much_remaining_is_in_a_new_window():
    """Opened by someone else sharing the limit: a new window, its opening unknown."""
    window = HeaderWindow()
    window.answered(sent=0.0, answered=0.1, limit=5, remaining=4)
    window.answered(sent=0.2, answered=0.3, limit=5, remaining=1)
    assert window.budget(in_flight=0) == 1
    window.answered(sent=0.4, answered=0.5, limit=5, remaining=2)
    assert window.budget(in_flight=0) == 2
    window.answered(sent=0.5, answered=0.6, limit=5, remaining=0)
    assert window.end() is None
    assert window.wait(now=0.6, in_flight=1) == math.inf  # spent: wait for an answer


def test_a_changed_limit_forgets_the_window():
    window = HeaderWindow()
    window.answered(sent=0.0, answered=0.1, limit=5, remaining=4)
    window.refused(sent=0.5, earliest=0.5, end=1.7)
    window.answered(sent=1.7, answered=1.8, limit=10, remaining=9)
    assert (window.limit, window.bounds) == (10, (0.0, None))
    assert window.budget(in_flight=2) == 7


def test_the_window_holds_nothing_back_while_it_has_budget_or_is_off():
    window = HeaderWindow()
    assert window.wait(now=0.0, in_flight=30) is None  # off: no headers yet
    window.answered(sent=0.0, answered=0.1, limit=5, remaining=4)
    assert window.wait(now=0.2, in_flight=3) is None
    window.sending(ticket=7, in_flight=4)  # the request that spends it is the probe
    assert window.wait(now=0.2, in_flight=4) == math.inf
    assert window.held_until(in_flight=4) is None  # a probe is out: nobody is held by a time
    window.settled(7)
    window.counted(0, now=0.3)  # the probe's answer: spent
    assert window.wait(now=0.3, in_flight=3) == math.inf  # answers to come
    assert window.wait(now=0.3, in_flight=0) == 0.0  # nothing out: the next is the probe


# --- when a 429 ends ------------------------------------------------------------------------------
def test_a_refusal_ends_at_the_earlier_of_retry_after_and_reset():
    # Retry-After 2 from 10.1 says 12.1; Reset says 11.6: the hold ends at 11.6, and the
    # window ended after 11.0 (sent + Retry-After - 1 and Reset - 1: the later).
    assert refusal_end(10.0, 10.1, 2.0, 11.6) == (pytest.approx(11.6), pytest.approx(11.0))
    assert refusal_end(10.0, 10.1, 2.0, 12.9) == (pytest.approx(12.1), pytest.approx(11.9))
    # A Reset a second or more behind Retry-After's earliest is a server clock behind ours.
    assert refusal_end(10.0, 10.1, 2.0, 10.5) == (pytest.approx(12.1), pytest.approx(11.0))
    # Reset alone; neither (the hold ends now); and never longer than MAX_HOLD.
    assert refusal_end(10.0, 10.1, None, 13.0) == (pytest.approx(13.0), pytest.approx(10.0))
    assert refusal_end(10.0, 10.1, None, None) == (pytest.approx(10.1), pytest.approx(10.0))
    assert refusal_end(10.0, 10.1, 3600.0, None)[0] == pytest.approx(10.1 + MAX_HOLD)


def test_retry_after_and_integer_headers_are_read_or_ignored():
    assert retry_after(" 3 ", wall=0.0) == 3.0
    assert retry_after("Thu, 01 Jan 1970 00:00:10 GMT", wall=4.0) == 6.0
    assert retry_after("Thu, 01 Jan 1970 00:00:10 GMT", wall=40.0) == 0.0
    assert retry_after("soon", wall=0.0) is None
    assert retry_after(None, wall=0.0) is None
    assert int_header({"X-RateLimit-Limit": "sixty"}, "X-RateLimit-Limit") is None
    assert int_header({}, "X-RateLimit-Limit") is None


# --- the rate found (the rate regime) -------------------------------------------------------------
def run_requests(rate: SendRate, first: int, times: list[float], rtt: float = 0.05) -> None:
    """Requests ``first``, ``first + 1`` ... sent at ``times``, each answered after ``rtt``."""
    for n, at in enumerate(times, start=first):
        rate.sending(at)
        rate.succeeded(n, sent=at, now=at + rtt, latest=n)


def test_the_first_bare_429_spreads_the_burst_over_at_least_a_second():
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)])  # 10 through in 0.45 s
    rate.refused(11, sent=0.5, now=0.55, in_flight={}, latest=11)
    assert rate.rate == pytest.approx(0.9 * 10 / 1.0)
    assert not rate.measured


def test_a_rate_is_found_between_two_refusals():
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)])
    rate.refused(11, sent=0.5, now=0.55, in_flight={}, latest=11)
    # Ten sent at 0.1 s spacing from 0.6 got through (two still in flight count too), then #22,
    # sent at 1.6, is refused: 10 through in 1.1 s of sending since #11's sending.
    run_requests(rate, 12, [0.6 + 0.1 * k for k in range(8)])
    in_flight = {20: 1.4, 21: 1.5}
    rate.refused(22, sent=1.6, now=1.65, in_flight=in_flight, latest=22)
    assert rate.rate == pytest.approx(0.9 * 10 / 1.1)
    assert rate.measured


def test_refusals_of_requests_sent_before_a_cut_are_the_same_overshoot():
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)])
    rate.refused(11, sent=0.5, now=0.55, in_flight={12: 0.5, 13: 0.5}, latest=13)
    cut = rate.rate
    rate.refused(12, sent=0.5, now=0.56, in_flight={13: 0.5}, latest=13)
    rate.refused(13, sent=0.5, now=0.57, in_flight={}, latest=13)
    assert rate.rate == cut


def test_a_refusal_too_soon_to_measure_cuts_blind_and_time_left_unused_does_not_count():
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)])
    rate.refused(11, sent=0.5, now=0.55, in_flight={}, latest=11)  # 9/s: a slot every 1/9 s
    run_requests(rate, 12, [0.6])
    rate.refused(13, sent=0.7, now=0.75, in_flight={}, latest=13)  # 0.2 s of sending: < 0.5
    assert rate.rate == pytest.approx(0.7 * 9.0)
    # The mark stays at #11 (sent 0.5). At 6.3/s a slot is due by 0.75 + 1/6.3 = 0.909: a
    # request sent at 2.909 leaves 2 s of the rate unused, which is no sending time.
    slot = 0.75 + 1 / 6.3
    run_requests(rate, 14, [slot + 2.0, slot + 2.1])
    rate.refused(16, sent=slot + 2.2, now=slot + 2.25, in_flight={}, latest=16)
    span = (slot + 2.2 - 0.5) - 2.0
    assert rate.rate == pytest.approx(0.9 * 3 / span)  # #12, #14 and #15 got through


def test_the_pacer_spaces_requests_at_the_rate_a_bare_429_set(clock):
    pacer = Pacer(clock=clock)
    for _ in range(10):  # one at a time, 0.05 s each: 10 through in 0.5 s
        ticket = pacer.acquire()
        clock.advance(0.05)
        pacer.release(ticket, 200, {})
    refused = pacer.acquire()
    assert clock.waits == []  # nothing was held back before the first 429
    clock.advance(0.05)
    pacer.release(refused, 429, {"Retry-After": "1"})
    assert pacer.rate == pytest.approx(9.0)
    # A bucket's 429: only the refused request waits its Retry-After, the client is not held.
    assert pacer.waiting() == 0.0
    assert pacer.hold(1.0, refused) == pytest.approx(clock.now() + 1.0)
    start = clock.now()
    for k in range(1, 4):
        pacer.acquire()
        assert clock.now() == pytest.approx(start + k / 9.0)  # one slot each
    assert pacer.stats().waited_seconds == pytest.approx(3 / 9.0)


# --- the slow start -----------------------------------------------------------------------------
def test_the_slow_start_lets_8_go_then_one_more_every_two_successes(clock):
    pacer = Pacer(clock=clock)
    tickets = [pacer.acquire() for _ in range(START_IN_FLIGHT)]
    assert clock.waits == [] and tickets == list(range(1, 9))
    pacer.acquire(deadline=clock.now() + 0.25)  # the 9th waits for an answer ...
    assert clock.waits == [pytest.approx(0.25)]
    assert pacer.stats().waited_seconds == 0.0  # ... which is no wait for the server's limit
    for ticket in tickets[:2]:
        pacer.release(ticket, 200, {})
    # 7 in flight, room for 9: two go at once, the next waits.
    pacer.acquire()
    pacer.acquire()
    assert len(clock.waits) == 1
    pacer.acquire(deadline=clock.now() + 0.125)
    assert clock.waits == [0.25, 0.125]


def test_in_flight_numbers_requests_and_grows_its_cap_by_half_a_request_per_success():
    flight = InFlight()
    for k in range(START_IN_FLIGHT):
        assert flight.send(now=float(k)) == k + 1
    assert flight.full() and len(flight) == 8
    assert flight.answer(3, now=9.0) == 2.0  # request 3 was sent at 2.0
    assert flight.answer(99, now=9.0) == 9.0  # unknown: now
    flight.send(now=9.0)
    assert flight.full()  # 8 in flight, room for 8
    flight.succeeded()
    assert not flight.full()  # room for 8.5
    flight.send(now=9.5)
    flight.succeeded()
    assert flight.full()  # 9 in flight, room for 9
    flight.succeeded()
    assert not flight.full()
    assert flight.latest == 10 and dict(flight.sent_at)[10] == 9.5


# --- backing off ----------------------------------------------------------------------------------
def test_a_long_bare_retry_after_holds_the_whole_client_and_sets_no_rate(clock):
    pacer = Pacer(clock=clock)
    ticket = pacer.acquire()
    pacer.release(ticket, 429, {"Retry-After": "5"})
    assert pacer.rate is None and pacer.waiting() == 5.0
    assert pacer.hold(5.0, ticket) == 105.0  # the hold already put on everyone
    pacer.acquire()
    assert clock.waits == [1.0] * 5  # in naps of at most a second
    assert pacer.stats() == PacerStats(attempts=1, rate_limited=1, waited_seconds=5.0)


def test_a_noisy_429_with_headers_holds_everyone_and_cuts_nothing(clock):
    """Answers carry no rate-limit headers; a 429 does (a throttle-like upstream)."""
    pacer = Pacer(clock=clock)
    ticket = pacer.acquire()
    pacer.release(ticket, 429, headers(60, 0, Retry_After="1"))
    assert pacer.waiting() == 1.0
    assert (pacer.rate, pacer.window) == (None, None)


def test_a_hold_without_a_ticket_holds_everyone_and_only_when_pacing(clock):
    pacer = Pacer(clock=clock)
    assert pacer.hold(23.4) == pytest.approx(123.4)
    assert pacer.waiting() == pytest.approx(23.4)
    pacer.hold(2.0)  # a shorter hold does not shorten it
    assert pacer.waiting() == pytest.approx(23.4)
    fixed = Pacer(pace=False, clock=clock)
    assert fixed.hold(23.4) == pytest.approx(123.4) and fixed.waiting() == 0.0


def test_a_fixed_pool_holds_only_the_refused_request(clock):
    pacer = Pacer(pace=False, clock=clock)
    tickets = [pacer.acquire() for _ in range(20)]  # no slow start either
    pacer.release(tickets[0], 429, {"Retry-After": "1"})
    assert pacer.rate is None and pacer.waiting() == 0.0
    not_before = pacer.hold(1.0, tickets[0])
    pacer.acquire()
    assert clock.waits == []
    pacer.acquire(not_before=not_before)
    assert clock.waits == [1.0]


def test_holds_remember_each_refused_request_once():
    holds = Holds()
    holds.refused(1, until=12.0, now=10.0)
    holds.refused(2, until=11.0, now=10.5)  # an earlier end does not shorten the client's
    assert holds.until == 12.0
    assert (holds.take(2), holds.take(2), holds.take(1)) == (11.0, None, 12.0)
    assert holds.everyone(13.0) and not holds.everyone(12.5) and holds.until == 13.0


def test_a_latency_rise_cuts_the_rate_once_by_ten_percent():
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)], rtt=0.02)
    rate.refused(11, sent=0.5, now=0.52, in_flight={}, latest=11)
    assert rate.rate == pytest.approx(9.0)
    # Round trips of 0.25 s against a fastest of 0.02 s: the smoothed round trip passes
    # max(3 x 0.02, 0.02 + 0.1) = 0.12 s at the fifth slow answer (0.02 -> 0.049 -> 0.076 ->
    # 0.098 -> 0.117 -> 0.133).
    srtt, cut_at = 0.02, None
    for k in range(1, 20):
        srtt += 0.125 * (0.25 - srtt)
        if cut_at is None and srtt > 0.12:
            cut_at = k
    assert cut_at == 5
    run_requests(rate, 12, [0.6 + 0.01 * k for k in range(cut_at - 1)], rtt=0.25)
    assert rate.rate == pytest.approx(9.0)
    run_requests(rate, 12 + cut_at - 1, [0.7], rtt=0.25)
    assert rate.rate == pytest.approx(0.9 * 9.0)
    # The slower round trip is the new normal: a lasting slowdown cuts once.
    run_requests(rate, 20, [1.0 + 0.01 * k for k in range(30)], rtt=0.25)
    assert rate.rate == pytest.approx(0.9 * 9.0)


def test_an_answer_slower_than_the_measuring_span_is_counted_without_failing():
    """A first page that took 12.8 s (a big conversation built on demand) crashed the load with
    an IndexError: the success it had just recorded fell out of the 10 s span."""
    rate = SendRate()
    rate.sending(0.0)
    rate.succeeded(1, sent=0.0, now=12.8, latest=1)
    run_requests(rate, 2, [13.0 + 0.05 * k for k in range(10)])
    rate.refused(12, sent=13.5, now=13.55, in_flight={}, latest=12)
    assert rate.rate is not None and rate.rate > 0


# --- recovering -----------------------------------------------------------------------------------
def cut_to_nine() -> SendRate:
    """A rate cut to 9/s at 0.55 (after #11, from 10 through in the first second)."""
    rate = SendRate()
    run_requests(rate, 1, [0.05 * k for k in range(10)])
    rate.refused(11, sent=0.5, now=0.55, in_flight={}, latest=11)
    return rate


def test_a_rate_that_holds_requests_back_doubles_each_second_until_measured():
    rate = cut_to_nine()
    assert rate.wait(now=0.6) == pytest.approx(0.55 + 1 / 9 - 0.6)  # a request waited
    run_requests(rate, 12, [1.5])  # answered at 1.55: a second after the cut
    assert rate.rate == pytest.approx(18.0)


def test_a_measured_rate_grows_five_percent_a_second():
    rate = cut_to_nine()
    run_requests(rate, 12, [0.6 + 0.1 * k for k in range(10)])
    rate.refused(22, sent=1.6, now=1.65, in_flight={}, latest=22)
    found = 0.9 * 10 / 1.1
    assert rate.rate == pytest.approx(found) and rate.measured
    rate.wait(now=1.66)
    run_requests(rate, 23, [3.6])  # answered at 3.65: two seconds after the cut
    assert rate.rate == pytest.approx(found * 1.05**2)


def test_a_rate_nobody_waits_for_is_not_raised():
    rate = cut_to_nine()
    run_requests(rate, 12, [1.5, 2.5, 3.5])  # slots to spare: nobody waited
    assert rate.rate == pytest.approx(9.0)


# --- wait accounting ------------------------------------------------------------------------------
def test_waits_that_overlap_count_once_and_a_wait_going_on_counts_so_far():
    tally = Tally()
    tally.begin_wait(1.0)
    tally.begin_wait(1.5)
    tally.end_wait(2.0)
    assert tally.stats(now=2.5).waited_seconds == 1.5
    tally.end_wait(3.0)
    tally.begin_wait(10.0)
    tally.attempt(refused=False)
    tally.attempt(refused=True)
    assert tally.stats(now=10.5) == PacerStats(attempts=2, rate_limited=1, waited_seconds=2.5)
    assert tally.stats(now=11.0).since(PacerStats(1, 0, 0.5)) == PacerStats(1, 1, 2.5)
