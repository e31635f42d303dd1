"""DST, the output folder: made ready and locked against a second run, every path written into
it checked to stay inside it, every file landing by the rename of a fresh file, and cleaned up
when the run fails.

- Lock: an exclusive `flock` on DST's own directory, held until the run ends; a second run on
  the same DST is refused (exit 2) before it writes anything. (No lock file is left behind.)
- Writes never go into an existing file: a fresh `<name>.tmp` (O_EXCL | O_NOFOLLOW, any stale
  one unlinked first) is filled and renamed over the target, so a hard-link copy of SRC as DST,
  or a symlink planted in DST, never lets a write reach another file.
- "Complete" is one atomic last step: config.json is written last (a folder without it is no
  loadable checkpoint), and --resume removes it first, so a failed run never looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional

from .srcfiles import check_apart, is_inside
from .stio import CheckpointError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the converter is used on Linux)
    fcntl = None

CONFIG = "config.json"
PARTS = ".mxquant-convert"
"""DST's folder of shard records while converting (manifest.py writes them, driver.py removes it
once the conversion is complete); made when the run takes DST, so it also marks a folder that a
run was converting into."""
MANIFEST = "mxquant-manifest.json"
"""A complete conversion's manifest (manifest.py)."""


def open_new(path: str, read_back: bool = False):
    """`path` created afresh for writing (binary; `read_back`: its descriptor can also read, for
    os.preadv): an existing entry (file or symlink) is unlinked, never written through."""
    if os.path.lexists(path):
        os.unlink(path)
    flags = (os.O_RDWR if read_back else os.O_WRONLY) | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def replace_from(path: str, write) -> None:
    """Write `path` atomically: `write(f)` fills a fresh path + '.tmp', which is fsync'd and renamed."""
    tmp = path + ".tmp"
    try:
        with open_new(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _clear(path: str) -> None:
    """Remove everything inside the folder `path` (symlinks themselves, never their targets);
    config.json first, so a run killed while clearing leaves no folder a loader takes for a whole
    checkpoint."""
    for name in sorted(os.listdir(path), key=lambda n: n != CONFIG):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


@dataclass
class Dst:
    path: str
    fd: int
    fresh: bool
    """Created, emptied or found empty by this run: a failure leaves nothing of it."""
    keep_folder: bool = False
    """Found empty: a failure empties it but leaves the folder, as the user made it."""

    def target(self, rel: str) -> str:
        """DST/rel, its folder made; refused if that folder resolves outside DST (a symlink
        left in DST by someone else)."""
        path = os.path.join(self.path, rel)
        parent = os.path.dirname(path)
        if not is_inside(os.path.realpath(parent), os.path.realpath(self.path)):
            raise CheckpointError(f"DST/{rel}: its folder resolves outside DST (a symlink in DST?); refusing")
        os.makedirs(parent, exist_ok=True)
        return path

    def discard(self) -> None:
        """After a failure: a fresh DST is removed whole (emptied, where DST is a symlink or a
        folder found empty)."""
        if self.fresh:
            _clear(self.path)
            if not (os.path.islink(self.path) or self.keep_folder):
                os.rmdir(self.path)

    def mark_incomplete(self) -> None:
        if os.path.lexists(os.path.join(self.path, CONFIG)):
            os.unlink(os.path.join(self.path, CONFIG))

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def prepare(dst: str, overwrite: bool, resume: bool, src: Optional[str] = None) -> Dst:
    """DST created if missing, locked, checked writable, emptied for --overwrite, marked
    incomplete for --resume. Refusals are CheckpointErrors, before anything in DST changed:
    SRC and DST apart (srcfiles.check_apart) is checked again here, once DST is locked."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        try:  # created: by this run's mkdir, not another's that won the race to it
            os.mkdir(dst)
            created = True
        except FileExistsError:
            created = False
        fd = os.open(dst, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        blocker = _file_above(dst)
        why = f"{blocker} is a file, not a folder" if blocker else e.strerror
        raise CheckpointError(f"DST {dst}: cannot create or open it ({why})") from None
    out = Dst(dst, fd, created)
    try:
        _lock(out)
    except BaseException:
        out.release()  # the folder belongs to the run that holds its lock: never removed here
        raise
    try:
        if src is not None:
            check_apart(src, dst)
        _check_writable(dst)
        if os.listdir(dst) and not (overwrite or resume):  # filled since the plan looked
            raise CheckpointError(f"DST {dst} exists and is not empty (pass --overwrite or --resume)")
        if overwrite and not resume:
            _clear(dst)
            out.fresh = True
        elif not resume and not created and not _own_entries(dst):  # found empty: left empty on failure
            out.fresh = out.keep_folder = True
        if resume:
            _check_parts_folder(dst)
            if not overwrite:  # with --overwrite too, replacing the folder's contents is consented to
                check_resumable(dst)
            out.mark_incomplete()
        os.makedirs(os.path.join(dst, PARTS), exist_ok=True)
    except BaseException:
        if created:  # made by this run and still locked by it: nobody else can be writing into it
            try:
                os.rmdir(dst)
            except OSError:
                pass
        out.release()
        raise
    return out


def _check_parts_folder(dst: str) -> None:
    """--resume reads and writes shard records in DST/PARTS: refused where that is a symlink
    (never followed: it could lead anywhere, SRC included) or not a folder."""
    p = os.path.join(dst, PARTS)
    if os.path.islink(p) or (os.path.lexists(p) and not os.path.isdir(p)):
        what = "a symlink" if os.path.islink(p) else "not a folder"
        raise CheckpointError(f"DST/{PARTS} is {what}: it is the converter's own folder of shard records, never "
                              "followed; remove it and run again")


def check_resumable(dst: str) -> None:
    """--resume continues a conversion into DST, and removes what it does not write (config.json,
    other weight files): refused on a non-empty DST that holds neither PARTS (a run that did
    not finish) nor MANIFEST (one that did), a folder no conversion was writing into."""
    names = _own_entries(dst)
    manifest = MANIFEST in names and not os.path.islink(os.path.join(dst, MANIFEST))
    if names and PARTS not in names and not manifest:
        raise CheckpointError(f"DST {dst} is not empty and holds no conversion by mxquant (no {PARTS}/ or "
                              f"{MANIFEST}); --resume only continues one, and would remove the folder's config.json "
                              "and weight files: pick an empty DST, or pass --overwrite to replace it")


def _own_entries(dst: str) -> list[str]:
    """DST's entries but the writable check's probe (which another run's check may be holding)."""
    return [n for n in os.listdir(dst) if not n.startswith(".mxquant-probe-")]


def _file_above(dst: str) -> str | None:
    """The nearest folder above DST that exists as something else (a file), if any."""
    parent = os.path.dirname(os.path.abspath(dst))
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return parent if parent and not os.path.isdir(parent) else None


def _lock(out: Dst) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(out.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CheckpointError(f"DST {out.path} is in use by another mxquant convert (it holds the folder's "
                              "lock); wait for it to finish") from None


def _check_writable(dst: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".mxquant-probe-", dir=dst)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CheckpointError(f"DST {dst} is not writable ({e.strerror})") from None
