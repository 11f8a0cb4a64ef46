"""Opening a snapshot root: what a path or URI holds (a root of layout 3, of an earlier layout,
one a killed process left half made, nothing yet), or why it is not a root."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from mihu_frames import legacy
from mihu_frames.errors import NotASnapshotRootError
from mihu_frames.store.layout import HISTORY, LATEST, PARTITION, _store_error

__all__ = ["local_state", "remote_state"]


def local_state(base: Path, create: bool) -> str:
    """What the folder ``base`` holds: ``"delta"``, ``"legacy"``, ``"partial"`` or ``"new"``.

    Raises
    ------
    NotASnapshotRootError
        ``base`` is a file, a Delta table, or a folder that is not a root (see
        :func:`mihu_frames.store.open_root`).
    """
    if not base.exists():
        if create:
            return "new"
        raise NotASnapshotRootError(base, "it does not exist")
    if not base.is_dir():
        raise NotASnapshotRootError(base, "it is a file, not a folder")
    state = _layout_state(base)
    if state is not None:
        return state
    visible = sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
    being_made = set(visible) <= {LATEST, HISTORY} and all((base / n).is_dir() for n in visible)
    if not visible or being_made:  # being_made: another writer is creating its tables now
        if create:
            return "new"
        why = "its tables are being created" if visible else "it is empty"
        raise NotASnapshotRootError(base, f"{why} (no snapshot was written to it)")
    raise NotASnapshotRootError(base, _why_not_a_root(base, visible))


def _layout_state(base: Path) -> str | None:
    """The state of a folder holding a layout (None: it holds none); a Delta table of its own
    is not a root."""
    if (base / LATEST / "_delta_log").is_dir():
        return "delta"
    if legacy.layout(base) is not None:
        return "legacy"
    if (base / HISTORY / "_delta_log").is_dir():
        return "partial"
    if (base / "_delta_log").is_dir():
        parent = base.parent
        if base.name in (LATEST, HISTORY) and (parent / LATEST / "_delta_log").is_dir():
            reason = f"it is the {base.name}/ table of a root; pass the root, {parent}"
        else:
            reason = "it is a Delta table of its own, not a folder holding latest/ and versions/"
        raise NotASnapshotRootError(base, reason)
    return None


def _why_not_a_root(base: Path, visible: list[str]) -> str:
    """Why the non-empty folder ``base`` (holding ``visible``) is not a root."""
    inside = [n for n in visible if n.startswith((f"{PARTITION}=", "fetched_date="))]
    if inside:
        return (
            f"it holds {inside[0]}/ but no _delta_log: it looks like a folder inside a "
            f"root; pass the root, {base.parent}"
        )
    shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
    return f"it holds no {LATEST}/ table and other things ({shown})"


def remote_state(uri: str, options: Mapping[str, str], create: bool) -> str:
    """What the URI ``uri`` holds: ``"delta"``, ``"partial"`` or ``"new"`` (see
    :func:`local_state`)."""
    for name, state in ((LATEST, "delta"), (HISTORY, "partial")):
        try:
            DeltaTable(f"{uri}/{name}", storage_options=dict(options) or None, without_files=True)
            return state
        except TableNotFoundError as error:
            if "scheme" in str(error).lower():
                raise _store_error(uri, error, options) from None
            continue
        except (DeltaError, OSError) as error:
            raise _store_error(uri, error, options) from None
    if create:
        return "new"
    raise NotASnapshotRootError(uri, f"it holds no {LATEST}/ Delta table")
