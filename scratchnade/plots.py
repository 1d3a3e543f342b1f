"""Matplotlib figures for the notebooks and the CLI: image grids, half-image completions, learning curves.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so nothing here opens a
window, needs a display, or piles up in pyplot's list of open figures: it works on a headless
server under any backend. Every function returns its Figure. In Jupyter a returned Figure shows
itself as the cell's value (or ``display(fig)``); in a script, :func:`save_figure` writes a PNG.
Pass ``ax=`` to draw into an axes of your own (e.g. from ``plt.subplots``); the function then
returns ``ax.figure``.

Arrays may live on any device: they are copied to the host with ``backend.asnumpy``.
"""
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .backend import asnumpy
from .data.download import atomic_write

PAD_VALUE = 0.5   # grey separators between tiles, distinct from black (0) and white (1) pixels


def _axes(ax, figsize):
    """`ax` and its figure, or a fresh Figure with one axes of size `figsize` inches."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def tile_images(images, shape=(28, 28), ncols=10, pad=1, pad_value=PAD_VALUE):
    """One mosaic array of images laid out row by row, `pad` pixels of `pad_value` between them.

    images : (N, h*w) or (N, h, w) host or device array, values in [0, 1]
    returns (rows*(h+pad)+pad, ncols*(w+pad)+pad) float array with rows = ceil(N / ncols);
    tile k has its top-left pixel at (pad + (k // ncols)*(h+pad), pad + (k % ncols)*(w+pad)),
    and unused tiles of the last row are left at pad_value.
    """
    h, w = shape
    x = asnumpy(images).reshape(-1, h, w).astype(np.float64)   # (N, h, w)
    N = x.shape[0]
    if N == 0:
        raise ValueError("no images to tile")
    ncols = max(1, min(ncols, N))
    rows = -(-N // ncols)                                        # ceil
    tiles = np.full((rows * ncols, h + pad, w + pad), pad_value)
    tiles[:N, :h, :w] = x                                        # each tile: image, then pad below / right
    grid = tiles.reshape(rows, ncols, h + pad, w + pad).transpose(0, 2, 1, 3)
    grid = grid.reshape(rows * (h + pad), ncols * (w + pad))
    return np.pad(grid, ((pad, 0), (pad, 0)), constant_values=pad_value)


def _show(ax, grid, title):
    """Draw a mosaic on `ax` in greys (0 black, 1 white), without ticks."""
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def image_grid(images, shape=(28, 28), ncols=10, title=None, ax=None):
    """A grid of binary images or pixel probabilities, drawn as one mosaic.

    images : (N, 784) host or device array (or (N, h, w)), values in [0, 1]: data, samples, or the
             probabilities p(x_i = 1 | x_<i) / weights of one hidden unit rescaled to [0, 1]
    shape : (h, w) of one image
    ncols : images per row
    Returns the Figure (one axes, one image: the (rows, ncols) mosaic of :func:`tile_images`).
    """
    grid = tile_images(images, shape, ncols)
    fig, ax = _axes(ax, figsize=(grid.shape[1] / 30, grid.shape[0] / 30 + (0.4 if title else 0)))
    _show(ax, grid, title)
    return fig


def completion_grid(originals, completions, n_given_rows=14, shape=(28, 28), groups_per_row=None,
                    title=None, ax=None):
    """Half-image completions: each original followed by its completion(s), a red line under the given rows.

    originals : (N, 784) host or device array, the data images
    completions : (N, 784) or (N, K, 784): K completions of each original, whose first
                  n_given_rows * w pixels were given and the rest sampled from the model
    n_given_rows : image rows given to the model (14 = the top half of a 28 x 28 image)
    groups_per_row : (original, K completions) groups per mosaic row (default: about 10 tiles a row)
    Returns the Figure: one mosaic image; one red line segment per group, drawn across the
    group's tiles at the bottom edge of the given rows; orange lines between neighbouring groups.
    """
    (h, w), pad = shape, 1
    x = asnumpy(originals).reshape(-1, 1, h * w)                 # (N, 1, D)
    y = asnumpy(completions).reshape(x.shape[0], -1, h * w)       # (N, K, D)
    K = y.shape[1]
    per_row = groups_per_row or max(1, 10 // (K + 1))
    tiles = np.concatenate([x, y], axis=1).reshape(-1, h * w)    # (N*(K+1), D): group by group
    grid = tile_images(tiles, shape, ncols=per_row * (K + 1), pad=pad)
    fig, ax = _axes(ax, figsize=(grid.shape[1] / 30, grid.shape[0] / 30 + 0.6))
    _show(ax, grid, title)
    r, c = divmod(np.arange(x.shape[0]), per_row)                                # mosaic row / group slot of each group
    y_line = pad + r * (h + pad) + n_given_rows - 0.5            # last given row | first sampled row
    x0 = pad + c * (K + 1) * (w + pad) - 0.5                     # left edge of the group's first tile
    ax.hlines(y_line, x0, x0 + (K + 1) * (w + pad) - pad, colors="red", linewidth=1)
    inner = c > 0                                                # groups with a neighbour on their left
    x_sep = c[inner] * (K + 1) * (w + pad) + (pad - 1) / 2      # the pad column between two groups
    ax.vlines(x_sep, r[inner] * (h + pad) - 0.5, (r[inner] + 1) * (h + pad) + pad - 0.5,
              colors="tab:orange", linewidth=3)
    ax.set_xlabel(f"each group: original, then {K} completion{'s' if K > 1 else ''}; "
                  f"above the red line: the {n_given_rows} given rows", fontsize=8)
    return fig


def learning_curves(history, title=None, ylabel="NLL (nats)", ax=None):
    """Training and validation loss against epoch, with the best validation epoch marked.

    history : dict with lists 'epoch', 'train_loss' and 'valid_loss' (None entries, e.g. no
              validation, are skipped), or a train.History (anything with to_dict())
    Returns the Figure (one axes; a line per curve present).
    """
    h = history.to_dict() if hasattr(history, "to_dict") else history
    fig, ax = _axes(ax, figsize=(5, 3.5))
    for key, label in (("train_loss", "train"), ("valid_loss", "valid")):
        pts = [(e, v) for e, v in zip(h["epoch"], h.get(key) or []) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=label)
    valid = [(v, e) for e, v in zip(h["epoch"], h.get("valid_loss") or []) if v is not None]
    if valid:
        v, e = min(valid)
        ax.plot([e], [v], "o", mfc="none", color="k", label=f"best valid {v:.2f} (epoch {e})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def save_figure(fig, path, dpi=100):
    """Write `fig` to `path` (PNG unless the suffix says otherwise) via a temporary file, then close it.

    The image is written next to `path` and renamed into place, so a crash never leaves a
    half-written file. Returns the Path.
    """
    fmt = Path(path).suffix[1:].lower() or "png"
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")            # a figure from plt.subplots is
        if pyplot is not None:                                   # registered there: free it
            pyplot.close(fig)
