"""Does this output folder belong to this run? One check for condense and sweep."""
from __future__ import annotations

import json
from pathlib import Path

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
