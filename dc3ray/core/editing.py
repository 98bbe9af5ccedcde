"""Colour compensation of selected images (DESIGN.md step 3): warm edit + cold edit, blended.

Every random choice is seeded from (run seed, image key, purpose) through dc3ray.core.seeding:
the prompt pair ("prompts"), the blend mask ("blend") and the diffusion noise ("warm", "cold").
So what is drawn for an image never depends on its batch, its position or the worker: a rerun
gives the same bytes, and a batch of 8 gives what 8 single calls give (exactly for "classical";
for diffusion up to the float rounding of batched kernels, see _DiffusionBase).

Compensators (all take uint8 (N, H, W, 3), or a list of uint8 (H, W, 3) of any sizes, and
return one record per image, at that image's input size):
- PassThroughCompensator ("none"): images unchanged.
- ClassicalCompensator ("classical"): deterministic OKLab shifts (dc3ray.core.color).
- DiffusionCompensator ("instructpix2pix"): StableDiffusionInstructPix2PixPipeline.
- Img2ImgCompensator ("img2img"): StableDiffusionImg2ImgPipeline at cfg.strength.
diffusers and torch are imported lazily, only by the diffusion compensators.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image

from dc3ray.config import CompensateConfig
from dc3ray.core import color
from dc3ray.core.diffusers_io import load_pipeline, resolve_pipeline
from dc3ray.core.seeding import derive_seed, rng_for


def choose_words(warm: Sequence[str], cold: Sequence[str], seed: int, key: str) -> tuple[str, str]:
    """(warm word, cold word), each drawn uniformly from its list by rng_for(seed, key, "prompts")."""
    rng = rng_for(seed, key, "prompts")
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


class Compensator(Protocol):
    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        """uint8 (N, H, W, 3) (or N uint8 (H, W, 3) of any sizes) + N keys -> N dicts, in input
        order: {image: uint8 (H, W, 3) at that input's size, warm_prompt: str, cold_prompt: str,
        seed: int (the run seed; with the key it reproduces every random choice)}."""
        ...


class PassThroughCompensator:
    """compensator "none": returns the images unchanged (prompts are empty strings)."""

    def __init__(self, cfg: CompensateConfig):
        self.cfg = cfg

    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        return [{"image": np.array(im), "warm_prompt": "", "cold_prompt": "", "seed": self.cfg.seed}
                for im in _as_images(images, keys)]


class ClassicalCompensator:
    """compensator "classical": warm and cold OKLab shifts (color.shift_color), blended.

    Works at the input resolution; the gradient ramp is cfg.ramp scaled by side / cfg.size.
    Custom words outside color.WORD_SHIFTS get the generic shift of the list they are in.
    """

    def __init__(self, cfg: CompensateConfig, strength: float = 1.0):
        self.cfg = cfg
        self.strength = strength

    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        cfg = self.cfg
        out = []
        for img, key in zip(_as_images(images, keys), keys):
            w_word, c_word = choose_words(cfg.warm, cfg.cold, cfg.seed, key)
            warm = color.shift_color(img, w_word, self.strength, kind="warm")
            cold = color.shift_color(img, c_word, self.strength, kind="cold")
            out.append({"image": blend_pair(warm, cold, cfg, key),
                        "warm_prompt": fill_template(cfg.template, w_word),
                        "cold_prompt": fill_template(cfg.template, c_word), "seed": cfg.seed})
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


def _generators(seed: int, keys: Sequence[str], purpose: str) -> list:
    import torch

    # CPU generators: the same noise on CPU and GPU, and one stream per image (batch-independent).
    return [torch.Generator(device="cpu").manual_seed(derive_seed(seed, k, purpose)) for k in keys]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


class _DiffusionBase:
    """Shared batching. Images are taken in sorted-key order, in chunks of cfg.batch_size; ONE
    pipeline call per chunk edits all warm and cold versions (2 x chunk prompts, one seeded
    generator per edit), then each pair is blended at cfg.size (the reference blends at 256 px)
    and resized back to its input size.

    The noise of an edit depends only on (seed, key), so batching never changes what is drawn;
    batched kernels can still round differently from single-image ones (~1e-6 relative), which
    may move a rare pixel by one level. Chunking by sorted key makes the output depend only on
    the SET of keys passed, not on their order.
    """

    pipeline_name = ""

    def __init__(self, cfg: CompensateConfig, device: str | None = None):
        import diffusers

        self.cfg = cfg
        self.device = device or default_device()
        self.pipe = load_edit_pipeline(getattr(diffusers, self.pipeline_name), cfg.model_path, self.device)

    def _edit(self, pil: list, prompts: list[str], generators: list) -> np.ndarray:
        raise NotImplementedError

    def compensate(self, images: np.ndarray | Sequence[np.ndarray], keys: Sequence[str]) -> list[dict]:
        ims = _as_images(images, keys)
        cfg = self.cfg
        order = sorted(range(len(ims)), key=lambda i: str(keys[i]))
        out: list[dict | None] = [None] * len(ims)
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            ck = [str(keys[i]) for i in idx]
            pil = [Image.fromarray(resize_rgb(ims[i], cfg.size, cfg.size)) for i in idx]
            pairs = [prompt_pair(cfg.template, cfg.warm, cfg.cold, cfg.seed, k) for k in ck]
            prompts = [p[0] for p in pairs] + [p[1] for p in pairs]
            gens = _generators(cfg.seed, ck, "warm") + _generators(cfg.seed, ck, "cold")
            edited = self._edit(pil + pil, prompts, gens)
            n = len(idx)
            for j, (i, key) in enumerate(zip(idx, ck)):
                mixed = blend_pair(edited[j], edited[n + j], cfg, key)
                out[i] = {"image": resize_rgb(mixed, ims[i].shape[0], ims[i].shape[1]),
                          "warm_prompt": pairs[j][0], "cold_prompt": pairs[j][1], "seed": cfg.seed}
        return out


class DiffusionCompensator(_DiffusionBase):
    """compensator "instructpix2pix": cfg.steps steps, guidance cfg.guidance, image guidance
    cfg.image_guidance, at cfg.size x cfg.size (DESIGN.md step 3)."""

    pipeline_name = "StableDiffusionInstructPix2PixPipeline"

    def _edit(self, pil: list, prompts: list[str], generators: list) -> np.ndarray:
        import torch

        with torch.inference_mode():
            res = self.pipe(prompt=prompts, image=pil, num_inference_steps=self.cfg.steps,
                            guidance_scale=self.cfg.guidance, image_guidance_scale=self.cfg.image_guidance,
                            generator=generators, output_type="np")
        return _to_uint8(res.images)


class Img2ImgCompensator(_DiffusionBase):
    """compensator "img2img": SDEdit-style edit, noise to cfg.strength then cfg.steps * strength steps."""

    pipeline_name = "StableDiffusionImg2ImgPipeline"

    def __init__(self, cfg: CompensateConfig, device: str | None = None):
        if int(cfg.steps * cfg.strength) < 1:
            raise ValueError(f"compensate.steps={cfg.steps} x compensate.strength={cfg.strength} leaves no "
                             "denoising step; raise steps or strength")
        super().__init__(cfg, device)

    def _edit(self, pil: list, prompts: list[str], generators: list) -> np.ndarray:
        import torch

        with torch.inference_mode():
            res = self.pipe(prompt=prompts, image=pil, strength=self.cfg.strength,
                            num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance,
                            generator=generators, output_type="np")
        return _to_uint8(res.images)


def build_compensator(cfg: CompensateConfig, device: str | None = None) -> Compensator:
    """The compensator named by cfg.compensator; device (diffusion only) defaults to CUDA when present."""
    if cfg.compensator == "none":
        return PassThroughCompensator(cfg)
    if cfg.compensator == "classical":
        return ClassicalCompensator(cfg)
    if cfg.compensator == "instructpix2pix":
        return DiffusionCompensator(cfg, device)
    if cfg.compensator == "img2img":
        return Img2ImgCompensator(cfg, device)
    raise ValueError(f"compensate.compensator={cfg.compensator!r} is unknown; "
                     "choose none, classical, instructpix2pix or img2img")
