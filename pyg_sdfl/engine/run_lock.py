"""One writer per run folder: a lock file created atomically (``O_CREAT | O_EXCL``).

The lock file ``<run_dir>/run.lock`` holds JSON ``{"pid", "host", "started", "records"}``:
the holder's process id, host name and start time (ISO 8601), and the text of the files its
launcher wrote into the folder before the lock was taken (Hydra writes ``.hydra/*.yaml`` before
the task function runs). A second run into the same folder is refused with a
:class:`RunFolderLocked` naming the holder, after putting those records back, so that the
folder's files keep describing one run. A lock left by a dead process on the same host (a
``kill -9``) is taken over, with a log line; a lock from another host is never taken over.

Known limit: two runs that find the same stale lock at the same instant can both take it over.
"""
from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, Optional, Sequence, Type

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "RunFolderLocked", "RunLock"]

LOCK_NAME = "run.lock"
_HELD: set = set()  # lock files this process holds (a lock naming our own pid but not in here is a dead process's)


class RunFolderLocked(RuntimeError):
    """The run folder is locked by another run (named in the message)."""


class RunLock:
    """Context manager holding ``<run_dir>/run.lock`` for the duration of a run.

    Args:
        run_dir: the run folder (created if missing).
        records: paths relative to ``run_dir`` written by the launcher before the run starts;
            their text is stored in the lock, and a refused second run restores them.
    """

    def __init__(self, run_dir: str | os.PathLike, records: Sequence[str] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.records = tuple(records)
        self._held = False

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        content = {"pid": os.getpid(), "host": socket.gethostname(),
                   "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   "records": {name: (self.run_dir / name).read_text() for name in self.records
                               if (self.run_dir / name).is_file()}}
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                if attempt == 0 and holder is not None and _is_dead_here(holder, self.path):
                    log.warning("taking over the stale lock %s of process %s on %s (started %s), which is no "
                                "longer running", self.path, holder["pid"], holder["host"], holder.get("started"))
                    self.path.unlink(missing_ok=True)
                    continue
                self._restore(holder)
                raise RunFolderLocked(self._refusal(holder)) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(content, handle)
            self._held = True
            _HELD.add(self.path.resolve())
            return self
        raise AssertionError("unreachable")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self._held:
            holder = _read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            _HELD.discard(self.path.resolve())
            self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()

    def _refusal(self, holder: Optional[Dict[str, Any]]) -> str:
        if holder is None:
            return (f"the run folder {self.run_dir} is locked ({self.path} exists but cannot be read); use another "
                    f"folder, or delete {self.path} if no run is using this one")
        return (f"the run folder {self.run_dir} is in use by process {holder.get('pid')} on {holder.get('host')} "
                f"(started {holder.get('started')}); use another folder (e.g. hydra.run.dir=...), or wait for it "
                f"to finish (its lock: {self.path})")

    def _restore(self, holder: Optional[Dict[str, Any]]) -> None:
        """Put back the holder's launcher records that this (refused) run's launcher overwrote."""
        for name, text in ((holder or {}).get("records") or {}).items():
            path = self.run_dir / name
            if name in self.records and (not path.is_file() or path.read_text() != text):
                path.write_text(text)
                log.info("restored %s of the run holding %s", path, self.path)


def _read_holder(path: Path) -> Optional[Dict[str, Any]]:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_dead_here(holder: Dict[str, Any], path: Path) -> bool:
    """True when the holder ran on this host and its process no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False
    if holder["pid"] == os.getpid():  # this process, or a dead one whose pid it was given again
        return path.resolve() not in _HELD
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError as err:  # EPERM: alive, owned by someone else
        return err.errno != errno.EPERM
    return False
