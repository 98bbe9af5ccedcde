"""Tiny, randomly initialised Stable Diffusion pipelines built offline from configs.

No weights of Stable Diffusion, InstructPix2Pix or CLIP exist offline here, so tests, dry runs and
the GPU benchmark exercise the real diffusers code path with these: same classes, same
`save_pretrained` folder layout, loaded back through the same `from_pretrained(path)` that users
call with real weights. Their outputs are noise-like; only shapes, seeding and speed mean anything.

The tokenizer is the REAL CLIP BPE tokenizer (49,408 tokens), built from the vocabulary file that
ships inside the open_clip_torch wheel, so prompts tokenize exactly as with real checkpoints.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_CONTEXT_LENGTH = 77
# The CLIP vocabulary: 256 byte symbols, 256 end-of-word byte symbols, 48,894 merges, 2 specials.
CLIP_NUM_MERGES = 49152 - 256 - 2


def clip_bpe_path() -> Path:
    """Path of open_clip's bundled BPE file (found without importing open_clip, which is slow)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package open_clip_torch is not installed; it ships the CLIP BPE vocabulary "
            f"({CLIP_VOCAB_FILE}) needed to build the CLIP tokenizer offline: pip install open_clip_torch")
    path = Path(list(spec.submodule_search_locations)[0]) / CLIP_VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the open_clip_torch install; reinstall it")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode symbol table (whitespace/control bytes moved above 255)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP encoder dict (token -> id, 49,408 entries) and BPE merges, as OpenAI/open_clip build them.

    Order: byte symbols, byte symbols + '</w>', one token per merge, '<|startoftext|>' (49406),
    '<|endoftext|>' (49407): the same ids as the Hugging Face openai/clip-vit-* vocab.json.
    """
    path = Path(bpe_path) if bpe_path is not None else clip_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_NUM_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer(bpe_path: str | Path | None = None):
    """A transformers CLIPTokenizer with the real CLIP vocabulary, built offline (max length 77)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_path)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_CONTEXT_LENGTH)


def _tiny_components(unet_in_channels: int, seed: int, channels: tuple[int, int]) -> dict:
    import math

    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c0, c1 = channels
    groups = min(32, math.gcd(c0, c1))
    tokenizer = build_clip_tokenizer()
    # Each module gets its own seed so the weights do not depend on construction order.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=unet_in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(c0, c1), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=groups)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(c0, c1), down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=groups, sample_size=64)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=CLIP_CONTEXT_LENGTH, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    # SD v1 noise schedule; Euler-Ancestral as DESIGN.md step 3 uses.
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
            "requires_safety_checker": False}


def build_tiny_instruct_pix2pix(out_dir: str | Path, seed: int = 0, channels: tuple[int, int] = (32, 64)) -> Path:
    """Save a tiny random StableDiffusionInstructPix2PixPipeline (UNet in_channels=8) to out_dir.

    UNet and VAE have two blocks of `channels` widths (cross-attention dim 32); the VAE
    downsamples by 2, so latents are size/2 and any size divisible by 8 works. Returns out_dir;
    load it with StableDiffusionInstructPix2PixPipeline.from_pretrained(out_dir).
    """
    from diffusers import StableDiffusionInstructPix2PixPipeline

    out = Path(out_dir)
    pipe = StableDiffusionInstructPix2PixPipeline(**_tiny_components(8, seed, channels))
    pipe.save_pretrained(out)
    return out


def build_tiny_img2img(out_dir: str | Path, seed: int = 0, channels: tuple[int, int] = (32, 64)) -> Path:
    """Save a tiny random StableDiffusionImg2ImgPipeline (UNet in_channels=4) to out_dir; returns it."""
    from diffusers import StableDiffusionImg2ImgPipeline

    out = Path(out_dir)
    pipe = StableDiffusionImg2ImgPipeline(**_tiny_components(4, seed, channels))
    pipe.save_pretrained(out)
    return out


def build_tiny_text2img(out_dir: str | Path, seed: int = 0, channels: tuple[int, int] = (32, 64)) -> Path:
    """Save a tiny random StableDiffusionPipeline (text-to-image, UNet in_channels=4) to out_dir.

    Same components as build_tiny_img2img (VAE downsamples by 2: generate at sizes divisible by
    8; its default size is 64). Used for LoRA fine-tuning and generation tests; returns out_dir.
    """
    from diffusers import StableDiffusionPipeline

    out = Path(out_dir)
    pipe = StableDiffusionPipeline(**_tiny_components(4, seed, channels))
    pipe.save_pretrained(out)
    return out
