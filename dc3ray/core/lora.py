"""LoRA fine-tuning of a Stable Diffusion UNet on a (condensed) image set, and class-prompted sampling.

DESIGN.md step 5: adapters on the UNet attention projections (to_q, to_k, to_v, to_out.0) via
peft, trained with the noise-prediction MSE of the pipeline's own noise schedule, conditioned on
"a photo of a {class}". VAE and text encoder stay frozen: the set's latent distributions and the
class prompt embeddings are computed once (`prepare_training_data`), so a step costs one UNet
forward/backward.

Randomness: the adapter init from (seed, "lora-init"); a training step's batch, timesteps and
noise from (seed, "lora-step", step), so a run resumed from a checkpoint (adapter + optimizer
state) takes the same steps as an uninterrupted one; a generated image's noise from
(seed, class name, index), so it does not depend on batching or on which worker made it.

Adapters are saved in the diffusers LoRA format (`pytorch_lora_weights.safetensors`, loadable by
`pipe.load_lora_weights(folder)` anywhere). torch / diffusers / peft are imported lazily.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import MissingPathError
from .diffusers_io import load_pipeline, resolve_pipeline
from .seeding import derive_seed

PROMPT_TEMPLATE = "a photo of a {class}"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"


def class_prompt(class_name: str, template: str = PROMPT_TEMPLATE) -> str:
    """The prompt of a class: `template` with '{class}' -> the name, underscores as spaces."""
    if "{class}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{class}}' placeholder")
    return template.replace("{class}", str(class_name).replace("_", " "))


def resolve_base(base: str | Path | None, setting: str = "--base") -> str:
    """A local Stable Diffusion pipeline folder (with model_index.json) or a hub id 'org/name'."""
    return resolve_pipeline(base, setting)


def load_text2img(base: str | Path, device: str = "cpu", dtype: Any = None) -> Any:
    """A StableDiffusionPipeline from a local folder / hub id on `device`; dtype defaults to fp16 on
    CUDA (sampling) and fp32 elsewhere (pass torch.float32 for training)."""
    from diffusers import StableDiffusionPipeline

    return load_pipeline(StableDiffusionPipeline, base, device, "--base", dtype=dtype)


# --------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------

def add_lora(unet: Any, rank: int = 4, alpha: float | None = None, seed: int = 0) -> list:
    """Freeze `unet` and add a LoRA adapter ('default') of `rank` to its attention projections.

    lora_B starts at zero (the adapted UNet equals the base), lora_A is Gaussian from
    (seed, "lora-init"); alpha defaults to rank (scale 1, what diffusers assumes when loading
    weights without metadata). Returns the trainable (adapter) parameters.
    """
    import torch
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    unet.requires_grad_(False)
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                     init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "lora-init"))
        unet.add_adapter(cfg)
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"no UNet module matches the LoRA targets {LORA_TARGETS}; is this a Stable Diffusion UNet?")
    return params


def lora_state_dict(unet: Any) -> dict:
    """The adapter weights only (peft key format), as CPU tensors detached from the model."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}


def set_lora_state_dict(unet: Any, state: dict) -> None:
    """Load adapter weights from `lora_state_dict` into a UNet that has the same adapter."""
    from peft.utils import set_peft_model_state_dict

    res = set_peft_model_state_dict(unet, state)
    bad = list(getattr(res, "unexpected_keys", None) or [])
    if bad:
        raise ValueError(f"LoRA state does not fit this UNet (unexpected keys {bad[:3]}...); "
                         "it was trained on another base model or rank")


def save_lora(unet: Any, out_dir: str | Path) -> Path:
    """Write the adapter in the diffusers LoRA format (out_dir/pytorch_lora_weights.safetensors,
    with its LoraConfig as metadata); returns out_dir."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    meta = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True,
                                              unet_lora_adapter_metadata=meta)
    return out


def load_lora(pipe: Any, lora_dir: str | Path) -> Any:
    """Load a saved adapter (folder with pytorch_lora_weights.safetensors) into `pipe`; returns pipe."""
    p = Path(lora_dir)
    if not (p / LORA_WEIGHTS_FILE).is_file():
        raise MissingPathError(f"{p} holds no {LORA_WEIGHTS_FILE}; pass the lora/ folder written by "
                                "finetune-diffusion (or a diffusers LoRA folder)")
    pipe.load_lora_weights(str(p))
    return pipe


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class LoraData:
    """What a LoRA step needs, on one device: VAE latent distributions of the images (already
    multiplied by the VAE scaling factor) and the text embedding of each class prompt."""
    latent_mean: Any    # float32 (N, 4, h, w)
    latent_std: Any     # float32 (N, 4, h, w)
    labels: Any         # int64 (N,), index into text_emb
    text_emb: Any       # float32 (C, 77, D)


def resize_uint8(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) or N uint8 (H, W, 3) -> uint8 (N, size, size, 3), PIL bicubic."""
    out = [np.asarray(im, dtype=np.uint8) for im in images]
    out = [im if im.shape[:2] == (size, size) else
           np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC), dtype=np.uint8) for im in out]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def encode_prompts(pipe: Any, prompts: Sequence[str], device: Any) -> Any:
    """Text-encoder hidden states of `prompts` -> float32 (P, 77, D) on device (no guidance)."""
    import torch

    with torch.no_grad():
        emb, _ = pipe.encode_prompt(list(prompts), device, 1, False)
    return emb.float()


def encode_images(pipe: Any, images: np.ndarray | Sequence[np.ndarray], size: int, device: Any,
                  batch_size: int = 16) -> tuple[Any, Any]:
    """VAE latent distribution of each image at size x size -> (mean, std), float32
    (N, 4, size / f, size / f) on device, both times the VAE scaling factor."""
    import torch

    ims = resize_uint8(images, size)
    vae = pipe.vae
    scale = float(vae.config.scaling_factor)
    means, stds = [], []
    with torch.no_grad():
        for s in range(0, len(ims), batch_size):
            x = torch.from_numpy(ims[s:s + batch_size]).permute(0, 3, 1, 2).to(device, vae.dtype)
            dist = vae.encode(x / 127.5 - 1.0).latent_dist
            means.append(dist.mean.float() * scale)
            stds.append(dist.std.float() * scale)
    return torch.cat(means), torch.cat(stds)


def prepare_training_data(pipe: Any, images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray,
                          class_names: Sequence[str], size: int, device: Any,
                          template: str = PROMPT_TEMPLATE) -> LoraData:
    """Encode a training set once: images uint8 (N, H, W, 3) (any sizes, resized to `size`),
    labels int (N,) in [0, len(class_names)); class_names[i] names label i."""
    import torch

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"got {len(images)} images and {len(labels)} labels; need one label per image, N >= 1")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"labels span [{labels.min()}, {labels.max()}] but only {len(class_names)} class "
                         "names were given; pass the set's class map")
    mean, std = encode_images(pipe, images, size, device)
    text = encode_prompts(pipe, [class_prompt(c, template) for c in class_names], device)
    return LoraData(mean, std, torch.from_numpy(labels).to(device), text)


def noise_scheduler(pipe: Any) -> Any:
    """The training noise schedule: DDPM with the pipeline scheduler's betas and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def lora_optimizer(params: Sequence[Any], lr: float = 1e-4, weight_decay: float = 1e-2) -> Any:
    import torch

    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)


def lora_step(unet: Any, scheduler: Any, data: LoraData, optimizer: Any, step: int, seed: int,
              batch_size: int, rank: int = 0, world: int = 1, autocast_dtype: Any = None,
              max_grad_norm: float = 1.0) -> float:
    """One optimisation step of the noise-prediction MSE; returns this worker's loss.

    The global batch (`batch_size` images without replacement while it fits the set, its
    timesteps and noise) is drawn on CPU from (seed, "lora-step", step), identically on every
    worker; worker `rank` of `world` trains on rows rank::world (DDP averages the gradients).
    """
    import torch
    import torch.nn.functional as F

    n = data.latent_mean.shape[0]
    device = data.latent_mean.device
    g = torch.Generator().manual_seed(derive_seed(seed, "lora-step", step))
    idx = torch.randperm(n, generator=g)[:batch_size] if batch_size <= n else \
        torch.randint(0, n, (batch_size,), generator=g)
    t = torch.randint(0, int(scheduler.config.num_train_timesteps), (batch_size,), generator=g)
    shape = (batch_size, *data.latent_mean.shape[1:])
    eps = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    idx, t, eps, noise = (v[rank::world].to(device) for v in (idx, t, eps, noise))
    if len(idx) == 0:
        raise ValueError(f"batch_size={batch_size} leaves worker {rank} of {world} no images; "
                         "use batch_size >= workers")
    latents = data.latent_mean[idx] + data.latent_std[idx] * eps
    noisy = scheduler.add_noise(latents, noise, t)
    ptype = scheduler.config.prediction_type
    if ptype == "epsilon":
        target = noise
    elif ptype == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        raise ValueError(f"scheduler prediction_type={ptype!r} is not supported; use epsilon or v_prediction")
    with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        pred = unet(noisy, t, encoder_hidden_states=data.text_emb[data.labels[idx]]).sample
    loss = F.mse_loss(pred.float(), target.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for grp in optimizer.param_groups for p in grp["params"]],
                                       max_grad_norm)
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

def image_key(class_name: str, index: int) -> str:
    """Key of generated image `index` of a class: '<class>/<index:05d>'."""
    return f"{class_name}/{index:05d}"


def generation_items(class_map: dict[str, int], n_per_class: int) -> list[tuple[str, int, int]]:
    """(class name, label, index) for n_per_class images of every class, in label order."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    return [(name, int(label), i) for name, label in sorted(class_map.items(), key=lambda kv: kv[1])
            for i in range(n_per_class)]


def generate_items(pipe: Any, items: Sequence[tuple[str, int, int]], seed: int, size: int | None = None,
                   steps: int = 30, guidance: float = 7.5, batch_size: int = 8,
                   template: str = PROMPT_TEMPLATE) -> dict:
    """Sample one image per item (class name, label, index) with `pipe` (base or LoRA-loaded).

    Image noise comes from a CPU generator seeded by derive_seed(seed, class name, index).
    Returns {images: uint8 (N, size, size, 3), labels: int64 (N,), keys: ['<class>/<index>'],
    prompts, seeds: per-image seeds}, in item order. size defaults to the pipeline's native size.
    """
    import torch

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if size is not None and size % 8:
        raise ValueError(f"generation size {size} must be divisible by 8 (VAE and UNet downsampling)")
    seeds = [derive_seed(seed, name, idx) for name, _, idx in items]
    prompts = [class_prompt(name, template) for name, _, _ in items]
    chunks = []
    for s in range(0, len(items), batch_size):
        gens = [torch.Generator(device="cpu").manual_seed(x) for x in seeds[s:s + batch_size]]
        with torch.inference_mode():
            res = pipe(prompt=prompts[s:s + batch_size], height=size, width=size, num_inference_steps=steps,
                       guidance_scale=guidance, generator=gens, output_type="np")
        chunks.append(np.clip(np.rint(np.asarray(res.images, np.float32) * 255.0), 0, 255).astype(np.uint8))
    side = size or 0
    images = np.concatenate(chunks) if chunks else np.zeros((0, side, side, 3), np.uint8)
    return {"images": images, "labels": np.asarray([lab for _, lab, _ in items], dtype=np.int64),
            "keys": [image_key(name, idx) for name, _, idx in items], "prompts": prompts, "seeds": seeds}


def generate(pipe: Any, class_names: Sequence[str], n_per_class: int, seed: int, size: int | None = None,
             steps: int = 30, guidance: float = 7.5, batch_size: int = 8,
             template: str = PROMPT_TEMPLATE) -> dict:
    """n_per_class images of each class (class_names[i] has label i); see generate_items."""
    items = generation_items({c: i for i, c in enumerate(class_names)}, n_per_class)
    return generate_items(pipe, items, seed, size, steps, guidance, batch_size, template)


__all__ = ["PROMPT_TEMPLATE", "LORA_TARGETS", "LORA_WEIGHTS_FILE", "class_prompt", "resolve_base",
           "load_text2img", "add_lora", "lora_state_dict", "set_lora_state_dict", "save_lora", "load_lora",
           "LoraData", "resize_uint8", "encode_prompts", "encode_images", "prepare_training_data",
           "noise_scheduler", "lora_optimizer", "lora_step", "image_key", "generation_items",
           "generate_items", "generate"]
