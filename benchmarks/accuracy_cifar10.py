"""Accuracy table on real CIFAR-10 (issue 9, part 1): condense from train, score on val.

Every row is a condensed set built by dc3ray's own pipeline functions, scored by the KD protocol
(ConvNet-3 student, 300 epochs, 3 seeds by default) against a ConvNet-3 teacher trained by
`dc3ray teacher`. Rows:

  random, herding, kcenter, facility     selection baselines (no compensation)
  dc3_select                             DC3 selection only
  dc3_classical, random_classical        + the classical color compensator
  dc3_gentle                             + the classical compensator at strength 0.25 with the
                                         diversity-aware word assignment (issue 26's screen)
  dc3_diffusion                          + InstructPix2Pix (only with --diffusion-model and a GPU;
                                         otherwise recorded as "not measured" with the reason)
  <row>/hard                             the same set trained with hard labels (CE, no teacher)

The run is resumable at every level and accumulates across invocations: teacher features are
computed once (work/features), each set once (work/sets/<set>), each evaluation keeps its
finished seeds (work/eval/<row>_ipc<k>/seeds/, evaluate_condensed's seed files). A later call
with other --rows/--ipc adds to the same table. The record (results/accuracy_cifar10.json)
lists every requested cell, measured or not, so a missing cell is visible, never silently
absent.

Each seed is also kept in results/accuracy_cifar10_seeds/<cell>/<digest>/ (committed, a few
KB), the digest covering what a seed depends on: the condensed set's and val's images and
labels, the teacher's weights and the evaluation config. A cell's seeds go there when its
evaluation returns; those of an interrupted evaluation are taken from its work dir by the next
run of the cell. A work dir lost with its machine then costs the re-run of its inputs (ingest,
teacher, sets), not the hours of finished seeds: a stored seed whose digest matches is written
into the new work dir as a finished seed file, so it is reused, not retrained. The inputs are
reproducible bit for bit only on the same CPU type and libraries (a teacher retrained on another
CPU has other weights, so its KD and DC3 cells get a new digest and start again); random-set
hard-label cells carry across.
A cell reports the digest with the most seeds (then the newest); every seed names its CPU. A
cell measured before the store existed, whose seed files are gone, is carried over from the
previous record with that record's date and machine ("from_record") until measured again, or
until a run with --drop-carried removes its figures (its status then names the record it came
from: a figure whose inputs are lost is measured again or removed).

  python benchmarks/accuracy_cifar10.py --train runs/cifar10/train --val runs/cifar10/val \\
      --work runs/bench/acc --rows random --ipc 10 50
  python benchmarks/accuracy_cifar10.py --work runs/bench/acc --report-only   # re-collect

CPU cost on the 2-core AMD EPYC sandbox with nothing else running: a ConvNet-3 seed at 300
epochs is ~3.5 min at IPC 1, ~8.5 min at IPC 10 and ~29 min at IPC 50 (measured,
docs/BENCHMARKS.md); a 2-core Intel Xeon with AVX-512 took 9.5-15 min at IPC 50 with hard
labels and 12.5-18.5 min with KD (the teacher runs on every batch). The full table
(8 rows x 3 IPCs x 3 seeds + hard labels) is most of a day of CPU; on a GPU it is an afternoon.
Run it row by row. A student seed trains on one CPU, so two processes in the same --work can
share one cell's seeds: `--screen 2` in one, `--seed-from 2` in the other; a plain run of the
cell afterwards collects all three. Cells too slow for CPUs train on a GPU machine through
--export / benchmarks/gpu_student.py / --import (see accuracy_imagenette.py's help and
gpu_student.py's): the seeds come back checked against this machine's inputs and are stored
with the GPU named.

The teacher is committed (teacher_c3/teacher.pt, 1.3 MB; teacher_c3/teacher.json is its run
record): `dc3ray teacher runs/cifar10/train --val runs/cifar10/val --out runs/bench/teacher_c3
--epochs 6` on 2026-11-29 (Intel Xeon, 2 cores, torch 2.14.1), val top-1 78.26%. Every cell of
the record was measured with it, on that Intel machine or on an AMD EPYC (each seed names its
CPU); the cells of an earlier AMD-trained teacher (78.56%), lost with its machine, were measured
again with the committed one on 2026-12-02/03. Selections from the teacher's features came out
byte-identical on both CPU types where checked (DC3 at IPC 10 and 50).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, load, machine, save, utc_now  # noqa: E402

from dc3ray.config import EmbedConfig, EvalConfig, GradConfig  # noqa: E402
from dc3ray.core.atomic import write_json  # noqa: E402



@dataclass(frozen=True)
class Row:
    """One row: a selection (method, the features it reads, its settings), then an optional
    compensator. The ablation rows differ from dc3_select in settings only (issue 29)."""
    method: str
    comp: str | None = None
    features: str = "base"  # a FEATURES entry
    select: tuple[tuple[str, object], ...] = ()  # SelectConfig overrides
    name: str | None = None  # the selection's set name; default: the method's
    compensate: tuple[tuple[str, object], ...] = ()  # CompensateConfig overrides
    comp_name: str | None = None  # the compensated set's suffix; default: the compensator's

    @property
    def selection(self) -> str:
        return self.name or self.method

    @property
    def compensation(self) -> str | None:
        return self.comp_name or self.comp


# The features variant every model-based row reads unless it names another (work/features).
BASE = "base"
# name -> (EmbedConfig overrides (bins), GradConfig overrides (gradients), select.faithful):
# changes to the teacher-backbone features every model-based row reads by default. faithful
# (the reference's softmax-then-CE gradients, unclamped bins) goes with the reference's setting.
EFFNET = {"backbone": "efficientnet_lite0", "model_path": None, "image_size": 224,
          "batch_size": 64}
FEATURES = {
    BASE: ({}, {}, False),                           # (a) the teacher's own head
    "gradrandom": ({}, {"head": "random"}, False),   # (b) teacher features, seeded random head
    "effnet": ({}, {**EFFNET, "head": "random"}, True),  # (c) the reference's setting
    "gradzero": ({}, {"head": "zero"}, False),       # (d) e = 1/C - onehot
    "effbins": (EFFNET, {}, False),                  # bins in EfficientNet-Lite0 space
}
ROWS = {
    "random": Row("random"),
    "herding": Row("herding"),
    "kcenter": Row("kcenter"),
    "facility": Row("facility"),
    "dc3_select": Row("dc3"),
    "dc3_classical": Row("dc3", "classical"),
    "random_classical": Row("random", "classical"),
    "dc3_diffusion": Row("dc3", "instructpix2pix"),
    # issue 26: the compensation screen's best setting (docs/FINDINGS.md), confirmed at 3 seeds
    "dc3_gentle": Row("dc3", "classical", compensate=(("strength", 0.25), ("assignment", "diverse")),
                      comp_name="classical-s0.25-diverse"),
    # issue 29: DC3 selection ablation (one setting changed each) and RDED
    "dc3_gradrandom": Row("dc3", features="gradrandom", name="dc3-gradrandom"),
    "dc3_effnet": Row("dc3", features="effnet", name="dc3-effnet"),
    "dc3_gradzero": Row("dc3", features="gradzero", name="dc3-gradzero"),
    "dc3_effbins": Row("dc3", features="effbins", name="dc3-effbins"),
    "dc3_proportional": Row("dc3", select=(("budget", "proportional"),), name="dc3-proportional"),
    # RDED's own CIFAR-10 ConvNet-3 script: factor 1 (one teacher-scored crop per image), 5 crops
    # of each of 300 drawn images per class (the select.rded_* defaults otherwise).
    "rded": Row("rded", select=(("rded_factor", 1),), name="rded-f1"),
    # As first measured here: 2 x 2 mosaics of crops of at least half the area of every image
    # (set name "rded" kept: its work folder and committed seeds predate the row's rename).
    "rded_2x2": Row("rded", select=(("rded_factor", 2), ("rded_candidates", 0),
                                    ("rded_min_scale", 0.5)), name="rded"),
}
HARD_SUFFIX = "/hard"
DEFAULT_ROWS = list(ROWS) + ["random/hard", "dc3_select/hard", "dc3_classical/hard"]
MODEL_FREE = ("random",)
RECORD = "accuracy_cifar10"
STORE = RECORD + "_seeds"
TEACHER = Path(__file__).resolve().parent / "teacher_c3" / "teacher.pt"


@dataclass(frozen=True)
class Profile:
    """What is dataset-specific in an accuracy benchmark. Everything else in this module is
    shared: accuracy_imagenette.py runs main() with its own profile."""
    record: str  # results/<record>.json; its seeds in results/<record>_seeds/
    train: str  # --train, --val, --work defaults
    val: str
    work: str
    teacher: str | None  # --teacher default; None: `prepare` sets (and builds) it
    teacher_help: str
    rows: dict[str, Row]
    default_rows: list[str]
    ipcs: list[int]
    features: dict[str, tuple]  # FEATURES variants (BASE at least)
    base_features: Callable[[str], tuple]  # teacher checkpoint -> (EmbedConfig, GradConfig)
    eval: EvalConfig  # the evaluation; its epochs, seeds and eval_every are the CLI defaults
    protocol_note: str
    select_seed: int = 0
    # The default table's cells, when it is not every default row at every IPC: without both
    # --rows and --ipc only these run, and the record always lists them.
    cells: tuple[tuple[str, int], ...] | None = None
    prepare: Callable[[Any, Path], None] | None = None  # (args, work), before anything runs
    reuse_features: bool = False  # offers --features DIR
    protocol: Callable[[Any], dict] | None = None  # more protocol entries of the record
    notes: tuple[str, ...] = ()
    reference: dict | None = None  # figures not measured here, printed beside the table

    @property
    def store(self) -> str:
        return self.record + "_seeds"


def _teacher_features(teacher: str) -> tuple[EmbedConfig, GradConfig]:
    kw = {"backbone": "teacher", "model_path": teacher, "image_size": 32, "batch_size": 256}
    return EmbedConfig(**kw), GradConfig(**kw)


CIFAR10 = Profile(
    record=RECORD, train="runs/cifar10/train", val="runs/cifar10/val", work="runs/bench/acc",
    teacher=str(TEACHER),
    teacher_help="ConvNet-3 teacher from `dc3ray teacher` (KD and selection features); "
                 "default: the committed benchmarks/teacher_c3/teacher.pt",
    rows=ROWS, default_rows=DEFAULT_ROWS, ipcs=[1, 10, 50], features=FEATURES,
    base_features=_teacher_features, eval=EvalConfig(student="convnet3", eval_every=25),
    protocol_note="condense_s excludes the one-off teacher feature pass (features_s), shared by "
                  "every model-based row")


def _profile(args) -> Profile:
    # Callers that build args themselves (the tests) get CIFAR-10's.
    return getattr(args, "profile", None) or CIFAR10


def parse_row(row: str, profile: Profile | None = None) -> tuple[str, bool]:
    profile = profile or CIFAR10
    base, hard = (row[:-len(HARD_SUFFIX)], True) if row.endswith(HARD_SUFFIX) else (row, False)
    if base not in profile.rows:
        raise SystemExit(f"--rows: unknown row {row!r}; choose from {profile.default_rows} "
                         f"(any row + '{HARD_SUFFIX}' for hard labels)")
    return base, hard


def _timing_file(work: Path) -> Path:
    return work / "timings.json"


def _record_timing(work: Path, name: str, seconds: float) -> None:
    f = _timing_file(work)
    data = json.loads(f.read_text()) if f.is_file() else {}
    data[name] = round(seconds, 2)
    write_json(f, data)  # an interrupt keeps the old timings


def _timing(work: Path, name: str) -> float | None:
    f = _timing_file(work)
    return json.loads(f.read_text()).get(name) if f.is_file() else None


def _feature_configs(args, variant: str) -> tuple[EmbedConfig, GradConfig, bool]:
    """(bins config, gradients config, select.faithful) of one FEATURES variant."""
    profile = _profile(args)
    emb_over, grad_over, faithful = profile.features[variant]
    emb, grad = profile.base_features(str(Path(args.teacher).resolve()))
    return replace(emb, **emb_over), replace(grad, **grad_over), faithful


def _features(args, work: Path, variant: str = BASE) -> Path:
    """Embeddings and gradient factors of the whole train split for one FEATURES variant, once
    (work/features for the base, work/features-<variant> for the others; --features, checked,
    stands in for the base)."""
    from dc3ray.pipeline.features import compute_features
    if variant == BASE and getattr(args, "features", None):
        return Path(args.features)
    name = "features" if variant == BASE else f"features-{variant}"
    out = work / name
    if (out / "features.json").is_file():
        return out
    emb, grad, faithful = _feature_configs(args, variant)
    print(f"[acc] {name} of {args.train}: bins {emb.backbone}, gradients {grad.backbone} "
          f"(head {grad.head}) ...", flush=True)
    t0 = time.perf_counter()
    compute_features(args.train, emb, grad, out, faithful=faithful)
    _record_timing(work, name, time.perf_counter() - t0)
    return out


def _output_settings(cfg) -> dict:
    """A features config's fields that change the features (batching and pools do not)."""
    from dc3ray.config import to_dict
    return {k: v for k, v in to_dict(cfg).items()
            if k not in ("batch_size", "num_actors", "num_cpus_per_actor")}


def checked_features(args, given: str) -> Path:
    """--features: an existing compute_features folder (or a condense run's
    stages/features-<id>) used as the base features, refused unless its features.json records
    this benchmark's settings and it was computed from --train's images."""
    d = Path(given)
    if not (d / "features.json").is_file() and (d / "features" / "features.json").is_file():
        d = d / "features"
    if not (d / "features.json").is_file():
        raise SystemExit(f"--features {given}: no features.json there (a compute_features "
                         "folder, or a condense run's stages/features-<id>)")
    info = json.loads((d / "features.json").read_text())
    emb, grad, faithful = _feature_configs(args, BASE)
    diffs = []
    for section, cfg in (("embed", emb), ("grad", grad)):
        got = info.get(section)
        if got is None:
            diffs.append(f"{section}: not computed there")
            continue
        diffs += [f"{section}.{k} is {got.get(k)!r} there, {v!r} here"
                  for k, v in _output_settings(cfg).items() if got.get(k) != v]
    if info.get("faithful") != faithful:
        diffs.append(f"faithful is {info.get('faithful')!r} there, {faithful!r} here")
    if diffs:
        raise SystemExit(f"--features {given} was computed with other settings than this "
                         f"benchmark's ({'; '.join(diffs)}); drop --features to compute them "
                         "here")
    _check_same_images(d, info.get("dataset"), args.train)
    return d


def _check_same_images(features: Path, dataset: str | None, train: str) -> None:
    """The features' images are --train's: same ingest fingerprint, or (the features' source
    folder gone) the same keys and labels."""
    from dc3ray.core import schema

    def fingerprint(path) -> str | None:
        f = Path(path or "") / schema.DATASET_INFO_FILE
        return json.loads(f.read_text()).get("fingerprint") if path and f.is_file() else None
    theirs, ours = fingerprint(dataset), fingerprint(train)
    if theirs and ours:
        if theirs != ours:
            raise SystemExit(f"--features {features} were computed from {dataset} (ingest "
                             f"fingerprint {theirs}), not from --train {train} ({ours})")
        return
    from dc3ray.core.shards import read_shards
    from dc3ray.pipeline.features import read_features
    cols = [schema.KEY, schema.LABEL]
    rows = [sorted(zip(*(t.column(c).to_pylist() for c in cols)))
            for t in (read_features(features, columns=cols), read_shards(train, None, cols))]
    if rows[0] != rows[1]:
        raise SystemExit(f"--features {features} hold other images (keys, labels) than --train "
                         f"{train}")


def _once(work: Path, name: str, build) -> Path:
    """work/sets/<name>, built by build(out) unless it exists (builders commit atomically)."""
    out = work / "sets" / name
    if not out.is_dir():
        t0 = time.perf_counter()
        build(out)
        _record_timing(work, name, time.perf_counter() - t0)
    return out


def _selection(args, work: Path, row: Row, ipc: int) -> Path:
    from dc3ray.config import SelectConfig
    from dc3ray.pipeline.features import key_label_table
    from dc3ray.pipeline.select import materialise_subset, rded_subset, select_per_class
    profile = _profile(args)
    name = _set_name(row.selection, ipc)
    model_based = row.method not in MODEL_FREE and row.method != "rded"
    if model_based and not (work / "sets" / name).is_dir():
        _features(args, work, row.features)  # before the set's clock: features_s is its own figure

    def build(out: Path) -> None:
        sel = SelectConfig(method=row.method, ipc=ipc, seed=args.select_seed,
                           faithful=profile.features[row.features][2], **dict(row.select))
        if row.method == "rded":  # crops scored by the base gradient model (its own head)
            grad = profile.base_features(str(Path(args.teacher).resolve()))[1]
            rded_subset(args.train, grad, sel, out, show_progress=False)
            return
        if model_based:
            feats = _features(args, work, row.features)
        else:
            feats = work / "keys"
            if not feats.is_dir():
                key_label_table(args.train, feats)
        manifest = select_per_class(feats, sel, work / "selection" / name, show_progress=False)
        materialise_subset(args.train, manifest, out)
    return _once(work, name, build)


def _compensated(args, work: Path, source: Path, row: Row) -> Path:
    from dc3ray.config import CompensateConfig
    from dc3ray.pipeline.compensate import compensate_dataset
    kw = {"model_path": args.diffusion_model} if row.comp != "classical" else {}
    cfg = CompensateConfig(compensator=row.comp, seed=args.comp_seed, **kw, **dict(row.compensate))
    return _once(work, _set_name(source.name, None, row.compensation),
                 lambda out: compensate_dataset(source, cfg, out))


def _not_measured(base: str, args) -> str | None:
    if _profile(args).rows[base].comp == "instructpix2pix":
        import torch
        if not args.diffusion_model:
            return "no InstructPix2Pix weights given (--diffusion-model); none exist offline here"
        if not torch.cuda.is_available():
            return "no GPU on this machine: 100-step diffusion on CPU is hours per class"
    return None


def _eval_cfg(args, hard: bool) -> EvalConfig:
    return replace(_profile(args).eval, epochs=args.epochs, seeds=args.seeds,
                   eval_every=args.eval_every, hard_labels=hard)


def _table_digest(path: Path) -> str:
    """Digest of a set's keys, labels and image bytes in key order: equal for the same images
    however they are sharded and whatever the parquet metadata says."""
    import hashlib
    from dc3ray.core import datasets, schema
    t = datasets.load_table(path).sort_by(schema.KEY)
    h = hashlib.sha256()
    for k, y, img in zip(*(t.column(c).to_pylist() for c in (schema.KEY, schema.LABEL, schema.IMAGE))):
        h.update(f"{k}\0{y}\0{len(img)}\0".encode())
        h.update(img)
    return h.hexdigest()[:16]


def _weights_digest(ckpt: str | Path, loaded: tuple | None = None) -> str:
    """Digest of a checkpoint's architecture and weights (not its file: that also holds timings).
    `loaded` is load_model_checkpoint(ckpt) when the caller has it already."""
    import hashlib
    from dc3ray.core.models import load_model_checkpoint
    model, meta = loaded or load_model_checkpoint(ckpt)
    h = hashlib.sha256(f"{meta['arch']} {meta['num_classes']} {meta['image_size']}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_label(ckpt: str | Path) -> str:
    """'<weights digest> (val top-1 NN.NN%)': names the teacher behind a KD cell."""
    from dc3ray.core.models import load_model_checkpoint
    loaded = load_model_checkpoint(ckpt)
    top1 = loaded[1].get("extra", {}).get("val_top1")
    return f"{_weights_digest(ckpt, loaded)} (val top-1 {top1}%)"


def inputs_parts(args, condensed: Path, hard: bool, ipc: int) -> dict:
    """What a seed's result depends on besides its seed (see the module docstring)."""
    return {"set": _table_digest(condensed), "val": _table_digest(Path(args.val)),
            "teacher": None if hard else _weights_digest(args.teacher),
            "eval": _eval_key(args, hard), "ipc": ipc}


def _eval_key(args, hard: bool) -> dict:
    from dc3ray.config import to_dict
    # eval.norm "auto" resolves from the teacher or the set, both in the digest already: left
    # out, seeds stored before the field existed stay usable.
    return {k: v for k, v in to_dict(_eval_cfg(args, hard)).items()
            if k != "seeds" and (k, v) != ("norm", "auto")}


def inputs_digest(args, condensed: Path, hard: bool, ipc: int) -> str:
    from dc3ray.core.fingerprint import json_digest
    return json_digest(inputs_parts(args, condensed, hard, ipc))


def _store(args) -> Path:
    return Path(args.out_dir or RESULTS) / _profile(args).store


def _read_entries(folder: Path) -> dict[int, dict]:
    out = {}
    for f in sorted(folder.glob("seed*.json")):
        try:
            out[int(f.stem[len("seed"):])] = json.loads(f.read_text())
        except (OSError, ValueError):
            print(f"[acc] skipping unreadable {f}", flush=True)
    return out


def _stored_seeds(args, cell: str, hard: bool, key: str | None = None) -> dict[int, dict]:
    """Usable stored seeds of `cell` (seed < --seeds, this epoch budget and eval config) for
    inputs digest `key`; without a key, the digest with the most of them (ties: the newest)."""
    root = _store(args) / cell
    want = _eval_key(args, hard)

    def usable(folder: Path) -> dict[int, dict]:
        return {s: e for s, e in _read_entries(folder).items()
                if s < args.seeds and _at_budget(e["result"], args.epochs)
                and e.get("parts", {}).get("eval") == want}
    if key is not None:
        return usable(root / key)
    groups = [(len(u), max(e.get("date", "") for e in u.values()), d.name, u)
              for d in sorted(root.glob("*")) if d.is_dir() for u in [usable(d)] if u]
    return max(groups, key=lambda g: g[:3])[3] if groups else {}


def _at_budget(result: dict, epochs: int) -> bool:
    """A seed from another epoch budget is stale (evaluate_condensed would retrain it)."""
    return bool(result.get("history")) and result["history"][-1][0] == epochs


def seed_keeper(args, work: Path, row: str, ipc: int, parts: dict, condensed: Path):
    """keep(seed, result, date=None): put one seed of this cell in the store unless it is there,
    named with the CPU it ran on, the date (default now), the teacher (DC3 rows select with
    its features) and the teacher's reading of the set (top-1, mean p(true class) on its raw
    images). Returns whether it stored the seed."""
    from dc3ray.core.fingerprint import json_digest
    profile = _profile(args)
    base, hard = parse_row(row, profile)
    folder = _store(args) / cell_name(row, ipc, profile) / json_digest(parts)
    uses_teacher = not hard or profile.rows[base].method not in MODEL_FREE
    teacher = teacher_label(args.teacher) if uses_teacher else None
    on_set = {}

    def keep(seed: int, result: dict, date: str | None = None, same_as: str | None = None,
             cpu: str | None = None) -> bool:
        if seed in _read_entries(folder):
            return False  # stored when it was first done; a reuse changes nothing
        if not on_set:
            on_set.update(_teacher_on_set(args.teacher, condensed))
        extra = {"same_inputs_as": same_as} if same_as else {}
        write_json(folder / f"seed{seed}.json", {
            "inputs": folder.name, "parts": parts,
            "condense_s": _condense_s(work, profile.rows[base], ipc),
            "cpu": cpu or machine()["cpu"], "teacher": teacher, "teacher_on_set": on_set,
            "result": result, "date": date or utc_now(), **extra})
        return True
    return keep


def _teacher_on_set(ckpt: str | Path, condensed: Path) -> dict:
    """{'teacher_top1' (%), 'mean_p_true'} of the (committed) teacher on the set's raw images:
    how sure the KD targets are of each image's class (the store's names for teacher_reading)."""
    from dc3ray.pipeline.evaluate import teacher_reading
    res = teacher_reading(ckpt, condensed)
    return {"teacher_top1": res["teacher_top1"], "mean_p_true": res["teacher_p_true"]}


def _set_name(method: str, ipc: int | None, comp: str | None = None) -> str:
    """work/sets/ name: '<method>_ipc<k>' for a selection (ipc None: `method` is that name
    already), '+<compensator>' for its compensated copy. Timings are kept under the same names."""
    sel = method if ipc is None else f"{method}_ipc{ipc}"
    return sel + (f"+{comp}" if comp else "")


def _condense_s(work: Path, row: Row, ipc: int) -> float | None:
    cond = [_timing(work, _set_name(row.selection, ipc)),
            _timing(work, _set_name(row.selection, ipc, row.compensation)) if row.comp else 0.0]
    return round(sum(cond), 1) if None not in cond else None


def _plan_cell(args, work: Path, row: str, ipc: int):
    """What running a cell needs, its set built: eval configs (run_cfg honours --screen), the
    set, the evaluation's inputs and plan key, the store's parts; None for a cell that cannot be
    measured here."""
    from types import SimpleNamespace
    from dc3ray.pipeline.evaluate import evaluation_plan
    profile = _profile(args)
    base, hard = parse_row(row, profile)
    if _not_measured(base, args):
        return None
    cfg = _eval_cfg(args, hard)
    # --screen: only the first seeds now (the record still counts them against --seeds);
    # --seed-from: only the later ones (another process trains the first, in the same work dir).
    # Checked before the set is built, so a bad flag costs nothing.
    run_cfg = replace(cfg, seeds=min(cfg.seeds, args.screen)) if args.screen else cfg
    first = args.seed_from or 0
    if first >= run_cfg.seeds:
        raise SystemExit(f"--seed-from {first} leaves no seed to train (seeds 0..{run_cfg.seeds - 1})")
    spec = profile.rows[base]
    condensed = _selection(args, work, spec, ipc)
    if spec.comp:
        condensed = _compensated(args, work, condensed, spec)
    # The plan and the evaluation get the same inputs, so the plan's key is the one the
    # evaluation checks its seed files against.
    inputs = (run_cfg, condensed, args.val, None if hard else args.teacher)
    plan = evaluation_plan(*inputs, ipc=ipc)
    return SimpleNamespace(cfg=cfg, run_cfg=run_cfg, first=first, hard=hard, condensed=condensed,
                           cell=cell_name(row, ipc, profile), inputs=inputs, plan=plan,
                           key=plan["inputs_key"], parts=inputs_parts(args, condensed, hard, ipc))


def run_cell(args, work: Path, row: str, ipc: int) -> None:
    from dc3ray.core.fingerprint import json_digest
    from dc3ray.pipeline.evaluate import evaluate_condensed, read_seed, seed_file
    c = _plan_cell(args, work, row, ipc)
    if c is None:
        return
    cfg, first, hard, condensed, cell = c.cfg, c.first, c.hard, c.condensed, c.cell
    inputs, key, parts = c.inputs, c.key, c.parts
    out = work / "eval" / cell
    if args.import_seeds:
        _place_imported(args.import_seeds, c, out)
    keep = seed_keeper(args, work, row, ipc, parts, condensed)
    in_work = {}
    for seed in range(cfg.seeds):
        f = seed_file(out, seed)
        res = read_seed(f, key, seed, cfg.epochs)
        if res is not None:
            in_work[seed] = res
            # Harvest: a seed finished by an earlier invocation that was stopped before its
            # evaluation returned, or trained elsewhere (--import). Its inputs key is this plan's
            # (same set, val and teacher files, untouched since, and the same eval config), so
            # it is a seed of `parts`; one from elsewhere names the device it ran on.
            date = res.get("date") or time.strftime("%Y-%m-%d %H:%M UTC",
                                                    time.gmtime(f.stat().st_mtime))
            if keep(seed, res, date, cpu=res.get("device")):
                print(f"[acc] {cell}: seed {seed} taken into the store from {f}", flush=True)
    digest = json_digest(parts)
    # The same inputs digest under another cell (two settings that select the very same images,
    # e.g. a random head whose near-zero logits make it the zero head): the same computation,
    # so that cell's seeds are this one's (stored with where they came from).
    for other in sorted(_store(args).glob(f"*/{digest}")):
        if other.parent.name != cell:
            for seed, e in _stored_seeds(args, other.parent.name, hard, digest).items():
                if keep(seed, e["result"], e.get("date"), other.parent.name, e.get("cpu")):
                    print(f"[acc] {cell}: seed {seed} taken from {other.parent.name} (same "
                          f"inputs {digest})", flush=True)
    stored = {s: e["result"] for s, e in _stored_seeds(args, cell, hard, digest).items()}
    for seed, res in stored.items():  # pre-seed: evaluate_condensed reuses these, not retrains
        if seed not in in_work:
            write_json(seed_file(out, seed), {"inputs_key": key, "result": res})
    if stored:
        print(f"[acc] {cell}: seeds {sorted(stored)} reused from {_store(args) / cell}", flush=True)
    summary = evaluate_condensed(*inputs, out, ipc=ipc, first_seed=first)
    for res in summary["seeds"]:
        keep(res["seed"], res)


def export_cell(args, work: Path, row: str, ipc: int, bundle: Path) -> dict | None:
    """--export: the cell's set, val and teacher copied under `bundle` and one job per seed not
    yet stored (dc3ray.pipeline.bundle), for benchmarks/gpu_student.py (which runs evaluate's
    student loop in process, without Ray). Its inputs key is this machine's, so --import can
    tell the seeds belong to these very inputs. Returns the job, None when nothing is left."""
    from dc3ray.core.fingerprint import json_digest
    from dc3ray.pipeline.bundle import add_job
    c = _plan_cell(args, work, row, ipc)
    if c is None:
        print(f"[acc] {row} ipc {ipc}: not exported ({_not_measured(parse_row(row, _profile(args))[0], args)})")
        return None
    stored = _stored_seeds(args, c.cell, c.hard, json_digest(c.parts))
    seeds = [k for k in range(c.first, c.run_cfg.seeds) if k not in stored]
    if not seeds:
        print(f"[acc] {c.cell}: every seed is stored already; nothing to export", flush=True)
        return None
    job = add_job(bundle, c.cell, c.run_cfg, c.plan, seeds, c.cell, row=row, ipc=ipc)
    print(f"[acc] {c.cell}: seeds {seeds} exported to {bundle}", flush=True)
    return job


def _place_imported(path: str, c, out: Path) -> None:
    """--import: the seeds gpu_student.py trained for this cell written as its finished seed
    files, after checking they were trained on these inputs (the export's inputs key); which
    seeds count (none under an override) is bundle.imported_seeds's rule."""
    from dc3ray.pipeline.bundle import imported_seeds
    from dc3ray.pipeline.evaluate import seed_file
    for job in json.loads(Path(path).read_text())["jobs"]:
        if job["cell"] == c.cell and job["inputs_key"] != c.key:
            raise SystemExit(f"--import {path}: cell {c.cell} was trained on other inputs (key "
                             f"{job['inputs_key']}, here {c.key}): the set, val, teacher or eval "
                             "config changed since --export")
    for seed, res in imported_seeds(path, c.key, lambda m: print(m, flush=True)).items():
        f = seed_file(out, seed)
        if not f.is_file():
            write_json(f, {"inputs_key": c.key, "result": res})
            print(f"[acc] {c.cell}: seed {seed} imported from {path} ({res['device']})", flush=True)


def cell_name(row: str, ipc: int, profile: Profile | None = None) -> str:
    base, hard = parse_row(row, profile)
    return f"{base}{'_hard' if hard else ''}_ipc{ipc}"


def collect(args, rows: list[str], ipcs: list[int], previous: dict | None = None,
            only: set[tuple[str, int]] | None = None, drop_carried: bool = False) -> list[dict]:
    """One summary row per (row, ipc): measured figures, partial seeds, or why not measured.
    `only`: the (row, ipc) cells to report among rows x ipcs (default: all).

    Reads the committed seed store only (run_cell fills it as cells finish). A cell with no stored
    seed keeps its entry from `previous` (the last record) if that had figures under the same
    protocol (epochs, seeds, eval_every); with `drop_carried`, its figures are removed instead and
    its status says which record they came from.
    """
    import numpy as np
    profile = _profile(args)
    res = (previous or {}).get("result", {})
    same = all(res.get("protocol", {}).get(k) == getattr(args, k)
               for k in ("epochs", "seeds", "eval_every"))
    prev = {(c["row"], c["ipc"]): c for c in res.get("summary", [])} if same else {}
    out = []
    for row in rows:
        base, hard = parse_row(row, profile)
        for ipc in ipcs:
            if only is not None and (row, ipc) not in only:
                continue
            cell = {"row": row, "ipc": ipc, "labels": "hard" if hard else "KD"}
            reason = _not_measured(base, args)
            stored = _stored_seeds(args, cell_name(row, ipc, profile), hard)
            seeds = [e["result"] for _, e in sorted(stored.items())]
            old = prev.get((row, ipc))
            if seeds:
                fin = np.array([s["top1_final"] for s in seeds])
                best = np.array([s["top1_best"] for s in seeds])
                conds = [d.get("condense_s") for d in stored.values()]
                cell.update({
                    "final_top1": f"{fin.mean():.2f} +- {fin.std():.2f}",
                    "best_top1": f"{best.mean():.2f} +- {best.std():.2f}",
                    "final_mean": round(float(fin.mean()), 2), "final_std": round(float(fin.std()), 2),
                    "best_mean": round(float(best.mean()), 2), "best_std": round(float(best.std()), 2),
                    "seeds": len(seeds),
                    "condense_s": next((c for c in conds if c is not None), None),
                    "eval_s_per_seed": round(float(np.mean([s["wall_s"] for s in seeds])), 1),
                    "final_per_seed": [round(float(f), 2) for f in fin],
                    "cpu": ", ".join(sorted({e.get("cpu", "unknown") for e in stored.values()})),
                    "teacher": ", ".join(sorted({e["teacher"] for e in stored.values()
                                                 if e.get("teacher")})) or None,
                    "same_inputs_as": ", ".join(sorted({e["same_inputs_as"] for e in stored.values()
                                                        if e.get("same_inputs_as")})) or None,
                    "teacher_on_set": next((f"{o['teacher_top1']:.1f}% / {o['mean_p_true']:.3f}"
                                            for e in stored.values()
                                            for o in [e.get("teacher_on_set")] if o), None),
                    "status": "measured" if len(seeds) >= args.seeds
                    else f"partial: {len(seeds)}/{args.seeds} seeds"})
            elif old and "final_mean" in old and drop_carried:
                came = old.get("from_record") or (f"{previous.get('date')}, "
                                                  f"{previous.get('machine', {}).get('cpu')}")
                cell["status"] = (f"not measured: the figure carried from {came} was dropped "
                                  "(no stored seed; its inputs are lost)")
            elif old and "final_mean" in old:
                cell = dict(old)
                cell.setdefault("from_record", f"{previous.get('date')}, "
                                               f"{previous.get('machine', {}).get('cpu')}")
                if not hard or profile.rows[base].method not in MODEL_FREE:
                    cell.setdefault("teacher", "not recorded (the previous record's)")
            else:
                cell["status"] = f"not measured: {reason}" if reason else "not measured yet"
            out.append(cell)
    return out


def requested_cells(args, explicit: bool) -> list[tuple[str, int]]:
    """The cells this invocation runs, in run order (IPC by IPC): every --rows at every --ipc,
    or, for a profile with a default table not named by both flags, its cells among them."""
    table = _profile(args).cells
    return [(row, ipc) for ipc in args.ipc for row in args.rows
            if explicit or table is None or (row, ipc) in table]


def record_table(profile: Profile, requested: list, had: list[dict]) -> tuple:
    """(rows, ipcs, only) for collect: the record keeps every cell it had, so a run of one row
    re-collects the others too. Without a default table, every row named at every IPC named;
    with one, its cells and those run or recorded."""
    wanted = set(requested) | {(c["row"], c["ipc"]) for c in had} | set(profile.cells or ())
    named = {row for row, _ in wanted}
    rows = [r for r in profile.default_rows if r in named]
    rows += sorted(named - set(profile.default_rows))
    return rows, sorted({ipc for _, ipc in wanted}), None if profile.cells is None else wanted


def parser(profile: Profile, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=profile.train, help="ingested train shards")
    p.add_argument("--val", default=profile.val, help="ingested val shards (scoring)")
    p.add_argument("--teacher", default=profile.teacher, help=profile.teacher_help)
    p.add_argument("--work", default=profile.work, help="sets, features, evaluations (resumable)")
    if profile.reuse_features:
        p.add_argument("--features", help="an existing features folder for the model-based rows "
                       "(compute_features output, or a condense run's stages/features-<id>): "
                       "used if its features.json records this benchmark's embed/grad settings")
    p.add_argument("--rows", nargs="+", help=f"default: {profile.default_rows}")
    p.add_argument("--ipc", nargs="+", type=int)
    p.add_argument("--epochs", type=int, default=profile.eval.epochs)
    p.add_argument("--seeds", type=int, default=profile.eval.seeds)
    p.add_argument("--eval-every", type=int, default=profile.eval.eval_every)
    p.add_argument("--select-seed", type=int, default=profile.select_seed)
    p.add_argument("--comp-seed", type=int, default=0)
    p.add_argument("--diffusion-model", help="local InstructPix2Pix folder (dc3_diffusion row)")
    p.add_argument("--screen", type=int, metavar="N",
                   help="train only the first N seeds of each cell now (a screen; the record "
                        "shows the cell as partial until --seeds are stored)")
    p.add_argument("--seed-from", type=int, metavar="K",
                   help="train only seeds K.. of each cell now (up to --screen or --seeds): with "
                        "another process on --screen K in the same --work, two processes share "
                        "a cell's seeds; a later plain run collects them all")
    p.add_argument("--report-only", action="store_true", help="collect what exists, run nothing")
    p.add_argument("--drop-carried", action="store_true",
                   help="remove the figures of cells carried from an earlier record with no stored "
                        "seed (inputs lost) instead of carrying them on; their status says so")
    p.add_argument("--out-dir", help="where the JSON record goes (default benchmarks/results)")
    p.add_argument("--export", metavar="DIR",
                   help="build each requested cell's set and write DIR (the sets, val, teacher "
                        "and jobs.json: one job per seed not yet stored) for "
                        "benchmarks/gpu_student.py, which trains those seeds on a GPU machine "
                        "without Ray; nothing is trained here and the record is not touched")
    p.add_argument("--import", dest="import_seeds", metavar="FILE",
                   help="gpu_student.py's gpu_seeds.json: its seeds, checked against this "
                        "machine's inputs, become the cells' finished seeds (stored with the "
                        "device they ran on); the cells then run as usual, so a seed missing "
                        "from FILE is trained here")
    return p


def main(argv=None, profile: Profile | None = None, doc: str | None = __doc__) -> dict:
    profile = profile or CIFAR10
    args = parser(profile, doc).parse_args(argv)
    args.profile = profile
    explicit = args.rows is not None and args.ipc is not None
    args.rows = args.rows or list(profile.default_rows)
    args.ipc = args.ipc or list(profile.ipcs)
    for r in args.rows:
        parse_row(r, profile)
    requested = requested_cells(args, explicit)
    if not requested:
        raise SystemExit(f"no cell of the default table is among --rows {args.rows} x --ipc "
                         f"{args.ipc}; give both --rows and --ipc to run cells outside it")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if profile.prepare:
        profile.prepare(args, work)
    if getattr(args, "features", None) and not args.report_only:
        args.features = str(checked_features(args, args.features))
    load_before = load()
    if args.export:
        from dc3ray.pipeline.resources import configure_data_context, init_ray
        init_ray()
        configure_data_context()
        from dc3ray.pipeline.bundle import BUNDLE_JOBS
        bundle = Path(args.export)
        jobs = [j for row, ipc in requested
                if (j := export_cell(args, work, row, ipc, bundle)) is not None]
        print(f"[acc] {sum(len(j['seeds']) for j in jobs)} seeds of {len(jobs)} cells in "
              f"{bundle / BUNDLE_JOBS}; on the GPU machine: python benchmarks/gpu_student.py "
              f"{bundle}", flush=True)
        return {"export": str(bundle), "jobs": jobs}
    if not args.report_only:
        from dc3ray.pipeline.resources import configure_data_context, init_ray
        init_ray()
        configure_data_context()
        for row, ipc in requested:
            print(f"[acc] {row} ipc {ipc}", flush=True)
            run_cell(args, work, row, ipc)
    record = Path(args.out_dir or RESULTS) / f"{profile.record}.json"
    previous = json.loads(record.read_text()) if record.is_file() else None
    had = (previous or {}).get("result", {}).get("summary", [])
    rows, ipcs, only = record_table(profile, requested, had)
    summary = collect(args, rows, ipcs, previous, only, drop_carried=args.drop_carried)
    features_s = _timing(work, "features")
    # One record accumulates many invocations, but it has room for one command: say so, and
    # how each cell is reproduced.
    notes = ["The command above is the latest invocation only. A cell with a `cpu` was made by "
             "the same command with `--rows <row> --ipc <ipc>` (its seeds, with CPU, date and "
             f"teacher, are in results/{profile.store}/<cell>/); a cell with "
             "`from_record` was carried from an earlier record (its command is in the notes).",
             *profile.notes]
    result = {"summary": summary, "features_s": features_s, "notes": notes, "protocol": {
        "student": profile.eval.student, "epochs": args.epochs, "seeds": args.seeds,
        "eval_every": args.eval_every, "teacher": args.teacher, "train": args.train,
        "val": args.val, "select_seed": args.select_seed,
        **(profile.protocol(args) if profile.protocol else {}),
        "note": profile.protocol_note}}
    if profile.reference:
        result["reference"] = profile.reference
    for c in summary:
        print(json.dumps(c))
    save(profile.record, result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
