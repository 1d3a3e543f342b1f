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
from .scheduled_sampling import SCHEDULES, teacher_forcing_schedule

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


# ----------------------------------------------------------------------------- exposure bias

def _rolling_mean(y, w):
    """Centred moving average over `w` points (fewer at the ends); w = 1 returns y."""
    y = np.asarray(y, dtype=np.float64)
    if w <= 1:
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(y.size)
    lo, hi = np.maximum(0, i - w // 2), np.minimum(y.size, i - w // 2 + w)
    return (c[hi] - c[lo]) / (hi - lo)


def k_step_errors(result, closed_form=None, title=None, ax=None):
    """Free-running k-step error of an AR model against teacher forcing (the exact exposure-bias case).

    result : a sampling.KStepError (k, teacher_forced, free_running, sample_var, stationary_var)
    closed_form : (K,) sigma^2 (1 - rho^2k) / (1 - rho^2) from sampling.ar_k_step_error_closed_form
    Returns the Figure: markers for the two empirical curves, a line for the closed form, a
    dashed line at the one-step (teacher-forced) error and a dotted one at the stationary variance.
    """
    fig, ax = _axes(ax, figsize=(5.5, 3.8))
    k = np.asarray(result.k)
    ax.plot(k, result.free_running, "o", ms=4, label="free running: forecast fed its own predictions (MSE)")
    ax.plot(k, result.sample_var, "x", ms=5, label="free running: variance of sampled paths")
    if closed_form is not None:
        ax.plot(k, closed_form, "-", color="k", lw=1,
                label=r"closed form $\sigma^2(1-\rho^{2k})/(1-\rho^2)$")
    ax.plot(k, result.teacher_forced, "--", color="tab:green", label="teacher forced: one-step MSE")
    ax.axhline(result.stationary_var, color="grey", ls=":", label=r"stationary variance $\gamma_0$")
    ax.set_xlabel("steps ahead k (the model conditions on its own output for k - 1 steps)")
    ax.set_ylabel("squared error")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return fig


def position_nll_curves(result, smooth=1, reference="reference", title=None, ax=None):
    """NLL by position of real text and of a model's free-running samples.

    result : a sampling.PositionNLL
    smooth : centred moving average over this many positions (the curves are per-position
             means); the prompt and the sampled part are smoothed apart, so the jump stays sharp
    reference : name of the reference model in the legend (e.g. "4-gram")
    Returns the Figure: the model's teacher-forced NLL on real text, the reference's NLL on
    the same real text and on the model's samples (with +-2 standard-error bands), and the
    model's own NLL of its samples; a vertical line where a real prompt ends.
    """
    fig, ax = _axes(ax, figsize=(6, 4))
    t = np.asarray(result.t)
    cut = result.prompt_len

    def smoothed(y):
        y = np.asarray(y)
        return np.concatenate([_rolling_mean(y[:cut], smooth), _rolling_mean(y[cut:], smooth)])

    lines = (("reference_data", "reference_data_se", f"{reference} on real text", "k", "-"),
             ("reference_samples", "reference_samples_se", f"{reference} on the model's samples", "tab:red", "-"),
             ("model_data", None, "model on real text (teacher forced)", "tab:blue", "-"),
             ("model_samples", None, "model on its own samples", "tab:blue", "--"))
    for key, se_key, label, color, ls in lines:
        y = smoothed(getattr(result, key))
        ax.plot(t, y, ls, color=color, lw=1.2, label=label)
        if se_key is not None:
            se = smoothed(getattr(result, se_key)) / np.sqrt(max(1, smooth))
            ax.fill_between(t, y - 2 * se, y + 2 * se, color=color, alpha=0.15, lw=0)
    if result.prompt_len:
        ax.axvline(result.prompt_len + 0.5, color="grey", lw=1, ls=":", label="end of the real prompt")
    ax.set_xlabel("position t in the sequence")
    ax.set_ylabel("NLL (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left" if result.prompt_len >= 20 else "best")   # above a long prompt: empty
    if title:
        ax.set_title(title)
    return fig


def position_curves(curves, ylabel, title=None, ax=None):
    """Several statistics by position (drift, distinct-n ...), one line each.

    curves : dict label -> sampling.Curve (t, value), or -> (Curve, matplotlib format string)
    Returns the Figure.
    """
    fig, ax = _axes(ax, figsize=(5.5, 3.8))
    for label, c in curves.items():
        c, fmt = c if isinstance(c, tuple) and len(c) == 2 and isinstance(c[1], str) else (c, "-")
        ax.plot(c.t, c.value, fmt, marker=".", ms=4, label=label)
    ax.set_xlabel("position t (bin centre)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))   # below: flat curves fill the axes
    if title:
        ax.set_title(title)
    return fig


def teacher_forcing_schedules(n_steps, schedules=None, title=None, ax=None):
    """Scheduled sampling's eps_i (probability of feeding the real token) against training step i.

    schedules : dict label -> keyword dict of scheduled_sampling.teacher_forcing_schedule
                (kind, k, c, eps_min); default: the three kinds at their default k and c.
    Returns the Figure.
    """
    if schedules is None:
        schedules = {f"{kind} ({', '.join(f'{a} = {v:g}' for a, v in kw.items())})": {"kind": kind}
                     for kind, kw in SCHEDULES.items()}
    fig, ax = _axes(ax, figsize=(5.5, 3.5))
    i = np.arange(n_steps + 1)
    for label, kw in schedules.items():
        ax.plot(i, teacher_forcing_schedule(i=i, **kw), label=label)
    ax.set_xlabel("training step i")
    ax.set_ylabel(r"$\epsilon_i$ = P(feed the real token)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)   # below: no curve hidden
    if title:
        ax.set_title(title)
    return fig
