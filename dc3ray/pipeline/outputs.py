"""Does this output folder belong to this run? One check for condense and sweep."""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..config import flatten_dotted
from ..core.atomic import write_json
from ..errors import OutputError

# What a dc3ray run writes before its marker can exist (a first attempt that failed early):
# a folder holding only these is our own partial work, and is reused.
OWN_PARTIAL_WORK = ("stages", "mlflow.db", "mlartifacts", "download", "data", "logs",
                    ".dc3ray.lock")


def _diff(old: dict, new: dict, ignore: tuple[str, ...]) -> str:
    old, new = flatten_dotted(old), flatten_dotted(new)
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in ignore]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:5])


def claim_output(out: str | Path, marker: str, identity: dict, *, what: str = "run",
                 info: dict | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Make `out` this run's, or refuse with OutputError.

    `out/marker` records `identity` (what must match for a rerun to reuse the folder) and
    `info`. A marker with another identity (keys in `ignore` aside) is another run's; a folder
    without a marker may only hold OWN_PARTIAL_WORK. Writes the marker when the folder is ours.
    """
    out = Path(out)
    path = out / marker
    identity = json.loads(json.dumps(identity, default=str))
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
        # Markers written before `identity` existed hold its keys at the top level.
        other = data.get("identity") if isinstance(data.get("identity"), dict) else \
            {k: data.get(k) for k in identity}
        diff = _diff(other, identity, ignore)
        if diff:
            raise OutputError(f"output folder {out} holds another dc3ray {what} ({diff})",
                              hint=f"rerun with the same settings to resume it, or choose "
                                   f"another out")
    else:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_PARTIAL_WORK) \
            if out.is_dir() else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise OutputError(f"output folder {out} is not empty and holds no dc3ray {what} "
                              f"(found {shown})",
                              hint="choose another out, or remove those files")
    write_json(path, {"identity": identity, **(info or {})})


LOCK_FILE = ".dc3ray.lock"

# Locks this process holds: resolved out folder -> [open lock file, nesting depth].
_held: dict[Path, list] = {}
_held_guard = threading.Lock()


@contextmanager
def output_lock(out: str | Path, what: str, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold `out/.dc3ray.lock` for this driver inside the block: one driver per output folder.

    The file is flock()ed while held (the kernel releases it when the process dies, however it
    dies) and records host, pid, command and start time for the messages. Another driver that
    holds it: OutputError naming it, at once. A record left by a dead process on this host is
    taken over with a line saying so; one from another host is not (flock may not reach across
    machines on shared storage): OutputError saying how to remove it. Re-entrant per process and
    folder (a sweep's condense, condense's evaluations). Yields the lock file's path.
    """
    out = Path(out).resolve()
    path = out / LOCK_FILE
    with _held_guard:  # acquiring never waits (LOCK_NB), so holding the guard meanwhile is fine
        entry = _held.get(out)
        if entry is None:
            entry = _held[out] = [_acquire(out, path, what, log), 0]
        entry[1] += 1
    try:
        yield path
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[out]
                path.unlink(missing_ok=True)  # still flocked: no other driver holds this inode
                entry[0].close()


def _acquire(out: Path, path: Path, what: str, log: Callable[[str], None]):
    """Open and flock the lock file (retrying when another driver replaced it meanwhile), check a
    leftover record, write ours; returns the open file."""
    out.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            f = open(path, "a+")
        except OSError as e:  # a read-only folder or file system, another user's lock file
            raise OutputError(f"cannot write the lock file {path} ({e.strerror})",
                              hint="choose an out that this user can write") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(f)
            f.close()
            raise OutputError(f"output folder {out} is in use by another dc3ray driver "
                              f"({_describe(holder)})",
                              hint="wait until it ends (or stop it), or choose another out") \
                from None
        try:  # the holder we waited on may have removed the file: lock the one at `path`
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        old = _read_record(f)
        if old:
            _check_leftover(old, out, path, log)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_record(what), indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        f.close()
        raise
    return f


def _record(what: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "pid_start": _start_ticks(os.getpid()), "what": what,
            "command": shlex.join(sys.argv)[:500],
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _read_record(f) -> dict:
    f.seek(0)
    try:
        data = json.loads(f.read() or "{}")
    except ValueError:  # a holder killed while writing its record
        return {}
    return data if isinstance(data, dict) else {}


def _describe(rec: dict) -> str:
    if not rec:
        return "its record is not written yet"
    return (f"{rec.get('what', 'driver')}: pid {rec.get('pid')} on {rec.get('host')}, "
            f"since {rec.get('since')}; {rec.get('command', '')}")


def _start_ticks(pid: int) -> int | None:
    """Start time of process `pid` (clock ticks after boot; None where /proc is absent): a pid
    reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or _start_ticks(pid) in (None, start)


def _check_leftover(old: dict, out: Path, path: Path, log: Callable[[str], None]) -> None:
    """A record in a lock nobody flocks: the driver that wrote it died without removing it."""
    host, pid = old.get("host"), old.get("pid")
    if host != socket.gethostname():
        raise OutputError(f"output folder {out} is locked by {_describe(old)}; a lock taken on "
                          f"another machine is not taken over (this is {socket.gethostname()})",
                          hint=f"if that run has ended, delete {path} and rerun")
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid, old.get("pid_start")):
        raise OutputError(f"output folder {out} is locked by {_describe(old)}, which still runs "
                          "but no longer holds the lock file (was it deleted?)",
                          hint=f"stop pid {pid}, or delete {path} if it is not a dc3ray driver")
    log(f"[lock] taking over the lock of {old.get('what', 'a driver')} pid {pid} on {host} "
        f"(since {old.get('since')}), which ended without releasing it")
