"""How sure the teacher is of each condensed set's own labels: top-1 and mean p(true class).

KD trains the student on the teacher's softmax over each (augmented) image, so a set whose images
the teacher finds less clearly of their class gives weaker targets. This is how the accuracy
notes compare a set before and after color compensation (no augmentation here: the raw images).

    python benchmarks/teacher_on_sets.py --teacher runs/bench/teacher_c3/teacher.pt \
        runs/bench/acc/sets/dc3_ipc10 runs/bench/acc/sets/dc3_ipc10+classical
"""
from __future__ import annotations

import argparse

import torch

from dc3ray.core import datasets
from dc3ray.core.models import load_model_checkpoint
from dc3ray.core.training import class_confidence, norm_stats


def teacher_on_set(teacher: torch.nn.Module, path: str, norm: str = "cifar",
                   image_size: int | None = None, batch_size: int = 256) -> dict:
    """{'set', 'images', 'teacher_top1' (%), 'mean_p_true'} for one condensed shard folder."""
    images, labels, _ = datasets.decode_images(datasets.load_table(path), image_size)
    try:
        res = class_confidence(teacher, images, labels, "cpu", batch_size, *norm_stats(norm))
    except ValueError as e:
        raise SystemExit(f"{path}: {e}") from None
    return {"set": str(path), "images": int(len(labels)),
            "teacher_top1": round(res["top1"], 2), "mean_p_true": round(res["mean_p_true"], 4)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", help="condensed shard folders (e.g. runs/bench/acc/sets/*)")
    p.add_argument("--teacher", required=True, help="checkpoint from `dc3ray teacher`")
    p.add_argument("--norm", default="cifar", help="normalisation the teacher was trained with")
    args = p.parse_args(argv)
    teacher, meta = load_model_checkpoint(args.teacher, "cpu")
    rows = [teacher_on_set(teacher, s, args.norm, meta["image_size"]) for s in args.sets]
    for r in rows:
        print(f"{r['set']}: {r['images']} images, teacher top-1 {r['teacher_top1']:.1f}%, "
              f"mean p(true class) {r['mean_p_true']:.3f}")
    return rows


if __name__ == "__main__":
    main()
