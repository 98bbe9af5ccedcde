"""Accuracy table on Imagenette (issue 23): condense from train, score on val, as
accuracy_cifar10.py does (its machinery, with this dataset's profile).

The settings are configs/imagenette.yaml's, read with dc3ray's config loader:

  teacher    the preset's imagenet_subset teacher: EfficientNet-Lite0's ImageNet head restricted
             to the 10 classes at 160 px, no training. Built once into <work>/teacher/teacher.pt
             (one val pass, ~1-1.5 min on 2 cores) unless --teacher names one (a teacher.pt, or
             a condense run's stages/teacher-<id> folder).
  features   the preset's embed and grad sections (EfficientNet-Lite0 at 224 px, grad.head =
             imagenet, one forward shared by bins and gradients), computed once into
             <work>/features (1,133 s for the 8,529 train images on the loaded 2-core sandbox),
             or taken from --features DIR when its features.json records the same settings
             and its images are --train's (refused otherwise, naming what differs).
  eval       the preset's eval section: ResNet-18 student at 128 px, batch min(IPC x 10, 100),
             300 epochs, eval_every 25, 3 seeds; KD against the subset teacher.
  select     the preset's select.seed (42) unless --select-seed.

Cells (issue 23): random, herding, dc3_select, dc3_classical at IPC 1 and 10 with KD;
random/hard and dc3_select/hard at IPC 10; random and dc3_select at IPC 50. Without both
--rows and --ipc only these run (--ipc 1 alone: the IPC 1 cells); with both, every row at every
IPC. The record (results/accuracy_imagenette.json) lists every cell of that table, measured or
not, plus any other cell measured; seeds are kept in results/accuracy_imagenette_seeds/ as
accuracy_cifar10.py keeps its own. The paper's ResNet-18 figures (224 px, GPU) travel with the
record as a reference, marked as not measured here.

The data is ingested once with the class table (its ImageNet indices are what the subset teacher
and grad.head=imagenet need):

  D=../shared/data/imagenette
  dc3ray ingest $D/train runs/imagenette/train --class-map $D/classes.tsv
  dc3ray ingest $D/val runs/imagenette/val --class-map $D/classes.tsv
  python benchmarks/accuracy_imagenette.py --rows random herding dc3_select dc3_classical --ipc 1
  python benchmarks/accuracy_imagenette.py --report-only   # re-collect

CPU cost (docs/FINDINGS.md, "The ImageNet path"), measured on idle 2-core sandboxes: a ResNet-18
seed at IPC 1 took 187-207 s (Intel Xeon) and 255-292 s (AMD EPYC); at IPC 10, 29-34 min with
KD (AMD, 5.8-7.0 s an epoch of 100 images) and 18 min with hard labels (no teacher pass). An
epoch grows with the set, so an IPC 50 seed would be ~3 h here: a GPU job. A seed takes both
cores, so run one invocation at a time (two together ran 5x slower an epoch), cell group by cell
group; --screen 1 first gives every cell one seed early.

On a GPU machine, with or without Ray there: --export DIR builds the cells' sets here and writes
them, val, the teacher and one job per missing seed to DIR; benchmarks/gpu_student.py DIR trains
the seeds there with evaluate's own student loop, several at once; --import its gpu_seeds.json
here checks each cell's inputs and stores the seeds with the GPU named as their machine. The IPC
50 cells ran so on an NVIDIA H200 on 2026-12-04 (370-374 s a seed, twelve students sharing it):

  python benchmarks/accuracy_imagenette.py ... --ipc 50 --rows random dc3_select --export B
  python3 benchmarks/gpu_student.py B --out $OUT --parallel 6           # on the GPU machine
  python benchmarks/accuracy_imagenette.py ... --ipc 50 --rows random dc3_select --import \
      $OUT/gpu_seeds.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_cifar10 as acc  # noqa: E402

from dc3ray.config import CondenseConfig, load_config  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "configs" / "imagenette.yaml"
CFG = load_config(CondenseConfig, PRESET)
TEACHER_FILE = "teacher.pt"

KD_ROWS = ("random", "herding", "dc3_select", "dc3_classical")
CELLS = (*((r, ipc) for r in KD_ROWS for ipc in (1, 10)),
         ("random/hard", 10), ("dc3_select/hard", 10), ("random", 50), ("dc3_select", 50))
# CIFAR-10's rows that read only the base features (its ablations are CIFAR-10 questions).
ROWS = {k: acc.ROWS[k] for k in ("random", "herding", "kcenter", "facility", "dc3_select",
                                 "dc3_classical", "random_classical", "dc3_diffusion")}
PAPER = "paper, not measured here"
REFERENCE = {
    "note": PAPER,
    "source": "the DC3 paper's ResNet-18 figures on Imagenette (224 px students on GPU; the "
              "table above trains at 128 px on CPU)",
    "rows": [{"row": "DC3 (paper)", "ipc": ipc, "top1": top1, "status": PAPER}
             for ipc, top1 in ((1, 37.6), (10, 84.8), (50, 89.8))],
}


def _teacher_file(given: str) -> Path:
    """A teacher.pt, or a folder holding one (directly or in teacher/, a condense stage's)."""
    p = Path(given)
    for f in (p, p / TEACHER_FILE, p / "teacher" / TEACHER_FILE):
        if f.is_file():
            return f
    raise SystemExit(f"--teacher {given}: no {TEACHER_FILE} there")


def prepare(args, work: Path) -> None:
    """--teacher checked (the preset's kind and size), or the preset's built under --work."""
    if args.teacher is None:
        out = work / "teacher"
        args.teacher = str(out / TEACHER_FILE)
        if not args.report_only:
            from dc3ray.pipeline.teacher import build_subset_teacher
            build_subset_teacher(CFG.teacher, args.train, args.val, out)  # reuses a built one
        return
    args.teacher = str(_teacher_file(args.teacher))
    if args.report_only:
        return
    from dc3ray.core.models import load_model_checkpoint
    meta = load_model_checkpoint(args.teacher)[1]
    want = ("imagenet_subset", CFG.teacher.image_size)
    if (meta["arch"], meta["image_size"]) != want:
        raise SystemExit(f"--teacher {args.teacher} is {meta['arch']} at {meta['image_size']} px; "
                         f"this benchmark's KD teacher is {want[0]} at {want[1]} px "
                         f"({PRESET.name}); drop --teacher to build it")


def protocol(args) -> dict:
    e, g = CFG.embed, CFG.grad
    return {"image_size": CFG.eval.image_size, "batch_rule": CFG.eval.batch_rule,
            "teacher_kind": f"{CFG.teacher.kind} ({CFG.teacher.imagenet_arch}, "
                            f"{CFG.teacher.image_size} px)",
            "features": args.features if getattr(args, "features", None) else
            f"embed {e.backbone} {e.image_size} px, grad {g.backbone} {g.image_size} px "
            f"head {g.head}", "preset": f"configs/{PRESET.name}"}


IMAGENETTE = acc.Profile(
    record="accuracy_imagenette", train="runs/imagenette/train", val="runs/imagenette/val",
    work="runs/imagenette/acc", teacher=None,
    teacher_help="the KD teacher: a teacher.pt (or a folder with teacher.pt or teacher/"
                 "teacher.pt, e.g. a condense run's stages/teacher-<id>) of the preset's kind; "
                 "default: the preset's imagenet_subset teacher, built once into "
                 "<work>/teacher/teacher.pt (no training, one val pass)",
    rows=ROWS, default_rows=[*KD_ROWS, "random/hard", "dc3_select/hard"], ipcs=[1, 10, 50],
    features={acc.BASE: ({}, {}, False)},
    base_features=lambda teacher: (CFG.embed, CFG.grad),  # the preset's, not the teacher's
    eval=CFG.eval, select_seed=CFG.select.seed, cells=CELLS, prepare=prepare,
    reuse_features=True, protocol=protocol, reference=REFERENCE,
    protocol_note="condense_s excludes the one-off feature pass (features_s: EfficientNet-Lite0 "
                  "at 224 px, bins and gradients from one forward), shared by every model-based "
                  "row; the teacher needs no training (EfficientNet-Lite0's ImageNet weights)",
    notes=("`reference` holds the paper's figures, not measured here: other student size "
           "(224 px) and hardware (GPU).",
           "A cell whose `cpu` names a GPU (the IPC 50 cells) was trained on that GPU machine by "
           "benchmarks/gpu_student.py from this benchmark's --export, then --import'ed: the "
           "same student loop and settings, another device, so its seeds are not bit-comparable "
           "with the CPU cells'. The same cells at 224 px: accuracy_imagenette_224px.",))


def main(argv=None) -> dict:
    return acc.main(argv, IMAGENETTE, __doc__)


if __name__ == "__main__":
    main()
