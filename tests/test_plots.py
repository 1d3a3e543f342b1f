"""Figures: mosaics, completion grids, learning curves, atomic PNG writes (Agg backend, no display)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from scratchnade import plots  # noqa: E402
from scratchnade.backend import to_device  # noqa: E402
from scratchnade.train import History  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def binary_images(rng, n, d=784):
    return (rng.random((n, d)) < 0.3).astype(np.uint8)


def test_tile_images_layout(rng):
    x = rng.random((7, 12))                                 # 7 images of 3 x 4
    grid = plots.tile_images(x, shape=(3, 4), ncols=3, pad=1, pad_value=0.5)
    assert grid.shape == (3 * 4 + 1, 3 * 5 + 1)             # rows = ceil(7 / 3) = 3
    for k in range(7):
        r, c = divmod(k, 3)
        assert np.array_equal(grid[1 + r * 4:1 + r * 4 + 3, 1 + c * 5:1 + c * 5 + 4], x[k].reshape(3, 4))
    assert np.all(grid[9:12, 6:15] == 0.5)                  # the two unused tiles of the last row
    assert np.all(grid[0] == 0.5) and np.all(grid[:, 0] == 0.5)
    assert plots.tile_images(x.reshape(7, 3, 4), shape=(3, 4), ncols=10).shape == (5, 7 * 5 + 1)
    with pytest.raises(ValueError, match="no images"):
        plots.tile_images(np.zeros((0, 12)), shape=(3, 4))


def test_image_grid(rng, fake_device):
    x = binary_images(rng, 23)
    fig = plots.image_grid(to_device(x, fake_device), ncols=10, title="data")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.get_title() == "data"
    shown = ax.images[0].get_array()
    assert shown.shape == (3 * 29 + 1, 10 * 29 + 1)
    assert np.array_equal(shown[1:29, 1:29], x[0].reshape(28, 28))
    own = Figure()
    ax0, ax1 = own.subplots(1, 2)
    assert plots.image_grid(x[:4], ax=ax1) is own           # draws into the caller's axes
    assert len(ax1.images) == 1 and len(ax0.images) == 0


@pytest.mark.parametrize("K", [1, 3])
def test_completion_grid(rng, K):
    N = 7
    x = binary_images(rng, N)
    y = binary_images(rng, N * K).reshape(N, K, 784) if K > 1 else binary_images(rng, N)
    fig = plots.completion_grid(x, y, n_given_rows=10, groups_per_row=2)
    ax, = fig.axes
    shown = ax.images[0].get_array()
    per_row = 2 * (K + 1)                                   # tiles per mosaic row
    assert shown.shape == (4 * 29 + 1, per_row * 29 + 1)    # ceil(7 / 2) = 4 rows of groups
    assert np.array_equal(shown[1:29, 1:29], x[0].reshape(28, 28))          # group 0: original first
    assert np.array_equal(shown[1:29, 30:58], y.reshape(N, K, 784)[0, 0].reshape(28, 28))
    red, sep = ax.collections                              # given-rows lines, group separators
    segments = red.get_segments()
    assert len(segments) == N
    (x0, y0), (x1, y1) = segments[0]
    assert y0 == y1 == 1 + 10 - 0.5 and x0 == 0.5 and x1 == 0.5 + (K + 1) * 29 - 1
    assert segments[3][0][1] == 1 + 29 + 10 - 0.5          # group 3 sits in mosaic row 1
    assert len(sep.get_segments()) == 3                     # one between the two groups of rows 0..2


def test_learning_curves():
    h = {"epoch": [1, 2, 3, 4], "train_loss": [100.0, 95.0, 92.0, 90.0],
         "valid_loss": [101.0, 96.0, 97.0, 99.0]}
    ax, = plots.learning_curves(h, title="NADE").axes
    train, valid, best = ax.lines
    assert list(train.get_ydata()) == h["train_loss"] and list(valid.get_xdata()) == h["epoch"]
    assert list(best.get_xdata()) == [2] and list(best.get_ydata()) == [96.0]
    assert ax.get_title() == "NADE" and ax.get_xlabel() == "epoch"
    no_valid = History(epoch=[1, 2], train_loss=[3.0, 2.0], valid_loss=[None, None])
    ax, = plots.learning_curves(no_valid).axes
    assert len(ax.lines) == 1


def test_save_figure_png(tmp_path, rng):
    fig = plots.image_grid(binary_images(rng, 5))
    path = plots.save_figure(fig, tmp_path / "figs" / "grid.png")
    assert path == tmp_path / "figs" / "grid.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]     # no temporary file left
    fig, ax = plt.subplots()                                # a pyplot figure is closed after saving
    plots.learning_curves({"epoch": [1], "train_loss": [1.0], "valid_loss": [2.0]}, ax=ax)
    plots.save_figure(fig, tmp_path / "curves.png")
    assert not plt.fignum_exists(fig.number)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- layout: nothing clipped or covered

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from scratchnade.sampling import Curve, KStepError, PositionNLL, ar_k_step_error_closed_form  # noqa: E402


def _drawn_texts(fig):
    """Every visible non-empty Text of `fig` that is drawn (not the labels of ticks outside the view)."""
    ticks = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((tick.label1, tick.label2))
                if lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):
                    yield from (t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text())
    yield from (t for t in fig.findobj(Text) if t not in ticks and t.get_visible() and t.get_text())


def _line_points(line):
    """Display coordinates of a line's vertices, and of 50 points along each segment if it has any."""
    v = line.get_transform().transform_path(line.get_path()).vertices
    if line.get_linestyle() not in ("None", "none", "", " ") and len(v) > 1:
        f = np.linspace(0, 1, 50)[:, None, None]
        v = (v[:-1] + f * (v[1:] - v[:-1])).reshape(-1, 2)
    return v


def layout_problems(fig):
    """What a reader would see wrong once `fig` is drawn: text cut off by the figure's edge, a
    legend outside the figure or over a curve, a tick label or an axis label; a shaded band the
    legend does not explain.  [] when all is well."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    inside = lambda e: e.x0 >= -1 and e.y0 >= -1 and e.x1 <= W + 1 and e.y1 <= H + 1   # noqa: E731
    texts = list(_drawn_texts(fig))
    out = [f"clipped: {t.get_text()!r}" for t in texts if not inside(t.get_window_extent(r))]
    for ax in fig.axes:
        legend = ax.get_legend()
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        if legend is None:
            out += ["a shaded band and no legend"] if bands else []
            continue
        box = legend.get_window_extent(r)
        if not inside(box):
            out.append("legend outside the figure")
        said = " ".join(t.get_text() for t in legend.get_texts() + [legend.get_title()])
        if bands and not any(w in said for w in ("standard error", "s.e.", "min-max", "band")):
            out.append(f"{len(bands)} shaded bands the legend does not name: {said!r}")
        own = {ax.xaxis.label, ax.yaxis.label, ax.title, *ax.get_xticklabels(), *ax.get_yticklabels()}
        out += [f"legend covers the text {t.get_text()!r}" for t in texts
                if t in own and box.overlaps(t.get_window_extent(r))]
        for line in ax.lines:
            xy = _line_points(line)
            hit = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
            if hit.any():
                out.append(f"legend covers {int(hit.sum())} points of {line.get_label()!r}")
    return out


def k_step_result(K=30, rho=0.9, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    cf = ar_k_step_error_closed_form(np.array([rho]), sigma, K)
    noisy = lambda: cf * (1 + 0.05 * rng.standard_normal(K))   # noqa: E731
    return KStepError(np.arange(1, K + 1), np.full(K, sigma ** 2), noisy(), noisy(), sigma ** 2 / (1 - rho ** 2),
                      1000), cf


def position_result(L=200, prompt_len=20, n=64, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(1, L + 1)
    base = 2.0 + 0.1 * rng.standard_normal(L)
    drift = np.where(t > prompt_len, np.linspace(0, 1.0, L), 0.0)
    return PositionNLL(t, base - 0.2, base, base + drift, base - 0.5, np.full(L, 0.05), np.full(L, 0.08),
                       prompt_len, np.zeros((L, n), dtype=np.int64), np.zeros((L, n), dtype=np.int64))


def _in_subplots(draw, n=3, size=(15, 4)):
    fig = Figure(figsize=size, layout="constrained")
    for i, ax in enumerate(np.atleast_1d(fig.subplots(1, n))):
        draw(ax, i)
    fig.suptitle("a figure title of a fair length: 256 samples of 200 tokens (T = 1)")
    return fig


LONG = "RecurrentNADE on shakespeare-char, H = 512, Adam lr 0.003: the top 14 rows are real, the rest sampled"
T_BINS = np.arange(8, 200, 16) + 0.5
FIGURES = {
    "image_grid, 1 image, long title": lambda rng: plots.image_grid(rng.random((1, 784)), title=LONG),
    "image_grid, 2 images": lambda rng: plots.image_grid(rng.random((2, 784)), title="RecurrentNADE samples (T = 0.8)"),
    "image_grid, 30 images": lambda rng: plots.image_grid(rng.random((30, 784)), title="NADE samples (T = 1)"),
    "image_grid, bit vectors": lambda rng: plots.image_grid(rng.random((8, 16)), shape=(1, 16), title="FVSBN samples"),
    "completion_grid, 1 group": lambda rng: plots.completion_grid(rng.random((1, 784)), rng.random((1, 784)),
                                                                title=LONG),
    "completion_grid, 10 groups": lambda rng: plots.completion_grid(rng.random((10, 784)), rng.random((10, 3, 784)),
                                                                  title="NADE: top 14 rows given, 3 completions"),
    "learning_curves, long title": lambda rng: plots.learning_curves(
        {"epoch": list(range(1, 21)), "train_loss": list(100 * np.exp(-np.arange(20) / 5) + 88),
         "valid_loss": list(100 * np.exp(-np.arange(20) / 5) + 90 + 0.05 * np.arange(20) ** 1.5)}, title=LONG),
    "learning_curves, overfitting, entropy": lambda rng: plots.learning_curves(
        {"epoch": list(range(1, 31)), "train_loss": list(3 * np.exp(-np.arange(30) / 6) + 1.0),
         "valid_loss": list(3 * np.exp(-np.arange(30) / 6) + 1.2 + 0.002 * np.arange(30) ** 2)},
        reference=(1.1, "true entropy 1.10"), title="overfit"),
    "k_step_errors": lambda rng: plots.k_step_errors(
        *k_step_result(), title="AR(1) on ar-synthetic: " + plots.format_values("rho", [0.9])),
    "k_step_errors, two small axes": lambda rng: _in_subplots(
        lambda ax, i: plots.k_step_errors(*k_step_result(K=10, seed=i), title=LONG, ax=ax), n=2, size=(9, 4)),
    "position_nll_curves, prompt": lambda rng: plots.position_nll_curves(position_result(), smooth=5, title=LONG),
    "position_nll_curves, no prompt": lambda rng: plots.position_nll_curves(position_result(prompt_len=0)),
    "position_curves, three axes": lambda rng: _in_subplots(lambda ax, i: plots.position_curves(
        {"model samples": Curve(T_BINS, 0.3 + 0.001 * i * np.arange(12) ** 2),
         "training windows (finite-sample floor)": Curve(T_BINS, np.full(12, 0.27)),
         "test windows": Curve(T_BINS, np.full(12, 0.285))},
        "total variation to the training bigrams", title=f"bigram drift, bins of 16, panel {i} of a long row", ax=ax)),
    "teacher_forcing_schedules": lambda rng: plots.teacher_forcing_schedules(1000, title="scheduled sampling"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_with_nothing_clipped_or_covered(name, rng, tmp_path):
    """Each figure function, drawn at the sizes it meets (a mosaic of one image with a long title,
    panels of a wide figure, legends of five entries): no text cut off, no legend over a curve or a
    label, every shaded band named.  Writes the PNG too (look at them: tmp_path)."""
    fig = FIGURES[name](rng)
    assert layout_problems(fig) == []
    path = plots.save_figure(fig, tmp_path / (name.replace(",", "").replace(" ", "_") + ".png"))
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_the_layout_check_sees_clipping_legends_and_bands():
    """layout_problems itself: a title wider than its figure, a legend over a curve, an unnamed band."""
    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    ax.set_title("a title far wider than a two-inch figure can show")
    x = np.linspace(0, 1, 20)
    ax.plot(x, x, label="diagonal")
    ax.fill_between(x, x - 0.1, x + 0.1, alpha=0.2)
    ax.legend(loc="center")
    problems = " | ".join(layout_problems(fig))
    assert "clipped: 'a title far wider" in problems
    assert "legend covers" in problems and "points of 'diagonal'" in problems
    assert "shaded bands the legend does not name" in problems


def test_position_nll_bands_are_in_the_legend():
    fig = plots.position_nll_curves(position_result(n=64), reference="trigram")
    ax, = fig.axes
    legend = ax.get_legend()
    assert "\u00b12 standard errors of the mean over 64 windows" in legend.get_title().get_text()
    assert [t.get_text() for t in legend.get_texts()][:2] == ["trigram on real text", "trigram on the model's samples"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2


@pytest.mark.parametrize("values, text", [
    (0.799, "rho = 0.799"), ([0.799], "rho = 0.799"), (np.array([0.7994]), "rho = 0.799"),
    (np.array([0.5, -0.2]), "rho = (0.500, -0.200)"), ([[1.0, 2.0]], "rho = (1.000, 2.000)"),
])
def test_format_values_never_wraps_one_value_in_parentheses(values, text):
    assert plots.format_values("rho", values) == text


def test_format_values_on_the_fake_device(fake_device):
    assert plots.format_values("sigma", to_device(np.array([0.5]), fake_device), digits=2) == "sigma = 0.50"


@pytest.mark.parametrize("text, width, fontsize", [(LONG, 2.0, 12), (LONG, 6.0, 10), ("short", 1.0, 12)])
def test_wrap_text_fits_the_width(text, width, fontsize):
    fig = Figure(figsize=(width, 1))
    wrapped = plots.wrap_text(text, width, fontsize)
    assert wrapped.replace("\n", " ") == text
    t = fig.text(0, 0.5, wrapped, fontsize=fontsize)
    FigureCanvasAgg(fig)
    assert t.get_window_extent(fig.canvas.get_renderer()).width <= width * fig.dpi


@pytest.mark.parametrize("n", [1, 2, 30])
def test_a_small_mosaic_is_wide_enough_for_a_title(rng, n):
    fig = plots.image_grid(rng.random((n, 784)), title="NADE samples (T = 1)")
    assert fig.get_figwidth() >= plots.MIN_IMAGE_WIDTH
    assert "\n" not in fig.axes[0].get_title()                  # a short title stays on one line
