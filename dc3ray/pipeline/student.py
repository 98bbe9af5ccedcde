"""The student evaluation loop: one seed of `dc3ray evaluate` (see evaluate.py), Ray-free so
that it also runs in a process without Ray (raytrain imports Ray only on a Train worker).
"""
from __future__ import annotations

import time

import torch

from ..config import EvalConfig, from_dict
from ..core.models import build_model, load_model_checkpoint
from ..core.seeding import derive_seed
from ..core.training import (
    epoch_batches,
    lr_factor,
    set_lr,
    student_optimizer,
    train_one_epoch_ce,
    train_one_epoch_kd,
)
from .progress import report_epoch
from .raytrain import all_sum, logger, loop_inputs, prepare_model, seeded_generator, val_top1


def student_loop(config: dict) -> dict:
    """Train one student seed from scratch and score it on val: the body of a Ray Train run
    (evaluate._train_seed), or run in this process when config["in_process"] is set (fit with
    workers=0; benchmarks/gpu_student.py on a machine without Ray). Returns final and best
    top-1, best epoch, training seconds and the curve."""
    cfg = from_dict(EvalConfig, config["cfg"])
    seed = config["seed"]
    # The condensed set stays at its stored resolution: augment_batch crops, then resizes.
    io = loop_inputs(config, cfg.image_size, "condensed_path", "stored")
    rank, world, device, norm, mean, std = io.rank, io.world, io.device, io.norm, io.mean, io.std
    num_classes, x, y, x_val, y_val = io.num_classes, io.x, io.y, io.x_val, io.y_val
    teacher, teacher_size = None, None
    if not cfg.hard_labels:
        teacher, meta = load_model_checkpoint(config["teacher_ckpt"], device)
        teacher.requires_grad_(False)
        teacher_size = int(meta["image_size"])

    torch.manual_seed(derive_seed(seed, "student-init"))
    student = build_model(cfg.student, num_classes, cfg.image_size, **config["model_kwargs"])
    student = prepare_model(student, config, device)
    optimizer = student_optimizer(student, cfg)
    batch_size = config["batch_size"]
    history, best, best_epoch, t_start = [], -1.0, 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        set_lr(optimizer, cfg.lr * lr_factor(epoch, cfg.epochs))
        batches = epoch_batches(len(x), batch_size, seeded_generator(seed, "student-shuffle", epoch),
                                rank, world)
        g = seeded_generator(seed, "student-augment", epoch, rank)
        if cfg.hard_labels:
            stats = train_one_epoch_ce(student, x, y, optimizer, cfg, device, g, batches=batches,
                                       mean=mean, std=std)
        else:
            stats = train_one_epoch_kd(student, teacher, x, optimizer, cfg, device, g,
                                       batches=batches, mean=mean, std=std,
                                       teacher_size=teacher_size)
        done = epoch + 1
        if done % cfg.eval_every and done != cfg.epochs:
            continue
        top1 = val_top1(student, x_val, y_val, rank, world, device, norm)
        loss = all_sum([stats["loss"]], device)[0] / world
        if top1 > best:
            best, best_epoch = top1, done
        history.append([done, round(top1, 3), round(loss, 5)])
        if rank == 0:
            report_epoch(config.get("progress_file"), epoch=done, top1=round(top1, 2),
                         best=round(best, 2))
        if rank == 0 and (done % config["print_every"] == 0 or done == cfg.epochs):
            logger.info(f"[eval seed {seed}] epoch {done}/{cfg.epochs} loss {loss:.4f} "
                        f"top-1 {top1:.2f}% (best {best:.2f}% @ {best_epoch})")
    # No ray.train.report per evaluation: each report blocks until the controller polls it
    # (every ~2 s), which would dwarf a short epoch. The curve returns through return_value.
    return {"seed": seed, "top1_final": history[-1][1], "top1_best": round(best, 3),
            "best_epoch": best_epoch, "train_s": round(time.perf_counter() - t_start, 2),
            "history": history}
