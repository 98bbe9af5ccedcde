"""`dc3ray condense`: the whole DC3 job, stage by stage, cached and resumable.

ingest -> teacher (when needed) -> features -> per-class selection -> compensation ->
condensed set (Parquet + RDED ImageFolder) -> evaluation -> color report, manifest, MLflow.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path

from PIL import Image

from ..config import CondenseConfig, ConfigError, to_dict
from ..core import schema
from ..core.atomic import atomic_dir, write_json
from ..core.datasets import decode_images, is_shard_dir
from ..core.fingerprint import file_digest, files_digest, listing_digest
from ..core.shards import count_rows, read_shards, write_shards_atomic
from ..errors import UserError
from ..logs import log_file, run_logs
from .outputs import claim_output, output_lock
from .stages import StageCache, disk_full, disk_full_error

PACKAGES = ("dc3ray", "ray", "torch", "torchvision", "diffusers", "transformers",
            "apricot-select", "pyarrow", "mlflow", "clean-fid", "numpy", "scikit-learn")


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def _ingested(cache: StageCache, name: str, src: str, cfg: CondenseConfig,
              class_map: str | None) -> tuple[Path, str]:
    """Shards for `src` (ingested once, cached) and their fingerprint."""
    from .ingest import ingest
    p = Path(src)
    if is_shard_dir(p):
        info = p / schema.DATASET_INFO_FILE
        fp = json.loads(info.read_text())["fingerprint"] if info.is_file() else str(p.resolve())
        return p, fp
    icfg = dataclasses.replace(cfg.ingest, class_map=class_map)
    # Key on the class map's bytes, not its path: val's map is train's, inside `out`, so a path
    # would tie the key to the output folder; and an edited map must re-ingest.
    key = dataclasses.replace(icfg, class_map=file_digest(class_map)) if class_map else icfg
    # The listing (paths, sizes, mtimes) too: files added, removed or replaced re-ingest.
    d, info = cache.run(f"ingest_{name}", (str(p.resolve()), key, listing_digest(p)),
                        lambda tmp: _ingest_stage(p, tmp / "shards", icfg, ingest, cache.log))
    return d / "shards", info["fingerprint"]


def _ingest_stage(src, out, icfg, ingest, log) -> dict:
    report = ingest(src, out, icfg, log=log)
    fp = json.loads((out / schema.DATASET_INFO_FILE).read_text())["fingerprint"]
    return {"rows": report["num_rows"], "skipped": report["num_skipped"], "fingerprint": fp}


def _resolve_backbone(cfg, teacher_ckpt: str | None):
    if cfg.backbone in ("teacher", "convnet3") and cfg.model_path in (None, "auto"):
        if teacher_ckpt is None:
            raise ConfigError(f"{type(cfg).__name__}.backbone={cfg.backbone!r} with model_path=auto "
                             "needs a teacher: set teacher_path or let condense train one")
        return dataclasses.replace(cfg, model_path=str(teacher_ckpt))
    return cfg


def condense(cfg: CondenseConfig, log=print, *, need_teacher: bool = False) -> dict:
    """Run the whole job; returns the manifest dict (also written to `<out>/manifest.json`).

    `need_teacher`: train (or reuse) the teacher even when this job does not use it, for callers
    that score the condensed set later by KD (`dc3ray sweep`); manifest["teacher"] names it.
    """
    from .tracking import start_tracking, tracking_mode
    t_start = time.perf_counter()
    cfg.check_inputs()
    _preflight(cfg)  # bad paths and shards fail here, before anything is written or started
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # One driver per folder; a folder that is not this run's is refused before anything is
    # written to it; Ray's own output -> out/logs/ray.log (console with --verbose).
    with output_lock(out, "condense", log):
        claim_output(out, "run.json", {"data": str(Path(cfg.data).resolve())},
                     info={"name": cfg.name})
        with run_logs(log_file(out)):
            # The MLflow store is opened now, not first at the end of the run.
            mode = start_tracking(cfg.tracking, out, f"dc3ray-{cfg.name}", log)
            try:
                with tracking_mode(mode, log):
                    return _condense(cfg, out, log, need_teacher, t_start)
            except UserError:
                raise
            except Exception as e:  # a full disk outside the stage cache (final outputs)
                full = disk_full(e)
                if full is None:
                    raise
                raise disk_full_error(full, out, "condense") from e


def _condense(cfg: CondenseConfig, out: Path, log, need_teacher: bool, t_start: float) -> dict:
    """condense() once its inputs are checked and `out` is claimed: the stages in order."""
    from . import compensate as comp_stage
    from . import evaluate as evaluate_stage
    from . import features as features_stage
    from . import select as select_stage
    from .resources import configure_data_context, init_ray
    from .tracking import tracked_run

    init_ray(num_cpus=cfg.num_cpus)
    configure_data_context(show_progress=True)
    cache = StageCache(out, log)

    # 1. ingest train (and val with the train class map, so labels line up)
    train, train_fp = _ingested(cache, "train", cfg.data, cfg, cfg.class_map)
    _check_class_sizes(train, cfg)  # before the teacher and features, not at selection
    class_map_file = str(train / schema.CLASS_MAP_FILE) if (train / schema.CLASS_MAP_FILE).is_file() \
        else cfg.class_map
    val = val_fp = None
    if cfg.val:
        val, val_fp = _ingested(cache, "val", cfg.val, cfg, class_map_file)

    # 2. teacher: given, or trained once and cached (needed by the backbone and by KD)
    teacher_ckpt, teacher_id = _teacher(cache, cfg, train, train_fp, val, val_fp, need_teacher, log)

    embed_cfg = _resolve_backbone(cfg.embed, teacher_ckpt)
    grad_cfg = _resolve_backbone(cfg.grad, teacher_ckpt)
    bb_id = teacher_id if "teacher" in (cfg.embed.backbone, cfg.grad.backbone) else None

    # 3. features (embeddings for bins + gradient factors), only when the method needs them
    features = None
    if cfg.select.method not in ("random", "rded"):  # rded scores crops with the grad model
        d, _ = cache.run("features", (train_fp, _strip(embed_cfg), _strip(grad_cfg), bb_id,
                                      cfg.select.method, cfg.select.faithful),
                         lambda tmp: _features_stage(features_stage, train, embed_cfg, grad_cfg,
                                                     cfg.select, tmp))
        features = d / "features"

    # 4. selection -> selection-only condensed set
    scorer = _strip(grad_cfg) if cfg.select.method == "rded" else None
    d, sel_info = cache.run("select", (train_fp, cfg.select, bb_id,
                                       None if features is None else features.parent.name)
                            + ((scorer,) if scorer else ()),
                            lambda tmp: _select_stage(select_stage, train, features, cfg, tmp,
                                                      grad_cfg))
    selected = d / "subset"

    # 5. color compensation (a fidelity gate's classifier is part of the stage's identity)
    comp_cfg, gate_id = _resolve_gate(cfg.compensate, teacher_ckpt, teacher_id)
    d, comp_info = cache.run("compensate", (sel_info.get("digest"), cfg.compensate)
                             + ((gate_id,) if gate_id else ()),
                             lambda tmp: _compensate_stage(comp_stage, selected, comp_cfg, tmp))
    condensed = d / "condensed"

    # 6. final outputs: Parquet, RDED ImageFolder, sample grid, color report
    final = _write_outputs(out, condensed, selected, train, cfg, log)

    # 7. evaluation of DC3 (+ random and selection-only baselines) with the same protocol
    evals = _evaluate(cache, cfg, out, evaluate_stage, condensed, comp_info, selected, sel_info,
                      train, train_fp, val, val_fp, teacher_ckpt, teacher_id) if cfg.evaluate else {}

    manifest = _manifest(cfg, cache, final, evals, teacher_ckpt, train, val,
                         time.perf_counter() - t_start)
    write_json(out / "manifest.json", manifest)
    tracked_run(manifest, out, log)
    return manifest


def _teacher(cache: StageCache, cfg: CondenseConfig, train: Path, train_fp: str, val, val_fp,
             need_teacher: bool, log) -> tuple[Path | None, str | None]:
    """(checkpoint, identity) of the given teacher, or of one trained once and cached, or
    (None, None) when nothing needs one."""
    from . import teacher as teacher_stage
    needed = need_teacher or cfg.evaluate and not cfg.eval.hard_labels or \
        cfg.embed.backbone in ("teacher", "convnet3") or cfg.grad.backbone in ("teacher", "convnet3") \
        or cfg.compensate.gate_threshold > 0 and cfg.compensate.gate_model == "auto"
    if cfg.teacher_path:
        return Path(cfg.teacher_path), file_digest(cfg.teacher_path)
    if not needed:
        return None, None
    if not val:
        raise ConfigError("training a teacher needs val (a held-out split) or teacher_path")
    parts = (train_fp, val_fp, cfg.teacher)
    # Train in a stable `.work` folder (not swept like `.tmp-*`) so a killed run resumes
    # from the last epoch's checkpoint; the stage then commits a copy of the result.
    work = cache.path("teacher", *parts).with_suffix(".work")
    d, _ = cache.run("teacher", parts,
                     lambda tmp: _teacher_stage(teacher_stage, cfg, train, val, work, tmp, log))
    # The stage holds its own copy now: the checkpoints would only duplicate it on disk.
    shutil.rmtree(work, ignore_errors=True)
    return d / "teacher" / "teacher.pt", f"{train_fp}:{d.name}"


def _manifest(cfg: CondenseConfig, cache: StageCache, final: dict, evals: dict, teacher_ckpt,
              train: Path, val: Path | None, seconds: float) -> dict:
    """manifest.json: resolved config, versions, machine, seeds, stages, images, color, accuracy."""
    return {
        "config": to_dict(cfg),
        "versions": package_versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "seeds": {"select": cfg.select.seed, "compensate": cfg.compensate.seed,
                  "eval_seeds": list(range(cfg.eval.seeds)), "teacher": cfg.teacher.seed},
        "stages": cache.summaries,
        "counts": final["counts"],
        "images": final["images"],
        "color": final["color"],
        "eval": {k: {m: v.get(m) for m in ("final_mean", "final_std", "best_mean", "best_std")}
                 for k, v in evals.items()},
        "teacher": None if teacher_ckpt is None else str(teacher_ckpt),
        # Ingested shard folders (cached stages), for callers that evaluate the set later.
        "shards": {"train": str(train), "val": None if val is None else str(val)},
        "total_seconds": round(seconds, 2),
    }


def _evaluate(cache: StageCache, cfg: CondenseConfig, out: Path, evaluate_stage, condensed: Path,
              comp_info: dict, selected: Path, sel_info: dict, train: Path, train_fp: str,
              val: Path, val_fp: str, teacher_ckpt, teacher_id) -> dict:
    """Score the condensed set, the selection alone and a random set with one protocol; each
    evaluation is a cached stage whose MLflow run goes to out's store (not the stage's temp
    folder, which is renamed when the stage commits)."""
    conditions = [("dc3", condensed, comp_info.get("digest"))]
    if cfg.compare_selection_only and cfg.compensate.edits:
        conditions.append(("selection_only", selected, sel_info.get("digest")))
    if cfg.compare_random and cfg.select.method != "random":
        d, rinfo = cache.run("random_subset", (train_fp, cfg.select.ipc, cfg.select.seed),
                             lambda tmp: _random_stage(train, cfg, tmp))
        conditions.append(("random", d / "subset", rinfo.get("digest")))
    evals = {}
    for label, path, digest in conditions:
        d, _ = cache.run(f"eval_{label}", (digest, val_fp, teacher_id, cfg.eval),
                         lambda tmp, path=path: evaluate_stage.evaluate_condensed(
                             cfg.eval, str(path), str(val), None if teacher_ckpt is None
                             else str(teacher_ckpt), str(tmp / "eval"), ipc=cfg.select.ipc,
                             tracking_out=out, log=cache.log))
        evals[label] = json.loads((d / "eval" / "eval.json").read_text())
    write_json(out / "eval.json", evals)
    from ..core.charts import condition_names, plot_accuracy
    means = {k: {m: v[m] for m in ("final_mean", "final_std", "best_mean", "best_std")}
             for k, v in evals.items()}
    plot_accuracy(means, out / "accuracy.png",
                  f"{cfg.name}, IPC {cfg.select.ipc}: {cfg.eval.student}, {cfg.eval.epochs} epochs, "
                  f"{cfg.eval.seeds} seed{'s' if cfg.eval.seeds > 1 else ''}",
                  names=condition_names(cfg.compensate.edits))
    return evals


def _strip(cfg):
    """Settings that do not change the output (batching, pool size) stay out of the cache key."""
    drop = {"batch_size", "num_actors", "num_cpus_per_actor"}
    return {k: v for k, v in to_dict(cfg).items() if k not in drop}


def _preflight(cfg: CondenseConfig) -> None:
    """Raise ConfigError (or ShardError) naming the setting for any input that cannot work:
    a missing data/val/class_map/teacher/model path, or a shard folder with bad columns."""
    from ..core.editing import resolve_model_path
    from ..core.shards import check_shards
    for key in ("data", "val", "class_map", "teacher_path"):
        p = getattr(cfg, key)
        if p and not Path(p).expanduser().exists():
            raise ConfigError(f"{key}={p} does not exist; fix the path")
        if key in ("data", "val") and p and is_shard_dir(p):
            check_shards(p)
    for section in ("embed", "grad"):
        path = getattr(cfg, section).model_path
        if path and path != "auto" and not Path(path).expanduser().exists():
            raise ConfigError(f"{section}.model_path={path} does not exist; pass a local "
                              "checkpoint or folder (nothing is downloaded)")
    gate_model = cfg.compensate.gate_model
    if cfg.compensate.gate_threshold > 0 and gate_model != "auto" and \
            not Path(gate_model).expanduser().is_file():
        raise ConfigError(f"compensate.gate_model={gate_model} is not a file; pass a classifier "
                          "checkpoint, or auto for the run's teacher")
    if cfg.compensate.compensator in ("instructpix2pix", "img2img"):
        try:
            resolve_model_path(cfg.compensate.model_path)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from None


def _check_class_sizes(train: Path, cfg: CondenseConfig) -> None:
    """ConfigError naming the first class with fewer than select.ipc images (unless take_all)."""
    if cfg.select.take_all:
        return
    names = read_shards(train, columns=[schema.CLASS_NAME]).column(schema.CLASS_NAME).to_pylist()
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    small = sorted((c, n) for n, c in counts.items() if c < cfg.select.ipc)
    if small:
        c, n = small[0]
        raise ConfigError(f"class {n!r} has {c} images but select.ipc={cfg.select.ipc} "
                          f"({len(small)} class(es) too small); lower select.ipc or set "
                          "select.take_all=true")


def _teacher_stage(teacher_stage, cfg: CondenseConfig, train: Path, val: Path, work: Path,
                   tmp: Path, log=print) -> dict:
    info = teacher_stage.train_teacher(cfg.teacher, str(train), str(val), str(work), log=log)
    (tmp / "teacher").mkdir()
    for name in (teacher_stage.TEACHER_FILE, teacher_stage.TEACHER_JSON):
        shutil.copy2(work / name, tmp / "teacher" / name)
    return {"val_top1": info["val_top1"], "epochs": info["epochs_done"], "wall_s": info["wall_s"]}


def _features_stage(features_stage, train, embed_cfg, grad_cfg, sel, tmp: Path) -> dict:
    path = features_stage.compute_features(
        str(train), embed_cfg, grad_cfg, str(tmp / "features"),
        need_embedding=sel.method in features_stage.EMBEDDING_METHODS,
        need_gradients=sel.method in features_stage.GRADIENT_METHODS, faithful=sel.faithful)
    return {"rows": count_rows(path)}


def _select_stage(select_stage, train: Path, features: Path | None, cfg: CondenseConfig,
                  tmp: Path, grad_cfg=None) -> dict:
    if cfg.select.method == "random":
        return _random_stage(train, cfg, tmp)
    if cfg.select.method == "rded":
        select_stage.rded_subset(str(train), grad_cfg, cfg.select, str(tmp / "subset"),
                                 cfg.ingest.shard_rows)
        rows = read_shards(tmp / "subset", columns=[schema.KEY]).num_rows
        return {"rows": rows, "digest": files_digest(tmp / "subset")}
    manifest = select_stage.select_per_class(str(features), cfg.select, str(tmp / "manifest"))
    select_stage.materialise_subset(str(train), str(manifest), str(tmp / "subset"),
                                    cfg.ingest.shard_rows)
    rows = read_shards(tmp / "subset", columns=[schema.KEY]).num_rows
    return {"rows": rows, "digest": files_digest(tmp / "subset")}


def _random_stage(train: Path, cfg: CondenseConfig, tmp: Path) -> dict:
    from ..core.selection import random_subset
    table = random_subset(read_shards(train), cfg.select.ipc, cfg.select.seed,
                          take_all=cfg.select.take_all)
    extra = {schema.CLASS_MAP_FILE: json.loads((train / schema.CLASS_MAP_FILE).read_text())}
    write_shards_atomic(table, tmp / "subset", cfg.ingest.shard_rows, extra_files=extra)
    return {"rows": table.num_rows, "digest": files_digest(tmp / "subset")}


def _resolve_gate(comp, teacher_ckpt, teacher_id) -> tuple:
    """(compensate config with gate_model 'auto' made the teacher's checkpoint, identity of the
    gate's classifier or None when the gate is off)."""
    if comp.gate_threshold <= 0 or not comp.edits:
        return comp, None
    if comp.gate_model == "auto":
        if teacher_ckpt is None:
            raise ConfigError("compensate.gate_model=auto needs a teacher: set teacher_path or "
                              "let condense train one")
        return dataclasses.replace(comp, gate_model=str(teacher_ckpt)), teacher_id
    return comp, file_digest(comp.gate_model)


def _compensate_stage(comp_stage, selected: Path, comp_cfg, tmp: Path) -> dict:
    res = comp_stage.compensate_dataset(str(selected), comp_cfg, str(tmp / "condensed"))
    rows = read_shards(tmp / "condensed", columns=[schema.KEY]).num_rows
    # The edit records' summary (acceptance rate etc.) goes to the manifest and MLflow.
    keep = ("accepted", "kept_source", "acceptance_rate", "mean_strength", "mean_tries")
    return {"rows": rows, "digest": files_digest(tmp / "condensed"), "resized": res["resized"],
            **{k: res[k] for k in keep}}


def _write_outputs(out: Path, condensed: Path, selected: Path, train: Path,
                   cfg: CondenseConfig, log) -> dict:
    """Copy the condensed set to `out`, write the RDED ImageFolder, sample grid and color plot."""
    from ..core import color
    from ..core.grid import save_sample_grid
    table = read_shards(condensed, required=None)
    with atomic_dir(out / "condensed", overwrite=True) as tmp:
        for f in sorted(condensed.iterdir()):
            shutil.copy2(f, tmp / f.name)
    # RDED layout: one folder per class index (00000, 00001, ...), images inside.
    keys = table.column(schema.KEY).to_pylist()
    labels = table.column(schema.LABEL).to_pylist()
    blobs = table.column(schema.IMAGE).to_pylist()
    sources = table.column("source_key").to_pylist() if "source_key" in table.column_names else keys
    per_class: dict[int, int] = {}
    images = []
    with atomic_dir(out / "images", overwrite=True) as tmp:
        for key, label, blob, src in zip(keys, labels, blobs, sources):
            i = per_class.get(label, 0)
            per_class[label] = i + 1
            ext = ".png" if blob[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
            rel = f"{label:05d}/{i:04d}{ext}"
            (tmp / f"{label:05d}").mkdir(exist_ok=True)
            (tmp / rel).write_bytes(blob)
            images.append({"file": f"images/{rel}", "key": key, "source_key": src, "label": label})
    prompts = {}
    if "warm_prompt" in table.column_names:
        for k, w, c in zip(keys, table.column("warm_prompt").to_pylist(),
                           table.column("cold_prompt").to_pylist()):
            prompts[k] = [w, c]
    for im in images:
        if im["key"] in prompts:
            im["prompts"] = prompts[im["key"]]
    # The compensation record of each image (pipeline.compensate.COMPENSATED_SCHEMA).
    for col in ("variant", "strength", "tries", "outcome"):
        if col in table.column_names:
            for im, v in zip(images, table.column(col).to_pylist()):
                im[col] = v
    size = cfg.eval.image_size
    comp_arr, comp_labels, _ = decode_images(table, size)
    sel_table = read_shards(selected)
    sel_arr, sel_labels, sel_keys = decode_images(sel_table, size)
    save_sample_grid(comp_arr, comp_labels, out / "samples.png", per_row=min(cfg.select.ipc, 10))
    _save_compare(sel_arr, sel_labels, sel_keys, comp_arr, table, out / "samples_compare.png")
    sets = {"selected": sel_arr, "condensed": comp_arr}
    report = color.color_report(sets)
    color.plot_color_kde(sets, out / "colors.png")
    write_json(out / "colors.json", report)
    counts = {str(k): v for k, v in sorted(per_class.items())}
    log(f"[outputs] {len(images)} images in {len(counts)} classes -> {out}/condensed, {out}/images")
    return {"counts": counts, "images": images, "color": report}


def _save_compare(sel_arr, sel_labels, sel_keys, comp_arr, comp_table, path: Path) -> None:
    """samples_compare.png: each selected image beside its compensated version, a row per class."""
    from ..core.grid import compare_grid
    sources = comp_table.column("source_key").to_pylist() if "source_key" in \
        comp_table.column_names else comp_table.column(schema.KEY).to_pylist()
    variants = comp_table.column("variant").to_pylist() if "variant" in \
        comp_table.column_names else ["compensated"] * comp_table.num_rows
    edit = {s: i for i, (s, v) in enumerate(zip(sources, variants)) if v != "original"}
    edit = edit or {s: i for i, s in enumerate(sources)}  # compensator none: the same images
    rows = [i for i, k in enumerate(sel_keys) if k in edit]
    if rows:
        after = comp_arr[[edit[sel_keys[i]] for i in rows]]
        grid = Image.fromarray(compare_grid(sel_arr[rows], after, sel_labels[rows]))
        zoom = max(1, 96 // sel_arr.shape[1])  # 32 px CIFAR images are too small to judge
        grid.resize((grid.width * zoom, grid.height * zoom), Image.NEAREST).save(path)


def condense_command(cfg: CondenseConfig, log=print) -> int:
    """`dc3ray condense`: run the job and print where things went and the accuracy table."""
    from .demo import format_table
    manifest = condense(cfg, log=log)
    log(f"condensed set: {cfg.out}/condensed (Parquet), {cfg.out}/images (ImageFolder); "
        f"manifest: {cfg.out}/manifest.json")
    if manifest.get("eval"):
        log(format_table(manifest["eval"], ipc=cfg.select.ipc, seeds=cfg.eval.seeds,
                         epochs=cfg.eval.epochs, compensated=cfg.compensate.edits))
    return 0
