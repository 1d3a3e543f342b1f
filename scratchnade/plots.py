"""Matplotlib figures for the notebooks and the CLI: image grids, half-image completions, learning curves.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so nothing here opens a
window, needs a display, or piles up in pyplot's list of open figures: it works on a headless
server under any backend. Every function returns its Figure. In Jupyter a returned Figure shows
itself as the cell's value (or ``display(fig)``); in a script, :func:`save_figure` writes a PNG.
Pass ``ax=`` to draw into an axes of your own (e.g. from ``plt.subplots``); the function then
returns ``ax.figure``.

Arrays may live on any device: they are copied to the host with ``backend.asnumpy``.

Layout rules every function keeps (tests/test_plots.py renders each one and checks them):
titles and long labels are wrapped to the width they have, so nothing is clipped even on a
small image; a shaded band says what it is in the legend; a legend with many or long entries
sits outside the axes (below), a short one at "best" inside with a frame, never over a curve.
Numbers go into titles through :func:`format_values` ("rho = 0.799", "rho = (0.5, 0.2)").
"""
import sys
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.legend_handler import HandlerTuple
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from .backend import asnumpy
from .data.download import atomic_write
from .scheduled_sampling import SCHEDULES, teacher_forcing_schedule

PAD_VALUE = 0.5   # grey separators between tiles, distinct from black (0) and white (1) pixels
MIN_IMAGE_WIDTH = 2.5   # inches: a mosaic of one or two images still gets a readable title
CHAR_EM = 0.62          # width of an average character in ems (DejaVu Sans is about 0.56): wrapping margin
TITLE_SIZE = 12         # points (matplotlib's default axes title size)


def _axes(ax, figsize):
    """`ax` and its figure, or a fresh Figure with one axes of size `figsize` inches."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def format_values(name, values, digits=3):
    """``name = v`` for one value, ``name = (v1, v2)`` for several: "rho = 0.799", never "rho = (0.799)".

    values : a number or a 1-D sequence / array (any device); digits : decimals shown.
    """
    v = np.atleast_1d(asnumpy(values)).ravel().tolist()
    text = ", ".join(f"{x:.{digits}f}" for x in v)
    return f"{name} = {text}" if len(v) == 1 else f"{name} = ({text})"


def wrap_text(text, width_in, fontsize=TITLE_SIZE):
    """`text` with line breaks so that each line fits `width_in` inches at `fontsize` points.

    Existing line breaks are kept; a word longer than a line is broken.  Returns the text.
    """
    chars = max(8, int(width_in * 72 / (fontsize * CHAR_EM)))
    return "\n".join(textwrap.fill(line, chars) if line else line for line in str(text).split("\n"))


def _width_in(ax):
    """Inches a title or x label of `ax` may span: its cell of the figure's grid (the whole figure
    for a lone axes), less a margin; the axes' own width for axes placed by hand."""
    spec = ax.get_subplotspec()
    if spec is None:
        return ax.get_position().width * ax.figure.get_figwidth()
    ncols = spec.get_gridspec().ncols
    cols = spec.colspan
    return ax.figure.get_figwidth() * (cols.stop - cols.start) / ncols - 0.3


def _title(ax, title, fontsize=TITLE_SIZE):
    """Set the axes title wrapped to the axes width; returns the number of lines (0 without a title)."""
    if not title:
        return 0
    text = wrap_text(title, _width_in(ax), fontsize)
    ax.set_title(text, fontsize=fontsize)
    return text.count("\n") + 1


def _image_figure(ax, grid, title, extra_lines=0, extra_size=8):
    """Figure and axes for a mosaic `grid`: 30 pixels an inch, at least MIN_IMAGE_WIDTH wide, with
    room for the wrapped title and `extra_lines` of `extra_size`-point text (an x label)."""
    width = max(grid.shape[1] / 30, MIN_IMAGE_WIDTH)
    lines = wrap_text(title, width - 0.3).count("\n") + 1 if title else 0
    image = (width - 0.1) * grid.shape[0] / grid.shape[1]       # the mosaic fills the width, aspect kept
    height = image + 0.15 + lines * TITLE_SIZE * 1.45 / 72 + extra_lines * extra_size * 1.5 / 72
    if ax is not None:
        return ax.figure, ax
    fig, ax = _axes(None, figsize=(width, height))
    ax.set_anchor("S")      # any slack of the fixed-aspect image goes above it, where the title is
    return fig, ax


def _legend_below(ax, ncol=1, fontsize=7, **kw):
    """A framed legend under the axes, below its tick labels and x label: it covers no curve and no text.

    Call it after the x label is set: the gap is measured in points from the label's lines and
    font sizes, so it holds for any axes height.
    """
    label = ax.xaxis.label
    lines = label.get_text().count("\n") + 1 if label.get_text() else 0
    ticks = ax.xaxis.get_ticklabels()
    tick_size = ticks[0].get_fontsize() if ticks else rcParams["xtick.labelsize"]
    tick_size = FontProperties(size=tick_size).get_size_in_points()
    gap = (rcParams["xtick.major.size"] + rcParams["xtick.major.pad"] + 1.25 * tick_size
           + rcParams["axes.labelpad"] + 1.25 * lines * label.get_fontsize() + 4)
    anchor = offset_copy(ax.transAxes, fig=ax.figure, y=-gap, units="points")
    return ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=anchor,
                     ncol=ncol, frameon=True, **kw)


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
    """Draw a mosaic on `ax` in greys (0 black, 1 white), without ticks; the title wrapped to fit."""
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    _title(ax, title)


def image_grid(images, shape=(28, 28), ncols=10, title=None, ax=None):
    """A grid of binary images or pixel probabilities, drawn as one mosaic.

    images : (N, 784) host or device array (or (N, h, w)), values in [0, 1]: data, samples, or the
             probabilities p(x_i = 1 | x_<i) / weights of one hidden unit rescaled to [0, 1]
    shape : (h, w) of one image
    ncols : images per row
    Returns the Figure (one axes, one image: the (rows, ncols) mosaic of :func:`tile_images`).
    """
    grid = tile_images(images, shape, ncols)
    fig, ax = _image_figure(ax, grid, title)
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
    xlabel = (f"each group: original, then {K} completion{'s' if K > 1 else ''}; "
              f"above the red line: the {n_given_rows} given rows")
    width = max(grid.shape[1] / 30, MIN_IMAGE_WIDTH)
    fig, ax = _image_figure(ax, grid, title, wrap_text(xlabel, width - 0.3, 8).count("\n") + 1)
    _show(ax, grid, title)
    r, c = divmod(np.arange(x.shape[0]), per_row)                                # mosaic row / group slot of each group
    y_line = pad + r * (h + pad) + n_given_rows - 0.5            # last given row | first sampled row
    x0 = pad + c * (K + 1) * (w + pad) - 0.5                     # left edge of the group's first tile
    ax.hlines(y_line, x0, x0 + (K + 1) * (w + pad) - pad, colors="red", linewidth=1)
    inner = c > 0                                                # groups with a neighbour on their left
    x_sep = c[inner] * (K + 1) * (w + pad) + (pad - 1) / 2      # the pad column between two groups
    ax.vlines(x_sep, r[inner] * (h + pad) - 0.5, (r[inner] + 1) * (h + pad) + pad - 0.5,
              colors="tab:orange", linewidth=3)
    ax.set_xlabel(wrap_text(xlabel, _width_in(ax), 8), fontsize=8)
    return fig


def learning_curves(history, title=None, ylabel="NLL (nats)", ax=None, reference=None):
    """Training and validation loss against epoch, with the best validation epoch marked.

    history : dict with lists 'epoch', 'train_loss' and 'valid_loss' (None entries, e.g. no
              validation, are skipped), or a train.History (anything with to_dict())
    reference : optional (value, label): a dashed horizontal line, e.g. (entropy, "true entropy 1.23")
    Returns the Figure (one axes; a line per curve present).  The legend sits at "best" with a
    frame (the curves fall from the top left, so it finds an empty corner).
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
    if reference is not None:
        ax.axhline(reference[0], color="k", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", frameon=True, framealpha=0.9)
    _title(ax, title)
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
    dashed line at the one-step (teacher-forced) error and a dotted one at the stationary variance;
    the legend below the axes.  Put numbers in the title with :func:`format_values`.
    """
    fig, ax = _axes(ax, figsize=(5.5, 4.8))
    k = np.asarray(result.k)
    ax.plot(k, result.free_running, "o", ms=4, label="free running: forecast fed its own predictions (MSE)")
    ax.plot(k, result.sample_var, "x", ms=5, label="free running: variance of sampled paths")
    if closed_form is not None:
        ax.plot(k, closed_form, "-", color="k", lw=1,
                label=r"closed form $\sigma^2(1-\rho^{2k})/(1-\rho^2)$")
    ax.plot(k, result.teacher_forced, "--", color="tab:green", label="teacher forced: one-step MSE")
    ax.axhline(result.stationary_var, color="grey", ls=":", label=r"stationary variance $\gamma_0$")
    ax.set_xlabel(wrap_text("steps ahead k (the model conditions on its own output for k - 1 steps)",
                            _width_in(ax), FontProperties(size=rcParams["axes.labelsize"]).get_size_in_points()))
    ax.set_ylabel("squared error")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _legend_below(ax)
    _title(ax, title)
    return fig


def position_nll_curves(result, smooth=1, reference="reference", title=None, ax=None):
    """NLL by position of real text and of a model's free-running samples.

    result : a sampling.PositionNLL
    smooth : centred moving average over this many positions (the curves are per-position
             means); the prompt and the sampled part are smoothed apart, so the jump stays sharp
    reference : name of the reference model in the legend (e.g. "4-gram")
    Returns the Figure: the model's teacher-forced NLL on real text, the reference's NLL on
    the same real text and on the model's samples (each with a shaded band of +-2 standard
    errors of the mean over the n windows, named in the legend), and the model's own NLL of its
    samples; a vertical line where a real prompt ends.  The legend sits below the axes.
    """
    fig, ax = _axes(ax, figsize=(6, 5))
    t = np.asarray(result.t)
    cut = result.prompt_len

    def smoothed(y):
        y = np.asarray(y)
        return np.concatenate([_rolling_mean(y[:cut], smooth), _rolling_mean(y[cut:], smooth)])

    lines = (("reference_data", "reference_data_se", f"{reference} on real text", "k", "-"),
             ("reference_samples", "reference_samples_se", f"{reference} on the model's samples", "tab:red", "-"),
             ("model_data", None, "model on real text (teacher forced)", "tab:blue", "-"),
             ("model_samples", None, "model on its own samples", "tab:blue", "--"))
    n = result.real.shape[1] if getattr(result, "real", None) is not None else None
    band = f"shaded bands: \u00b12 standard errors of the mean over {'the' if n is None else f'{n:,}'} windows"
    handles, labels = [], []
    for key, se_key, label, color, ls in lines:
        y = smoothed(getattr(result, key))
        line, = ax.plot(t, y, ls, color=color, lw=1.2)
        handle = line
        if se_key is not None:
            se = smoothed(getattr(result, se_key)) / np.sqrt(max(1, smooth))
            ax.fill_between(t, y - 2 * se, y + 2 * se, color=color, alpha=0.15, lw=0)
            handle = (Patch(color=color, alpha=0.15, lw=0), line)      # the entry shows the band
        handles.append(handle)
        labels.append(label)
    if result.prompt_len:
        handles.append(ax.axvline(result.prompt_len + 0.5, color="grey", lw=1, ls=":"))
        labels.append("end of the real prompt")
    ax.set_xlabel("position t in the sequence")
    ax.set_ylabel("NLL (nats per token)")
    ax.grid(alpha=0.3)
    _legend_below(ax, ncol=2, handles=handles, labels=labels, handler_map={tuple: HandlerTuple(ndivide=1)},
                  title=band, title_fontsize=7)
    _title(ax, title)
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
    _legend_below(ax)                                   # below: flat curves fill the axes
    _title(ax, title)
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
    _legend_below(ax, ncol=2)                           # below: no curve hidden
    _title(ax, title)
    return fig
