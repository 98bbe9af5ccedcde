"""Encoded bytes <-> uint8 RGB arrays. Every mode (L, LA, P, RGBA, CMYK, I;16) ends up RGB."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile

# Truncated files must raise, not decode as half-gray images.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Guard against decompression bombs but allow big real photos (10k x 10k = 100 MP).
Image.MAX_IMAGE_PIXELS = 200_000_000


class ImageDecodeError(ValueError):
    """Raised when bytes cannot be decoded as an image; message says why."""


def probe_image(data: bytes) -> tuple[int, int, str]:
    """Fully decode `data` once to validate it; return (height, width, format).

    Raises ImageDecodeError for empty, truncated or undecodable data.
    """
    if not data:
        raise ImageDecodeError("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or "unknown"
            im.load()  # forces a full decode so truncation is caught here
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image too large: {e}") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise ImageDecodeError(f"undecodable image: {type(e).__name__}: {e}") from e
    return h, w, fmt


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) from an encoded image's header, without decoding its pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[1], im.size[0]
    except Exception as e:
        raise ImageDecodeError(f"undecodable image: {type(e).__name__}: {e}") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is composited on white, 16-bit is scaled to 8-bit."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def fit_side(h: int, w: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down, aspect kept, so the longer side is at most max_side (each side >= 1)."""
    if max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def decode_rgb(data: bytes, size: int | tuple[int, int] | None = None, *,
               max_side: int | None = None) -> np.ndarray:
    """Decode bytes to a uint8 array (H, W, 3). `size` (int side or (h, w)) resizes bicubically;
    else `max_side` scales an image whose longer side exceeds it down to that side (aspect kept)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = to_rgb(im)
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
            elif max_side:
                h, w = fit_side(im.size[1], im.size[0], max_side)
            else:
                h, w = im.size[1], im.size[0]
            if im.size != (w, h):
                im = im.resize((w, h), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:
        raise ImageDecodeError(f"undecodable image: {type(e).__name__}: {e}") from e


# torchvision / RDED ImageNet evaluation: resize the short side to size / 0.875, centre-crop.
EVAL_CROP_FRACTION = 0.875


def resize_center_crop(arr: np.ndarray, size: int,
                       crop_fraction: float = EVAL_CROP_FRACTION) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): torchvision Resize(round(size / crop_fraction))
    (short side, bilinear, PIL) then CenterCrop(size), with torchvision's rounding."""
    h, w = arr.shape[:2]
    short = round(size / crop_fraction)
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nh, nw = short, int(short * w / h)
    im = Image.fromarray(arr, mode="RGB")
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def eval_view(arr: np.ndarray, size: int) -> np.ndarray:
    """The held-out view of a uint8 (H, W, 3) image at size x size: unchanged when it is
    size x size already, resize_center_crop when its short side is larger than size (ImageNet
    protocol), else a plain bicubic resize (a smaller image is upsampled whole, as before)."""
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    if min(h, w) > size:
        return resize_center_crop(arr, size)
    return np.asarray(Image.fromarray(arr, mode="RGB").resize((size, size), Image.BICUBIC),
                      dtype=np.uint8).copy()


def encode_png(arr: np.ndarray) -> bytes:
    """Encode a uint8 (H, W, 3) array as PNG bytes (lossless, deterministic)."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_png expects uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_batch(images: list[bytes], size: int, keys: list[str] | None = None) -> np.ndarray:
    """Decode a list of encoded images to uint8 (N, size, size, 3); errors name keys[i]."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, data in enumerate(images):
        try:
            out[i] = decode_rgb(data, size)
        except ImageDecodeError as e:
            if keys is None:
                raise
            raise ImageDecodeError(f"image {str(keys[i])!r}: {e}; re-ingest the set with "
                                   "`dc3ray ingest`, which skips and lists such files") from e
    return out
