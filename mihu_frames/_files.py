"""Files and folders holding contact data: readable by the owner only, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents with mode 0700 (the umask may not be 077).

    Folders that already exist are left as they are.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)  # another process may race us here
        os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create ``path`` (and its missing folders) with mode 0600; an existing file gets 0600."""
    private_dirs(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
