"""Retries with urllib3's :class:`~urllib3.util.Retry`, driven here so that every attempt
passes the client's :class:`~mihu_frames.pacing.Pacer` and is logged through the library's
logger.

What is retried: a 429 (honouring ``Retry-After``, up to :data:`RETRY_AFTER_MAX`), 500, 502,
503, 504, a dropped connection and a timeout; connecting at most :data:`CONNECT_RETRIES`
times, an unknown host never. After a 429 the pacer decides who waits: this request or the
whole client. Once the retries are spent, the last answer is the answer (a failure becomes its
typed error). A wait that would pass the load's deadline is not waited.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import urllib3
from urllib3.exceptions import HTTPError, InvalidHeader, MaxRetryError, NameResolutionError
from urllib3.util.retry import Retry

from mihu_frames.pacing import Pacer
from mihu_frames.transport.failures import Failures, describe
from mihu_frames.transport.reading import DeadlineHit
from mihu_frames.transport.reply import Where
from mihu_frames.transport.scrubbing import Scrubber

logger = logging.getLogger("mihu_frames")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: A server's Retry-After is honoured up to a minute, so a load cannot sleep for hours; after
#: the retries it becomes a RateLimitError.
RETRY_AFTER_MAX = 60
#: Connecting is retried at most this often: a refused connection or an unknown host is rarely
#: cured within seconds, and a wrong address should say so quickly.
CONNECT_RETRIES = 2

#: One attempt's response and its whole body.
Answer = tuple[urllib3.BaseHTTPResponse, bytes]


class Retrying:
    """A transport's retry policy; :meth:`start` gives each request its own :class:`Attempts`.

    Parameters
    ----------
    retries : int
        Retries per request for 429, 5xx, dropped connections and timeouts.
    backoff_factor : float
        urllib3's backoff between retries that carry no ``Retry-After``.
    failures : Failures
        Makes the typed error of a failure once the retries are spent.
    scrubber : Scrubber
        Keeps the token out of the log lines.
    """

    def __init__(
        self, retries: int, backoff_factor: float, failures: Failures, scrubber: Scrubber
    ) -> None:
        self.retries = retries
        self.failures = failures
        self.scrubber = scrubber
        self.policy = Retry(
            total=retries,
            connect=min(retries, CONNECT_RETRIES),
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            backoff_factor=backoff_factor,
            backoff_max=60,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
            retry_after_max=RETRY_AFTER_MAX,
        )

    def start(self, pacer: Pacer, url: str, where: Where, deadline: float | None) -> Attempts:
        """The attempts of one GET of ``url``, paced by ``pacer``, due by ``deadline``."""
        return Attempts(self, pacer, url, where, deadline)


class Attempts:
    """One request's attempts: each waits for the pacer, and its outcome is judged by urllib3's
    :class:`~urllib3.util.Retry` (a ``Retry`` is immutable: each retry makes the next)."""

    def __init__(
        self, policy: Retrying, pacer: Pacer, url: str, where: Where, deadline: float | None
    ) -> None:
        self._policy = policy
        self._retry = policy.policy
        self._pacer = pacer
        self._url = url
        self._where = where
        self._deadline = deadline
        self._not_before = 0.0  # after a 429: when the pacer lets this request go again

    @property
    def retries(self) -> int:
        """Retries made so far."""
        return len(self._retry.history)

    def run(self, attempt: Callable[[], Answer]) -> Answer:
        """Call ``attempt`` until it gives an answer that is not retried; return that answer
        (of any status).

        Raises
        ------
        MihuError
            The typed error of a failure once the retries are spent, or of the deadline.
        """
        while True:
            answer = self._try(attempt)
            if answer is not None:
                return answer

    def _try(self, attempt: Callable[[], Answer]) -> Answer | None:
        """One attempt through the pacer: its answer, or None once it is to be tried again."""
        ticket = self._pacer.acquire(self._deadline, self._not_before)
        outcome: Answer | Exception | None = None
        try:
            outcome = self._outcome(attempt)
        finally:  # the pacer hears of every attempt, however it ended
            response = outcome[0] if isinstance(outcome, tuple) else None
            if response is None:
                self._pacer.release(ticket, None, {})
            else:
                self._pacer.release(ticket, response.status, response.headers)
        if isinstance(outcome, Exception):
            self._failed(outcome)
            return None
        return None if self._answered(outcome[0], ticket) else outcome

    def _outcome(self, attempt: Callable[[], Answer]) -> Answer | Exception:
        """The attempt's answer, or the failure that may be retried; a passed deadline raises."""
        try:
            self._check_deadline()
            return attempt()
        except (HTTPError, OSError) as exc:
            if isinstance(exc, DeadlineHit) or _passed(self._deadline):
                raise self._policy.failures.deadline(self._where) from None
            return exc

    def _failed(self, error: Exception) -> None:
        """Count a failed attempt and wait; raise the typed error once the retries are spent."""
        retry, url = self._retry, self._url
        failures = self._policy.failures
        try:
            if isinstance(error, NameResolutionError):  # an unknown host does not come back
                raise MaxRetryError(None, url, error)  # type: ignore[arg-type]
            self._retry = retry.increment("GET", url, error=error)
        except MaxRetryError as exc:
            tries = len(retry.history) + 1
            raise failures.for_connection(exc.reason or error, url, self._where, tries) from None
        except (HTTPError, OSError) as exc:  # not retryable at all (``other=0``)
            tries = len(retry.history) + 1
            raise failures.for_connection(exc, url, self._where, tries) from None
        self._log(describe(error))
        self._sleep(self._wait(None))

    def _answered(self, response: urllib3.BaseHTTPResponse, ticket: int) -> bool:
        """Whether ``response`` is retried (after its wait); False: it is the answer."""
        status = response.status
        if not self._retry.is_retry(
            "GET", status, has_retry_after="Retry-After" in response.headers
        ):
            return False
        try:
            self._retry = self._retry.increment("GET", self._url, response=response)
        except MaxRetryError:
            return False  # out of retries: the last answer is the answer
        self._log(f"HTTP {status}")
        if status == 429:
            # The pacer decides who waits: this request, or the whole client.
            self._not_before = self._pacer.hold(self._wait(response), ticket)
        else:
            self._sleep(self._wait(response))
        return True

    def _wait(self, response: urllib3.BaseHTTPResponse | None) -> float:
        """Seconds before the next attempt: the answer's Retry-After, else the back-off."""
        wait = None
        if response is not None:
            with contextlib.suppress(InvalidHeader):  # "Retry-After: soon": back off instead
                wait = self._retry.get_retry_after(response)
        return self._retry.get_backoff_time() if wait is None else wait

    def _sleep(self, wait: float) -> None:
        if self._deadline is not None and time.monotonic() + wait > self._deadline:
            raise self._policy.failures.deadline(self._where)
        if wait > 0:
            time.sleep(wait)

    def _check_deadline(self) -> None:
        if _passed(self._deadline):
            raise self._policy.failures.deadline(self._where)

    def _log(self, cause: str) -> None:
        logger.info(
            "retrying %s (%s); retry %d of %d",
            self._where.describe(),
            self._policy.scrubber.scrub(cause),
            self.retries,
            self._policy.retries,
        )


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
