"""Files the user names for ctq to write (``ctq report --out``, ``ctq export PATH``).

Written whole or not at all (a temporary file beside the target, renamed over it), as pg_dump -f
does, and as a shell redirect would treat the path otherwise:

- a symbolic link is written through: its target is replaced, the link stays;
- an existing file keeps its permissions (and, when ctq runs as root, its owner): a report written
  over a private file stays private;
- anything that is not a regular file (a device such as /dev/null, a FIFO, a directory) is
  refused: a rename over it would replace a device node for the whole machine (a user trial, as
  root: ``--out /dev/full`` became an HTML file).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator

from ctq.errors import UsageError


def target(path: str, what: str) -> str:
    """The file ``path`` names (symbolic links followed), checked before any work: its directory
    exists and it is a regular file or none. Raises UsageError naming ``what`` (the option)."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise UsageError(f"{what} {path}: is a directory; give a file name, e.g. {os.path.join(path, 'out')}")
    if os.path.exists(real) and not stat.S_ISREG(os.stat(real).st_mode):
        raise UsageError(f"{what} {path}: is not a regular file (a device, a FIFO?); give a file name")
    parent = os.path.dirname(real)
    if not os.path.isdir(parent):
        raise UsageError(f"{what} {path}: no such directory {parent}")
    return real


def _beside(path: str, real: str, what: str, suffix: str) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(suffix=suffix, prefix=".ctq-", dir=os.path.dirname(real))
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {os.path.dirname(real)} ({exc.strerror})") from None


def check_writable(path: str, what: str) -> None:
    """:func:`target`, and a file created (and removed) beside it: the directory takes one."""
    real = target(path, what)
    fd, temporary = _beside(path, real, what, "")
    os.close(fd)
    os.unlink(temporary)


@contextlib.contextmanager
def replacing(path: str, what: str, suffix: str = "") -> Iterator[str]:
    """A temporary file's name beside ``path``'s target: write it inside the ``with``; on leaving
    it, it replaces the target (with the existing file's mode and owner, else 0666 less the
    umask); on an error it is removed and the target left as it was. OSError: UsageError."""
    real = target(path, what)
    fd, temporary = _beside(path, real, what, suffix)
    try:
        try:
            existing = os.stat(real)
        except FileNotFoundError:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
        else:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            if os.geteuid() == 0:
                os.fchown(fd, existing.st_uid, existing.st_gid)
        os.close(fd)
        fd = -1
        yield temporary
        os.replace(temporary, real)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
