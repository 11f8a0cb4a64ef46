"""Objects that a forked child must renew: its parent's locks, pools and threads are not its own.

A child process inherits every object but only the thread that forked. A lock another thread
held stays locked for ever, a pooled socket is shared with the parent (both would read the
same responses) and a worker thread is gone. Objects that hold such things register here and
get their ``_after_fork()`` called in the child, before anything else runs there.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Renewable(Protocol):
    def _after_fork(self) -> None: ...


_OBJECTS: weakref.WeakSet[Renewable] = weakref.WeakSet()


def renew_after_fork(obj: Renewable) -> None:
    """Call ``obj._after_fork()`` in every child process forked from now on (while it lives)."""
    _OBJECTS.add(obj)


def _renew_all() -> None:
    for obj in list(_OBJECTS):
        obj._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_renew_all)
