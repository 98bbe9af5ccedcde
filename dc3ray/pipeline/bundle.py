"""Student seeds trained elsewhere: the export bundle and the import of its results (Ray-free).

A machine with a GPU but no Ray (a borrowed node, a workstation) can train the students of an
evaluation with the very loop Ray Train runs (student.student_loop, in process):
`--export DIR` (dc3ray evaluate, dc3ray sweep, the accuracy benchmarks) writes a bundle there,

  DIR/jobs.json     {"jobs": [{cell, inputs_key, seeds, config, ...}, ...]}, paths relative to DIR
  DIR/sets/<name>/  each condensed set once, however many jobs train on it
  DIR/val/          the held-out split (one per bundle)
  DIR/teacher.pt    the KD teacher (one per bundle)
  DIR/sources.json  where each of those was copied from

benchmarks/gpu_student.py trains every (cell, seed) and writes gpu_seeds.json, and
`--import-seeds FILE` back here hands each evaluation the seeds whose inputs key is its own (the
digest evaluate.evaluation_plan computes from the set, val, teacher and eval config): a seed
trained on other inputs is never taken, nor one trained under an override of the protocol.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from ..config import EvalConfig, to_dict
from ..core.atomic import write_json
from ..errors import ConfigError

BUNDLE_JOBS = "jobs.json"
SEEDS_RESULT = "gpu_seeds.json"
SOURCES = "sources.json"  # where each copied set, val and teacher came from


def read_jobs(bundle: str | Path) -> dict:
    """jobs.json of a bundle ({"jobs": []} for a new one)."""
    f = Path(bundle) / BUNDLE_JOBS
    return json.loads(f.read_text()) if f.is_file() else {"jobs": []}


def _copy_once(src: Path, bundle: Path, dest: str, what: str) -> None:
    """Copy `src` to bundle/dest unless this very source is there already (sources.json records
    where each came from); another source at the same place is refused: a bundle holds one val
    and one teacher, and a set name means one set."""
    marks_file = bundle / SOURCES
    marks = json.loads(marks_file.read_text()) if marks_file.is_file() else {}
    src = Path(src).resolve()
    if (bundle / dest).exists():
        if marks.get(dest) != str(src):
            raise ConfigError(f"bundle {bundle}: its {what} came from {marks.get(dest, '?')}, "
                              f"not {src}; export this evaluation to another bundle")
        return
    (bundle / dest).parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, bundle / dest)
    write_json(marks_file, {**marks, dest: str(src)})


def add_job(bundle: str | Path, cell: str, cfg: EvalConfig, plan: dict, seeds: list[int],
            set_name: str, **extra) -> dict:
    """Add one evaluation to `bundle`: its set (as sets/<set_name>), val and teacher copied in,
    and a job training `seeds` of it with `cfg` and `plan` (evaluate.evaluation_plan of the same
    inputs). `extra` lands in the job as is (row, ipc, point: whatever names it for a reader).
    A cell already in the bundle is replaced when its inputs key is the same, refused otherwise."""
    bundle = Path(bundle)
    _copy_once(Path(plan["condensed_path"]), bundle, f"sets/{set_name}", f"set {set_name}")
    _copy_once(Path(plan["val_path"]), bundle, "val", "val split")
    teacher = None
    if plan["teacher_ckpt"]:
        teacher = "teacher.pt"
        _copy_once(Path(plan["teacher_ckpt"]), bundle, teacher, "teacher")
    job = {"cell": cell, **extra, "inputs_key": plan["inputs_key"], "seeds": list(seeds),
           "config": {"cfg": to_dict(cfg), "condensed_path": f"sets/{set_name}",
                      "val_path": "val", "teacher_ckpt": teacher,
                      **{k: plan[k] for k in ("num_classes", "batch_size", "norm",
                                              "model_kwargs")}}}
    data = read_jobs(bundle)
    for i, old in enumerate(data["jobs"]):
        if old["cell"] == cell:
            if old["inputs_key"] != job["inputs_key"]:
                raise ConfigError(f"bundle {bundle}: cell {cell} is there already with other "
                                  "inputs (another set, val, teacher or eval config)")
            data["jobs"][i] = job
            break
    else:
        data["jobs"].append(job)
    write_json(bundle / BUNDLE_JOBS, data)
    return job


def imported_seeds(path: str | Path, inputs_key: str,
                   log: Callable[[str], None] = print) -> dict[int, dict]:
    """{seed: result} of every seed in a gpu_seeds.json trained on the inputs `inputs_key` names.
    Seeds trained under an override (--epochs, --image-size) are another protocol: left out, and
    said so."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--import-seeds {path}: not a readable {SEEDS_RESULT} ({e})") from None
    found: dict[int, dict] = {}
    for job in data.get("jobs", []):
        if job.get("inputs_key") != inputs_key:
            continue
        for res in job.get("results", []):
            if res.get("overrides"):
                log(f"[import] {job['cell']} seed {res['seed']} ran with {res['overrides']}, "
                    "not this evaluation's protocol: not taken")
                continue
            found.setdefault(int(res["seed"]), res)
    return found


__all__ = ["BUNDLE_JOBS", "SEEDS_RESULT", "read_jobs", "add_job", "imported_seeds"]
