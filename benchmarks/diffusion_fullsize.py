"""The full-size InstructPix2Pix pipeline with RANDOM weights, built offline from config numbers.

No InstructPix2Pix (or Stable Diffusion, or CLIP) weights exist offline here, but the compute of
an edit depends only on the architecture, resolution, steps, batch and precision, never on the
weights' values. So this builds `diffusers.StableDiffusionInstructPix2PixPipeline` from the
published numbers written below (nothing downloaded):

  unet          UNet2DConditionModel, SD-1.5 numbers with in_channels=8 (latent + image latent)
  text_encoder  CLIP ViT-L/14 text tower (CLIPTextModel: 768 hidden, 12 layers, 12 heads)
  vae           SD AutoencoderKL (128/256/512/512, 4 latent channels)
  scheduler     EulerAncestralDiscreteScheduler, SD-1.5 beta schedule
  tokenizer     the real CLIP BPE tokenizer (tests/tiny_diffusion.py, build_clip_tokenizer)

Its images are noise. A folder it is saved to carries the marker file
dc3ray.core.editing.RANDOM_WEIGHTS_MARKER, and `compensate_dataset` refuses such a folder, so
it can be timed but never written out as a condensed set.

`tiny=True` gives the same four-level architecture with narrow widths (tests, dry runs), built
by the same code; `expected_param_counts` computes every module's size from the numbers alone.

    python benchmarks/diffusion_fullsize.py --out runs/cache/p2p_fullsize_random   # ~4.3 GB fp32
    python benchmarks/diffusion_fullsize.py --counts-only        # formula vs published, no build
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dc3ray.core.editing import RANDOM_WEIGHTS_MARKER  # noqa: E402

# Published sizes (parameters): SD-1.5 UNet 859,520,964 at 4 input channels; InstructPix2Pix
# adds 4 input channels to conv_in (4 x 320 x 3 x 3 = 11,520 weights); CLIP ViT-L/14 text
# tower 123.06M; SD VAE 83.65M.
PUBLISHED_PARAMS = {"unet": 859_520_964 + 4 * 320 * 3 * 3, "text_encoder": 123_060_480,
                    "vae": 83_653_863}
PUBLISHED_TOLERANCE = 0.01


@dataclass(frozen=True)
class P2PArch:
    """Every number the pipeline's architecture depends on (defaults: the published full size)."""
    # UNet (SD-1.5; three cross-attention levels, then a plain one; attention_head_dim is
    # diffusers' legacy name for the number of heads).
    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    unet_layers_per_block: int = 2
    unet_in_channels: int = 8
    unet_out_channels: int = 4
    unet_heads: int = 8
    unet_norm_groups: int = 32
    unet_sample_size: int = 64
    cross_attention_dim: int = 768
    # CLIP ViT-L/14 text tower.
    text_hidden: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    text_vocab: int = 49408
    text_max_positions: int = 77
    # SD VAE.
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_latent_channels: int = 4
    vae_norm_groups: int = 32
    vae_sample_size: int = 512


FULL = P2PArch()
# Same four levels and code path, narrow widths: builds in a second, runs at 64 px in tests.
TINY = P2PArch(unet_channels=(16, 32, 32, 32), unet_layers_per_block=1, unet_norm_groups=8,
               unet_sample_size=8, cross_attention_dim=32, text_hidden=32, text_layers=2,
               text_heads=4, text_intermediate=64, vae_channels=(16, 32, 32, 32),
               vae_layers_per_block=1, vae_norm_groups=8, vae_sample_size=64)


def arch_for(tiny: bool = False) -> P2PArch:
    """FULL (published numbers) or TINY (same structure, narrow widths)."""
    return TINY if tiny else FULL


# --------------------------------------------------------------------------------- counting

def _conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _norm(c: int) -> int:
    return 2 * c  # GroupNorm / LayerNorm: weight + bias


def _resnet(i: int, o: int, temb: int | None) -> int:
    """diffusers ResnetBlock2D: two 3x3 convs, optional time projection, 1x1 shortcut when i != o."""
    n = _norm(i) + _conv(i, o, 3) + _norm(o) + _conv(o, o, 3)
    n += _linear(temb, o) if temb else 0
    return n + (_conv(i, o, 1) if i != o else 0)


def _transformer(c: int, ctx: int) -> int:
    """Transformer2DModel with one BasicTransformerBlock (conv proj_in/out, GEGLU feed-forward)."""
    self_attn = 3 * _linear(c, c, bias=False) + _linear(c, c)
    cross_attn = _linear(c, c, bias=False) + 2 * _linear(ctx, c, bias=False) + _linear(c, c)
    ff = _linear(c, 8 * c) + _linear(4 * c, c)  # GEGLU: c -> 2 x 4c, then 4c -> c
    block = 3 * _norm(c) + self_attn + cross_attn + ff
    return _norm(c) + _conv(c, c, 1) + block + _conv(c, c, 1)


def unet_params(a: P2PArch) -> int:
    """Parameters of diffusers' UNet2DConditionModel with SD's block layout, from a's numbers."""
    ch, L, n = a.unet_channels, a.unet_layers_per_block, len(a.unet_channels)
    temb = 4 * ch[0]
    total = _conv(a.unet_in_channels, ch[0], 3) + _linear(ch[0], temb) + _linear(temb, temb)
    for i, out in enumerate(ch):                           # down: cross-attention except the last
        inp = ch[i - 1] if i else ch[0]
        total += sum(_resnet(inp if j == 0 else out, out, temb) for j in range(L))
        total += L * _transformer(out, a.cross_attention_dim) if i < n - 1 else 0
        total += _conv(out, out, 3) if i < n - 1 else 0    # downsampler
    total += 2 * _resnet(ch[-1], ch[-1], temb) + _transformer(ch[-1], a.cross_attention_dim)
    rev = list(reversed(ch))
    for i, out in enumerate(rev):                          # up: cross-attention except the first
        prev, skip_in = rev[i - 1] if i else rev[0], rev[min(i + 1, n - 1)]
        for j in range(L + 1):
            res_in = prev if j == 0 else out
            res_skip = skip_in if j == L else out
            total += _resnet(res_in + res_skip, out, temb)
        total += (L + 1) * _transformer(out, a.cross_attention_dim) if i > 0 else 0
        total += _conv(out, out, 3) if i < n - 1 else 0    # upsampler
    return total + _norm(ch[0]) + _conv(ch[0], a.unet_out_channels, 3)


def text_encoder_params(a: P2PArch) -> int:
    """Parameters of transformers' CLIPTextModel (no projection head) from a's numbers."""
    h = a.text_hidden
    layer = 2 * _norm(h) + 4 * _linear(h, h) + _linear(h, a.text_intermediate) + _linear(a.text_intermediate, h)
    return a.text_vocab * h + a.text_max_positions * h + a.text_layers * layer + _norm(h)


def vae_params(a: P2PArch) -> int:
    """Parameters of diffusers' AutoencoderKL (encoder, decoder, quant convs) from a's numbers."""
    ch, L, n, z = a.vae_channels, a.vae_layers_per_block, len(a.vae_channels), a.vae_latent_channels
    mid = 2 * _resnet(ch[-1], ch[-1], None) + _norm(ch[-1]) + 4 * _linear(ch[-1], ch[-1])
    enc = _conv(3, ch[0], 3) + mid + _norm(ch[-1]) + _conv(ch[-1], 2 * z, 3)
    for i, out in enumerate(ch):
        inp = ch[i - 1] if i else ch[0]
        enc += sum(_resnet(inp if j == 0 else out, out, None) for j in range(L))
        enc += _conv(out, out, 3) if i < n - 1 else 0
    rev = list(reversed(ch))
    dec = _conv(z, ch[-1], 3) + mid + _norm(ch[0]) + _conv(ch[0], 3, 3)
    for i, out in enumerate(rev):
        prev = rev[i - 1] if i else rev[0]
        dec += sum(_resnet(prev if j == 0 else out, out, None) for j in range(L + 1))
        dec += _conv(out, out, 3) if i < n - 1 else 0
    return enc + dec + _conv(2 * z, 2 * z, 1) + _conv(z, z, 1)


def expected_param_counts(a: P2PArch = FULL) -> dict[str, int]:
    """{unet, text_encoder, vae, total}: parameter counts computed from a's numbers alone."""
    out = {"unet": unet_params(a), "text_encoder": text_encoder_params(a), "vae": vae_params(a)}
    out["total"] = sum(out.values())
    return out


def check_against_published(counts: dict[str, int], tol: float = PUBLISHED_TOLERANCE) -> dict[str, dict]:
    """Per module {count, published, rel_diff, ok (|rel_diff| <= tol)}; only meaningful for FULL."""
    return {k: {"count": counts[k], "published": p, "rel_diff": (counts[k] - p) / p,
                "ok": abs(counts[k] - p) <= tol * p} for k, p in PUBLISHED_PARAMS.items()}


def module_param_counts(pipe) -> dict[str, int]:
    """{unet, text_encoder, vae, total}: parameters actually held by a pipeline's modules."""
    out = {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in ("unet", "text_encoder", "vae")}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------------- building

def build_tokenizer():
    """The real CLIP tokenizer, offline (the one place this file touches tiny_diffusion)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import tiny_diffusion

    return tiny_diffusion().build_clip_tokenizer()


def build_components(a: P2PArch, seed: int = 0) -> dict:
    """Random-weight pipeline components from a's numbers: {unet, vae, text_encoder, tokenizer,
    scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False}."""
    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    n = len(a.unet_channels)
    for c in a.unet_channels:
        if c % a.unet_heads:   # the formula assumes inner dim == channels
            raise ValueError(f"UNet width {c} is not divisible by {a.unet_heads} heads")
    tokenizer = build_tokenizer()
    if len(tokenizer) != a.text_vocab:
        raise ValueError(f"text_vocab={a.text_vocab} but the CLIP tokenizer has {len(tokenizer)} tokens")
    # One seed per module: weights do not depend on construction order.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=a.unet_sample_size, in_channels=a.unet_in_channels, out_channels=a.unet_out_channels,
        layers_per_block=a.unet_layers_per_block, block_out_channels=a.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=a.cross_attention_dim, attention_head_dim=a.unet_heads,
        norm_num_groups=a.unet_norm_groups)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=a.vae_latent_channels,
        layers_per_block=a.vae_layers_per_block, block_out_channels=a.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(a.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(a.vae_channels),
        norm_num_groups=a.vae_norm_groups, sample_size=a.vae_sample_size)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=a.text_vocab, hidden_size=a.text_hidden, intermediate_size=a.text_intermediate,
        num_hidden_layers=a.text_layers, num_attention_heads=a.text_heads,
        max_position_embeddings=a.text_max_positions, projection_dim=a.text_hidden,
        hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    # SD-1.5 noise schedule (timbrooks/instruct-pix2pix ships Euler-Ancestral with it).
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
            "requires_safety_checker": False}


def build_pipeline(tiny: bool = False, seed: int = 0):
    """An in-memory StableDiffusionInstructPix2PixPipeline with random weights (fp32, CPU)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline(**build_components(arch_for(tiny), seed))


def read_marker(folder: str | Path) -> dict | None:
    """The marker's JSON (what was built) when `folder` holds RANDOM_WEIGHTS_MARKER, else None."""
    p = Path(folder) / RANDOM_WEIGHTS_MARKER
    return json.loads(p.read_text()) if p.is_file() else None


def save_random_pipeline(out_dir: str | Path, tiny: bool = False, seed: int = 0,
                         log=print) -> Path:
    """Build the random pipeline and save it (fp32 safetensors, + marker) to out_dir; return out_dir.

    Reuses out_dir when it already holds a pipeline whose marker records the same architecture
    and seed (the full size is ~4.3 GB: built once, cached under runs/). Refuses to touch a
    folder that exists without the marker (it may hold real weights). Writes to a sibling temp
    folder first, so an interrupted save leaves no half pipeline behind the marker.
    """
    out = Path(out_dir)
    a = arch_for(tiny)
    want = {"what": "StableDiffusionInstructPix2PixPipeline with RANDOM weights: its images are noise",
            "tiny": tiny, "seed": seed, "arch": asdict(a), "expected_params": expected_param_counts(a)}
    if out.exists():
        have = read_marker(out)
        if have is None:
            raise FileExistsError(f"{out} exists and is not a random-weight pipeline folder "
                                  f"(no {RANDOM_WEIGHTS_MARKER}); choose another folder")
        if have == json.loads(json.dumps(want)) and (out / "model_index.json").is_file():
            log(f"reusing random-weight pipeline at {out}")
            return out
        shutil.rmtree(out)   # ours (marker present) but another architecture or seed
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = build_pipeline(tiny, seed)
    counts = module_param_counts(pipe)
    if counts != want["expected_params"]:
        raise RuntimeError(f"built modules hold {counts} parameters, the formula says {want['expected_params']}")
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(want, indent=2) + "\n")
    os.replace(tmp, out)
    log(f"saved random-weight pipeline ({counts['total']:,} parameters) to {out}")
    return out


def main(argv: list[str] | None = None) -> dict:
    """CLI: print the formula's counts vs published sizes; build + save unless --counts-only."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "runs" / "cache"
                                        / "p2p_fullsize_random"))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--counts-only", action="store_true", help="print the formula's counts, build nothing")
    args = p.parse_args(argv)
    counts = expected_param_counts(arch_for(args.tiny))
    for k, v in counts.items():
        print(f"{k:>13}: {v:>13,} parameters (from the config numbers)")
    report = {"expected_params": counts}
    if not args.tiny:
        report["published"] = check_against_published(counts)
        for k, r in report["published"].items():
            print(f"{k:>13}: published {r['published']:,}, diff {100 * r['rel_diff']:+.4f}% "
                  f"({'ok' if r['ok'] else 'OUTSIDE 1%'})")
    if not args.counts_only:
        save_random_pipeline(args.out, tiny=args.tiny, seed=args.seed)
    return report


if __name__ == "__main__":
    main()
