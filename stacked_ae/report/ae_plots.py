"""Autoencoder figures: top-layer codes coloured by label, the decoded code plane (2-D codes) or
decoded interpolations between class means (wider codes), originals beside reconstructions,
and first-layer filters. Each `plot_*` takes arrays or a loaded model and writes one PNG.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch

from ..core.model import DeepAutoencoder
from .plots import new_figure, save

MAX_FILTERS = 100
N_INTERPOLATION_STEPS = 9


def tile(images: np.ndarray, ncols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(n, h, w) images -> one (rows*(h+pad)-pad, ncols*(w+pad)-pad) mosaic, row by row."""
    n, h, w = images.shape
    nrows = -(-n // ncols)
    mosaic = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill, dtype=np.float32)
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        mosaic[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = image
    return mosaic


@torch.no_grad()
def decode(ae: DeepAutoencoder, codes: np.ndarray) -> np.ndarray:
    """Decoder outputs of `codes`: (n, k) -> (n, n_in)."""
    ae.eval()
    return ae.decode(torch.as_tensor(codes, dtype=torch.float32)).numpy()


@torch.no_grad()
def reconstruct(ae: DeepAutoencoder, X: np.ndarray) -> np.ndarray:
    ae.eval()
    return ae(torch.as_tensor(X, dtype=torch.float32)).numpy()


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, bool]:
    """The codes themselves when 2-D, else their first two principal components (sign fixed)."""
    if codes.shape[1] <= 2:
        return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1]))), False
    centred = codes - codes.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[:2, np.argmax(np.abs(vt[:2]), axis=1)].diagonal())
    return centred @ (vt[:2].T * np.where(signs == 0, 1, signs)), True


def plot_codes(codes: np.ndarray, y: np.ndarray, classes: list[str], path: Path, source: str) -> str:
    xy, projected = project_2d(codes)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig = new_figure(7.2, 5.6)
    ax = fig.add_subplot()
    for c, name in enumerate(classes):
        mask = y == c
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=9, alpha=0.7, color=cmap(c % cmap.N), label=name)
    what = f"2-D PCA projection of the {codes.shape[1]}-D codes" if projected else f"{codes.shape[1]}-D codes"
    ax.set_title(f"Top-layer codes of {len(codes)} test examples ({what})", fontsize=11)
    ax.set_xlabel("principal component 1" if projected else "code unit 1")
    ax.set_ylabel("principal component 2" if projected else "code unit 2")
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, fontsize=9)
    ax.grid(alpha=0.3)
    save(fig, path)
    return f"Top-layer codes of the sample test examples, coloured by label ({what}; {source})."


def plot_latent_grid(ae: DeepAutoencoder, codes: np.ndarray, image_shape: tuple[int, int], path: Path,
                     source: str, n: int = 12) -> str:
    """Decode an n x n grid spanning the 1st..99th percentile of each of the two code units."""
    lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
    u, v = np.linspace(lo[0], hi[0], n), np.linspace(hi[1], lo[1], n)   # top row = high code 2
    grid = np.array([[a, b] for b in v for a in u], dtype=np.float32)
    images = decode(ae, grid).reshape(-1, *image_shape)
    fig = new_figure(6.4, 6.4)
    ax = fig.add_subplot()
    ax.imshow(tile(images, n), cmap="gray", vmin=0, vmax=1, extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto")
    ax.set_xlabel("code unit 1")
    ax.set_ylabel("code unit 2")
    ax.set_title(f"Decoded {n}×{n} grid over the 2-D code plane", fontsize=11)
    save(fig, path)
    return (f"Images decoded from a grid of points of the 2-D code plane (1st to 99th percentile of each "
            f"unit; {source}).")


def plot_interpolations(ae: DeepAutoencoder, codes: np.ndarray, y: np.ndarray, classes: list[str],
                        image_shape: tuple[int, int], path: Path, source: str) -> str:
    """Rows: decoded straight lines between the mean codes of consecutive classes."""
    present = [c for c in range(len(classes)) if (y == c).any()]
    pairs = list(zip(present, present[1:], strict=False))[:6]
    steps = np.linspace(0.0, 1.0, N_INTERPOLATION_STEPS)[:, None]
    means = {c: codes[y == c].mean(0) for c in present}
    lines = np.concatenate([(1 - steps) * means[a] + steps * means[b] for a, b in pairs]).astype(np.float32)
    images = decode(ae, lines).reshape(-1, *image_shape)
    h = image_shape[0]
    fig = new_figure(1.2 + 0.7 * N_INTERPOLATION_STEPS, 1.1 + 0.7 * len(pairs))
    ax = fig.add_subplot()
    ax.imshow(tile(images, N_INTERPOLATION_STEPS), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([r * (h + 1) + h / 2 - 0.5 for r in range(len(pairs))],
                  [f"{classes[a]} → {classes[b]}" for a, b in pairs])
    ax.set_xticks([])
    ax.set_xlabel(f"interpolation from the first class mean to the second ({N_INTERPOLATION_STEPS} steps)")
    ax.set_title(f"Decoded interpolations between class means of the {codes.shape[1]}-D codes", fontsize=11)
    save(fig, path)
    return f"Images decoded along straight lines between the mean codes of two classes ({source})."


def plot_reconstructions(X: np.ndarray, rows: dict[str, np.ndarray], image_shape: tuple[int, int],
                         path: Path) -> str:
    """First row the originals, then one row of reconstructions per model."""
    labels = ["original", *rows]
    images = np.concatenate([X, *rows.values()]).reshape(-1, *image_shape)
    h = image_shape[0]
    fig = new_figure(2.4 + 0.7 * len(X), 0.9 + 0.7 * len(labels))
    ax = fig.add_subplot()
    ax.imshow(tile(images, len(X)), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([r * (h + 1) + h / 2 - 0.5 for r in range(len(labels))], labels)
    ax.set_xticks([])
    ax.set_xlabel(f"{len(X)} test examples")
    ax.set_title("Test images and their reconstructions by the unrolled autoencoder", fontsize=11)
    save(fig, path)
    return "Test images (top row) beside their reconstructions by the deep autoencoder (" + \
        "; ".join(rows) + ")."


def plot_filters(weight: np.ndarray, image_shape: tuple[int, int], path: Path, source: str,
                 kernels: bool = False) -> str:
    """First-layer encoder weight rows as images, each scaled to its own range (`kernels`: a conv layer's
    kernels, one row per output map)."""
    shown = weight[:MAX_FILTERS]
    lo, hi = shown.min(1, keepdims=True), shown.max(1, keepdims=True)
    images = ((shown - lo) / np.where(hi > lo, hi - lo, 1.0)).reshape(-1, *image_shape)
    ncols = int(np.ceil(np.sqrt(len(images))))
    fig = new_figure(6.0, 6.0 * (-(-len(images) // ncols)) / ncols + 0.5)
    ax = fig.add_subplot()
    ax.imshow(tile(images, ncols), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if kernels:
        size = "x".join(map(str, image_shape))
        ax.set_title(f"First-layer kernels: {len(shown)} of {len(weight)} maps, {size}", fontsize=11)
        save(fig, path)
        return (f"The {size} kernels of the first {len(shown)} of {len(weight)} maps of the first conv layer "
                f"(first input channel), each scaled from its own minimum (black) to maximum (white) ({source}).")
    ax.set_title(f"First-layer filters: {len(shown)} of {len(weight)} units", fontsize=11)
    save(fig, path)
    return (f"Weights into the first {len(shown)} of {len(weight)} first-layer units, drawn as images, "
            f"each scaled from its own minimum (black) to maximum (white) ({source}).")
