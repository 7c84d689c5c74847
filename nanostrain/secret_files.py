"""Secrets on disk (API keys, the token-signing key): files only their owner may read.

A secret file is created with mode 0600 from the start: its text goes to a temporary file
that `tempfile.mkstemp` creates 0600 in the same folder, is fsynced, then linked into
place. So it never exists with other permissions nor half-written, and when two processes
create it at once, the first link wins and both read that one. The umask has no effect.
An existing secret file that group or others may read is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_secret(path: Path) -> str:
    """The text of secret file ``path`` (stripped); PermissionError if others may read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"The secret file {path} may be read by others (mode {mode:o}); "
            f"make it private (chmod 600 {path}) or remove it to have a new one made."
        )
    return path.read_text().strip()


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in ``path``, first creating the file with ``make()``'s text if absent."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(make() + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return read_secret(path)
