"""Colour compensation of selected images (DESIGN.md step 3): warm edit + cold edit, blended.

Every random choice is seeded from (run seed, image key, purpose) through dc3ray.core.seeding:
the prompt pair ("prompts"), the blend mask ("blend") and the diffusion noise ("warm", "cold").
So what is drawn for an image never depends on its batch, its position or the worker: a rerun
gives the same bytes, and a batch of 8 gives what 8 single calls give (exactly for "classical";
for diffusion up to the float rounding of batched kernels, see _DiffusionBase).

Control (issue 26), shared by every compensator through `compensate_images`:
- strength (cfg.edit_strength(), recorded per image): classical scales the OKLab shift
  (ColorShift.scaled), instructpix2pix mixes each edit toward the source in pixel space
  ((1-s) source + s edit, before the warm/cold blend), img2img is the pipeline's noise strength.
- fidelity gate (cfg.gate_threshold > 0): a classifier's p(true class) of each edit must reach
  gate_threshold x the source's; a rejected edit is retried with the attempt's next word pair
  (choose_words(..., attempt=k)) at strength x gate_backoff, and after gate_tries edits the
  source is kept. The classifier comes in as a `score(images, labels)` callable.
- word assignment: random per key (choose_words) or set-level "diverse" (`assign_diverse`).

Compensators (all take uint8 (N, H, W, 3), or a list of uint8 (H, W, 3) of any sizes, and
return one record per image, at that image's input size):
- PassThroughCompensator ("none"): images unchanged.
- ClassicalCompensator ("classical"): deterministic OKLab shifts (dc3ray.core.color).
- DiffusionCompensator ("instructpix2pix"): StableDiffusionInstructPix2PixPipeline.
- Img2ImgCompensator ("img2img"): StableDiffusionImg2ImgPipeline at the edit strength.
diffusers and torch are imported lazily, only by the diffusion compensators.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image

from dc3ray.config import CompensateConfig
from dc3ray.core import color
from dc3ray.core.diffusers_io import load_pipeline, resolve_pipeline
from dc3ray.core.seeding import derive_seed, rng_for


def choose_words(warm: Sequence[str], cold: Sequence[str], seed: int, key: str,
                 attempt: int = 0) -> tuple[str, str]:
    """(warm word, cold word), each drawn uniformly from its list by rng_for(seed, key, "prompts")
    for attempt 0, and by rng_for(seed, key, "prompts", attempt) for the gate's retries."""
    rng = rng_for(seed, key, "prompts") if attempt == 0 else rng_for(seed, key, "prompts", attempt)
    return warm[int(rng.integers(len(warm)))], cold[int(rng.integers(len(cold)))]


def fill_template(template: str, word: str) -> str:
    """The template with '{p}' replaced by `word` (other braces are left alone)."""
    return template.replace("{p}", word)


def prompt_pair(template: str, warm: Sequence[str], cold: Sequence[str], seed: int, key: str) -> tuple[str, str]:
    """(warm prompt, cold prompt) for image `key`, words drawn as in `choose_words`."""
    w, c = choose_words(warm, cold, seed, key)
    return fill_template(template, w), fill_template(template, c)


def scaled_ramp(ramp: int, h: int, w: int, ref_size: int) -> int:
    """cfg.ramp is in pixels at cfg.size (the diffusion working size, as in the reference: 20 px
    at 256); at another resolution it scales with the shorter side so the geometry is the same."""
    return int(ramp * min(h, w) / ref_size + 0.5)


def blend_pair(warm: np.ndarray, cold: np.ndarray, cfg: CompensateConfig, key: str) -> np.ndarray:
    """Blend two uint8 (H, W, 3) edits of image `key` with the cfg.blend mask seeded by (seed, key, "blend")."""
    h, w = warm.shape[:2]
    mask = color.blend_mask(cfg.blend, h, w, rng_for(cfg.seed, key, "blend"),
                            ramp=scaled_ramp(cfg.ramp, h, w, cfg.size), cell=cfg.cell)
    return color.blend(warm, cold, mask)


def resize_rgb(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic resize of uint8 (H, W, 3) to (h, w, 3) (PIL, antialiased when shrinking)."""
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.uint8)


def _as_images(images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str]) -> list[np.ndarray]:
    """Validate uint8 (N, H, W, 3) or a list of uint8 (H, W, 3) of any sizes; one key per image."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or a list of (H, W, 3), got shape {images.shape}")
    ims = list(images)
    for i, im in enumerate(ims):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
            raise ValueError(f"images[{i}] must be uint8 (H, W, 3) (or pass uint8 (N, H, W, 3)), got "
                             f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}")
    if len(keys) != len(ims):
        raise ValueError(f"got {len(ims)} images but {len(keys)} keys; pass one key per image")
    return ims


ACCEPTED = "accepted"
KEPT_SOURCE = "kept_source"

# score(images, labels) -> float (N,) p(true class): the fidelity gate's classifier.
Score = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


class Compensator(Protocol):
    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str],
                   labels: Sequence[int] | None = None,
                   words: Sequence[tuple[str, str]] | None = None,
                   score: Score | None = None) -> list[dict]:
        """uint8 (N, H, W, 3) (or N uint8 (H, W, 3) of any sizes) + N keys -> N dicts, in input
        order (see `compensate_images`): image (uint8 (H, W, 3) at that input's size),
        warm_prompt, cold_prompt, seed (the run seed; with the key it reproduces every random
        choice), strength, tries, outcome, p_source, p_edit."""
        ...


class Editor(Protocol):
    def can_edit(self, strength: float) -> bool:
        """Whether an edit at `strength` changes anything (False: the source is kept)."""
        ...

    def edit(self, images: list[np.ndarray], keys: list[str], words: list[tuple[str, str]],
             strengths: list[float], attempt: int) -> list[np.ndarray]:
        """One blended warm/cold edit per image (uint8, at its input size), image i with
        words[i] at strengths[i]; `attempt` seeds the diffusion noise of the gate's retries."""
        ...


def compensate_images(editor: Editor, images: np.ndarray | Sequence[np.ndarray],
                      keys: Sequence[str], cfg: CompensateConfig, strength: float, *,
                      labels: Sequence[int] | None = None,
                      words: Sequence[tuple[str, str]] | None = None,
                      score: Score | None = None) -> list[dict]:
    """Edit each image at `strength`, behind the fidelity gate when cfg.gate_threshold > 0.

    words: N (warm, cold) pairs of attempt 0 (default: choose_words per key). With the gate,
    `score(images, labels)` gives p(true class) of the sources once and of every edit; an edit
    with p_edit < gate_threshold x p_source is retried (attempt k: choose_words(..., attempt=k),
    strength x gate_backoff) until gate_tries edits were made, then the source is kept. An image
    whose strength edits nothing (editor.can_edit false: 0, or below one img2img step) keeps its
    source at once.

    Returns N dicts in input order: image (the accepted edit, or the source array itself),
    warm_prompt / cold_prompt / strength of the last pair tried (attempt 0's when none was),
    seed, tries (edits made), outcome ("accepted" or "kept_source"), p_source and p_edit (the
    gate's scores of the source and the last edit; NaN without the gate or without an edit).
    """
    ims = _as_images(images, keys)
    keys = [str(k) for k in keys]
    n = len(ims)
    gate = cfg.gate_threshold > 0
    if gate and score is None:
        raise ValueError(f"compensate.gate_threshold={cfg.gate_threshold} needs a classifier: "
                         "pass score (the stage loads compensate.gate_model)")
    if gate and (labels is None or len(labels) != n):
        raise ValueError(f"the fidelity gate needs one label per image, got "
                         f"{None if labels is None else len(labels)} for {n} images")
    labels_arr = None if labels is None else np.asarray(labels, dtype=np.int64)
    cur = list(words) if words is not None else \
        [choose_words(cfg.warm, cfg.cold, cfg.seed, k) for k in keys]
    if len(cur) != n:
        raise ValueError(f"got {len(cur)} word pairs for {n} images; pass one pair per image")
    rec = [{"image": ims[i], "words": cur[i], "strength": float(strength), "tries": 0,
            "outcome": KEPT_SOURCE, "p_source": math.nan, "p_edit": math.nan} for i in range(n)]
    pending = [i for i in range(n) if editor.can_edit(strength)]
    if gate and pending:
        p_src = np.asarray(score([ims[i] for i in pending], labels_arr[pending]), dtype=np.float64)
        for i, p in zip(pending, p_src):
            rec[i]["p_source"] = float(p)
    tries = cfg.gate_tries if gate else 1
    for attempt in range(tries):
        if attempt:  # a retry: the attempt's word pair, a lower strength
            retry = []
            for i in pending:
                s = rec[i]["strength"] * cfg.gate_backoff
                if editor.can_edit(s):
                    rec[i]["words"] = choose_words(cfg.warm, cfg.cold, cfg.seed, keys[i], attempt)
                    rec[i]["strength"] = s
                    retry.append(i)
            pending = retry
        if not pending:
            break
        edits = editor.edit([ims[i] for i in pending], [keys[i] for i in pending],
                            [rec[i]["words"] for i in pending],
                            [rec[i]["strength"] for i in pending], attempt)
        p_edit = np.asarray(score(edits, labels_arr[pending]), dtype=np.float64) if gate else None
        rejected = []
        for j, i in enumerate(pending):
            rec[i]["tries"] += 1
            if gate:
                rec[i]["p_edit"] = float(p_edit[j])
            if not gate or p_edit[j] >= cfg.gate_threshold * rec[i]["p_source"]:
                rec[i]["image"], rec[i]["outcome"] = edits[j], ACCEPTED
            else:
                rejected.append(i)
        pending = rejected
    out = []
    for r in rec:
        w, c = r.pop("words")
        out.append({**r, "warm_prompt": fill_template(cfg.template, w),
                    "cold_prompt": fill_template(cfg.template, c), "seed": cfg.seed})
    return out


class PassThroughCompensator:
    """compensator "none": returns the images unchanged (prompts are empty strings)."""

    def __init__(self, cfg: CompensateConfig):
        self.cfg = cfg

    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str],
                   labels=None, words=None, score=None) -> list[dict]:
        return [{"image": np.array(im), "warm_prompt": "", "cold_prompt": "", "seed": self.cfg.seed,
                 "strength": 0.0, "tries": 0, "outcome": KEPT_SOURCE, "p_source": math.nan,
                 "p_edit": math.nan} for im in _as_images(images, keys)]


class _Editing:
    """A Compensator made of an Editor: compensate_images runs the words, the strength and the
    fidelity gate around the subclass's `edit`, at `self.strength` with `self.cfg`."""

    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str],
                   labels: Sequence[int] | None = None,
                   words: Sequence[tuple[str, str]] | None = None,
                   score: Score | None = None) -> list[dict]:
        return compensate_images(self, images, keys, self.cfg, self.strength, labels=labels,
                                 words=words, score=score)


class ClassicalCompensator(_Editing):
    """compensator "classical": warm and cold OKLab shifts (color.shift_color), blended.

    Works at the input resolution; the gradient ramp is cfg.ramp scaled by side / cfg.size.
    Custom words outside color.WORD_SHIFTS get the generic shift of the list they are in.
    strength (default cfg.edit_strength()) scales both shifts (ColorShift.scaled).
    """

    def __init__(self, cfg: CompensateConfig, strength: float | None = None):
        self.cfg = cfg
        self.strength = cfg.edit_strength() if strength is None else strength

    def can_edit(self, strength: float) -> bool:
        return strength > 0

    def edit(self, images: list[np.ndarray], keys: list[str], words: list[tuple[str, str]],
             strengths: list[float], attempt: int) -> list[np.ndarray]:
        out = []
        for img, key, (w_word, c_word), s in zip(images, keys, words, strengths):
            warm = color.shift_color(img, w_word, s, kind="warm")
            cold = color.shift_color(img, c_word, s, kind="cold")
            out.append(blend_pair(warm, cold, self.cfg, key))
        return out


# --------------------------------------------------------------------------------------------
# Fidelity gate classifier and set-level word assignment
# --------------------------------------------------------------------------------------------

def checkpoint_scorer(path: str | Path, device: str = "cpu", batch_size: int = 256) -> Score:
    """score(images, labels) -> float64 (N,) p(true class) under a dc3ray classifier checkpoint
    (models.load_model_checkpoint; loaded once, here). Images (uint8 (H, W, 3), any sizes) are
    brought to the checkpoint's image_size by imageio.eval_view and normalised as it was trained
    (its recorded normalisation, else the one of its input side, as training picks it)."""
    import torch

    from .imageio import eval_view
    from .models import load_model_checkpoint
    from .training import norm_for_side, norm_stats, recorded_norm, to_float

    model, meta = load_model_checkpoint(path, device)
    size, num_classes = int(meta["image_size"]), int(meta["num_classes"])
    mean, std = norm_stats(recorded_norm(meta) or norm_for_side(size))

    def score(images: Sequence[np.ndarray], labels: Sequence[int]) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(images):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels {labels.min()}..{labels.max()} do not fit the {num_classes} "
                             f"classes of gate model {path}; use a classifier of this class map")
        out = [np.zeros(0)]
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                x = np.stack([eval_view(im, size) for im in images[s:s + batch_size]])
                p = torch.softmax(model(to_float(x, mean, std, device)).float(), dim=1)
                y = torch.as_tensor(labels[s:s + batch_size], device=p.device)
                out.append(p[torch.arange(len(y), device=p.device), y].cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    return score


DIVERSE_THUMB = 64  # hue histograms barely depend on resolution: judge words on thumbnails


def _thumbnail(img: np.ndarray, side: int = DIVERSE_THUMB) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    return resize_rgb(img, max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))


def assign_diverse(images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str],
                   cfg: CompensateConfig) -> dict[str, tuple[str, str]]:
    """Word pairs that spread the set's hue histogram: {key: (warm word, cold word)}.

    images: uint8 (N, H, W, 3) or N uint8 (H, W, 3) of any sizes, one unique key each. Greedy,
    deterministic: images in sorted-key order each take the pair of cfg.warm x cfg.cold whose
    edit gives the highest entropy of the running set histogram (color.hue_histogram of the
    pairs chosen so far plus this edit; ties: the first pair in list order). A word's hue effect
    is judged by its classical shift (color.shift_for_word) at cfg.edit_strength(), blended
    with the key's mask, for every compensator: a proxy for the diffusion ones (img2img at
    strength 1, its strength being noise, not colour). Judged on thumbnails of at most
    DIVERSE_THUMB px side.
    """
    ims = _as_images(images, keys)
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError("assign_diverse needs unique keys")
    strength = 1.0 if cfg.compensator == "img2img" else cfg.edit_strength()
    pairs = [(w, c) for w in cfg.warm for c in cfg.cold]
    total = None
    out: dict[str, tuple[str, str]] = {}
    for i in sorted(range(len(ims)), key=lambda i: keys[i]):
        img = _thumbnail(ims[i])
        warm = {w: color.shift_color(img, w, strength, kind="warm") for w in cfg.warm}
        cold = {c: color.shift_color(img, c, strength, kind="cold") for c in cfg.cold}
        hists = np.stack([color.hue_histogram(blend_pair(warm[w], cold[c], cfg, keys[i]))
                          for w, c in pairs])
        base = np.zeros(hists.shape[1]) if total is None else total
        gains = [color.entropy_bits(base + h) for h in hists]
        best = int(np.argmax(gains))  # argmax takes the first of equal values
        out[keys[i]] = pairs[best]
        total = base + hists[best]
    return out


# --------------------------------------------------------------------------------------------
# Diffusion compensators
# --------------------------------------------------------------------------------------------

# A pipeline folder holding this file has random weights (benchmarks/diffusion_fullsize.py):
# right for timing, wrong for a condensed set, since its edits are noise.
RANDOM_WEIGHTS_MARKER = "DC3RAY_RANDOM_WEIGHTS"


def refuse_random_weights(model_path: str | Path | None) -> None:
    """Raise ValueError naming `model_path` when it is a local folder holding
    RANDOM_WEIGHTS_MARKER; return None otherwise (hub ids and missing paths pass: the loader
    checks those)."""
    if model_path and (Path(model_path).expanduser() / RANDOM_WEIGHTS_MARKER).is_file():
        raise ValueError(f"compensate.model_path={str(model_path)!r} holds {RANDOM_WEIGHTS_MARKER}: "
                         "a pipeline with random weights (a benchmark's), whose edits are noise; "
                         "point it at real InstructPix2Pix / Stable Diffusion weights")


def resolve_model_path(model_path: str | None) -> str:
    """compensate.model_path checked: a local diffusers folder or a hub id; else a clear error."""
    return resolve_pipeline(model_path, "compensate.model_path")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_edit_pipeline(pipeline_cls: Any, model_path: str, device: str) -> Any:
    """A diffusers editing pipeline (see core.diffusers_io.load_pipeline) with the Euler-Ancestral
    scheduler the DC3 edits use."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = load_pipeline(pipeline_cls, model_path, device, "compensate.model_path")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    return pipe


def _generators(seed: int, keys: Sequence[str], purpose: str, attempt: int = 0) -> list:
    import torch

    # CPU generators: the same noise on CPU and GPU, and one stream per image (batch-independent).
    # The gate's retry k draws new noise: (seed, key, purpose, k); attempt 0 keeps (seed, key, purpose).
    parts = (lambda k: (k, purpose)) if attempt == 0 else (lambda k: (k, purpose, attempt))
    return [torch.Generator(device="cpu").manual_seed(derive_seed(seed, *parts(k))) for k in keys]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


class _DiffusionBase(_Editing):
    """Shared batching. Images are taken in sorted-key order, in chunks of cfg.batch_size; ONE
    pipeline call per chunk (per distinct img2img strength) edits all warm and cold versions
    (2 x chunk prompts, one seeded generator per edit), then each pair is blended at cfg.size
    (the reference blends at 256 px) and resized back to its input size.

    The noise of an edit depends only on (seed, key), so batching never changes what is drawn;
    batched kernels can still round differently from single-image ones (~1e-6 relative), which
    may move a rare pixel by one level. Chunking by sorted key makes the output depend only on
    the SET of keys passed, not on their order.
    """

    pipeline_name = ""

    def __init__(self, cfg: CompensateConfig, device: str | None = None):
        import diffusers

        self.cfg = cfg
        self.strength = cfg.edit_strength()
        self.device = device or default_device()
        self.pipe = load_edit_pipeline(getattr(diffusers, self.pipeline_name), cfg.model_path, self.device)

    def can_edit(self, strength: float) -> bool:
        return strength > 0

    def _call_strength(self, strength: float) -> float | None:
        """The pipeline argument a strength becomes (None: the call does not take one)."""
        return None

    def _toward_source(self, source: np.ndarray, edit: np.ndarray, strength: float) -> np.ndarray:
        """An edit at cfg.size brought to `strength` after the pipeline call."""
        return edit

    def _edit(self, pil: list, prompts: list[str], generators: list,
              strength: float | None) -> np.ndarray:
        raise NotImplementedError

    def edit(self, images: list[np.ndarray], keys: list[str], words: list[tuple[str, str]],
             strengths: list[float], attempt: int) -> list[np.ndarray]:
        cfg = self.cfg
        order = sorted(range(len(images)), key=lambda i: str(keys[i]))
        out: list[np.ndarray | None] = [None] * len(images)
        for s in range(0, len(order), cfg.batch_size):
            chunk = order[s:s + cfg.batch_size]
            groups: dict[float | None, list[int]] = {}
            for i in chunk:
                groups.setdefault(self._call_strength(strengths[i]), []).append(i)
            for call_strength, idx in groups.items():
                ck = [str(keys[i]) for i in idx]
                src = [resize_rgb(images[i], cfg.size, cfg.size) for i in idx]
                pil = [Image.fromarray(x) for x in src]
                prompts = [fill_template(cfg.template, words[i][0]) for i in idx] + \
                          [fill_template(cfg.template, words[i][1]) for i in idx]
                gens = _generators(cfg.seed, ck, "warm", attempt) + \
                    _generators(cfg.seed, ck, "cold", attempt)
                edited = self._edit(pil + pil, prompts, gens, call_strength)
                n = len(idx)
                for j, (i, key) in enumerate(zip(idx, ck)):
                    warm = self._toward_source(src[j], edited[j], strengths[i])
                    cold = self._toward_source(src[j], edited[n + j], strengths[i])
                    mixed = blend_pair(warm, cold, cfg, key)
                    out[i] = resize_rgb(mixed, images[i].shape[0], images[i].shape[1])
        return out


class DiffusionCompensator(_DiffusionBase):
    """compensator "instructpix2pix": cfg.steps steps, guidance cfg.guidance, image guidance
    cfg.image_guidance, at cfg.size x cfg.size (DESIGN.md step 3). strength s < 1 mixes each
    edit toward the source in pixel space, (1-s) source + s edit, before the blend."""

    pipeline_name = "StableDiffusionInstructPix2PixPipeline"

    def _toward_source(self, source: np.ndarray, edit: np.ndarray, strength: float) -> np.ndarray:
        return color.interpolate(source, edit, strength)

    def _edit(self, pil: list, prompts: list[str], generators: list,
              strength: float | None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            res = self.pipe(prompt=prompts, image=pil, num_inference_steps=self.cfg.steps,
                            guidance_scale=self.cfg.guidance, image_guidance_scale=self.cfg.image_guidance,
                            generator=generators, output_type="np")
        return _to_uint8(res.images)


class Img2ImgCompensator(_DiffusionBase):
    """compensator "img2img": SDEdit-style edit, noise to the strength (cfg.edit_strength(),
    0.5 by default) then int(cfg.steps * strength) steps."""

    pipeline_name = "StableDiffusionImg2ImgPipeline"

    def __init__(self, cfg: CompensateConfig, device: str | None = None):
        s = cfg.edit_strength()
        if s > 0 and int(cfg.steps * s) < 1:
            raise ValueError(f"compensate.steps={cfg.steps} x compensate.strength={s} leaves no "
                             "denoising step; raise steps or strength")
        super().__init__(cfg, device)

    def can_edit(self, strength: float) -> bool:
        return int(self.cfg.steps * strength) >= 1

    def _call_strength(self, strength: float) -> float | None:
        return strength

    def _edit(self, pil: list, prompts: list[str], generators: list,
              strength: float | None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            res = self.pipe(prompt=prompts, image=pil, strength=strength,
                            num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance,
                            generator=generators, output_type="np")
        return _to_uint8(res.images)


def build_compensator(cfg: CompensateConfig, device: str | None = None) -> Compensator:
    """The compensator named by cfg.compensator; device (diffusion only) defaults to CUDA when present."""
    if not cfg.edits:
        return PassThroughCompensator(cfg)
    if cfg.compensator == "classical":
        return ClassicalCompensator(cfg)
    if cfg.compensator == "instructpix2pix":
        return DiffusionCompensator(cfg, device)
    if cfg.compensator == "img2img":
        return Img2ImgCompensator(cfg, device)
    raise ValueError(f"compensate.compensator={cfg.compensator!r} is unknown; "
                     "choose none, classical, instructpix2pix or img2img")
