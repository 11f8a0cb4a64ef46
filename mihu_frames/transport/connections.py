"""The connections to one API address: proxy, CA bundle, pool size, bounded waits, forks.

:class:`Connections` is the urllib3 pool a transport sends through. It holds the rules:

- the proxy and CA bundle come from the environment, read once, as requests reads them;
- a loopback address is never reached through a proxy (that would carry the token over the
  network, in the clear when the address is ``http``);
- every connection's wait for its status line and headers is bounded by the request's timeout
  (http.client applies a socket timeout to each ``recv`` only, so a server sending a byte a
  second would never time out; :class:`_Watchdog` shuts such a socket down);
- a forked child drops its parent's pooled sockets and starts a pool of its own.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

from mihu_frames._forking import renew_after_fork
from mihu_frames.transport.address import is_loopback


class Connections:
    """The urllib3 pool for ``base_url`` with the environment's proxy and CA bundle.

    Parameters
    ----------
    base_url : str
        The resolved address.
    maxsize : int
        Connections kept to the server.
    """

    def __init__(self, base_url: str, maxsize: int) -> None:
        self.base_url = base_url
        self.maxsize = maxsize
        self.pool = bounded(pool_manager(base_url, maxsize))
        renew_after_fork(self)

    def clear(self) -> None:
        """Close the pool's connections."""
        self.pool.clear()

    def _after_fork(self) -> None:
        # The parent's pooled sockets are the parent's: reading them here would take its
        # responses. Drop them unclosed (closing is the parent's business) and start anew.
        self.pool = bounded(pool_manager(self.base_url, self.maxsize))


def pool_manager(base_url: str, maxsize: int) -> urllib3.PoolManager:
    """A urllib3 pool for ``base_url`` with the environment's proxy and CA bundle, as requests
    would choose them (read once); never a proxy for a loopback address."""
    import requests.adapters
    import requests.certs
    import requests.utils

    tls: dict[str, Any] = {}
    if base_url.startswith("https:"):
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        tls = {"cert_reqs": "CERT_REQUIRED"}
        if bundle and os.path.isdir(bundle):  # a c_rehash'ed folder, as requests accepts
            tls["ca_cert_dir"] = bundle
        else:
            tls["ca_certs"] = bundle or requests.certs.where()
    # A loopback server is never reached through a proxy: that would carry the token over the
    # network, in the clear when the address is http.
    proxies: dict[str, str] | None = {} if is_loopback(urlsplit(base_url).hostname or "") else None
    if proxies is None:
        proxies = requests.utils.get_environ_proxies(base_url)
    proxy = requests.utils.select_proxy(base_url, proxies)
    if proxy:
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=maxsize)
        return adapter.proxy_manager_for(proxy, **tls)
    return urllib3.PoolManager(num_pools=2, maxsize=maxsize, **tls)


def bounded(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """``manager`` whose pools make connections that bound their wait for headers (its own
    pool classes, so a SOCKS proxy's connections stay SOCKS connections)."""
    manager.pool_classes_by_scheme = {
        scheme: _watched_pool(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
    }
    return manager


@functools.cache
def _watched_pool(pool: type[Any]) -> type:
    return type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": _watched(pool.ConnectionCls)})


def _watched(base: type[Any]) -> type:
    """``base`` (a urllib3 connection class) whose wait for headers is bounded by its timeout."""

    def getresponse(self: Any) -> Any:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        if timeout is None or self.sock is None:
            return base.getresponse(self)
        entry = _WATCHDOG.watch(time.monotonic() + timeout, self.sock)
        try:
            return base.getresponse(self)
        except Exception:
            if entry.expired:  # urllib3 makes this a ReadTimeoutError
                raise TimeoutError("no status line and headers in time") from None
            raise
        finally:
            _WATCHDOG.release(entry)

    return type(f"Watched{base.__name__}", (base,), {"getresponse": getresponse})


@dataclass
class _Watch:
    deadline: float
    sock: Any
    done: bool = False
    expired: bool = False


class _Watchdog:
    """Cuts off a response whose status line and headers do not arrive in time.

    http.client reads them with the socket's timeout applied to each ``recv``, so a server
    sending a byte a second is never timed out. Every transport's connections register here
    while they wait for headers; one thread per process (started on first use, a daemon: it
    only ever waits) shuts a socket down at its deadline, which ends the blocked read.
    """

    def __init__(self) -> None:
        self._after_fork()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        # A child has none of its parent's threads, and the condition may be held by one.
        self._cond = threading.Condition()
        self._watches: list[_Watch] = []
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread looks next, unless woken

    def watch(self, deadline: float, sock: Any) -> _Watch:
        entry = _Watch(deadline, sock)
        with self._cond:
            self._watches.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mihu-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._wakes_at:  # else it looks in time anyway: no thread switch
                self._wakes_at = deadline
                self._cond.notify()
        return entry

    def release(self, entry: _Watch) -> None:
        with self._cond:
            entry.done = True
            self._watches = [w for w in self._watches if not w.done]

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry in self._watches:
                    if not entry.done and entry.deadline <= now:
                        entry.expired = entry.done = True
                        with contextlib.suppress(OSError):
                            entry.sock.shutdown(socket.SHUT_RDWR)
                self._watches = [w for w in self._watches if not w.done]
                self._wakes_at = min((w.deadline for w in self._watches), default=now + 60)
                self._cond.wait(max(self._wakes_at - now, 0.001))


# One per process, like the thread it starts: it watches sockets, it holds no settings.
_WATCHDOG = _Watchdog()
