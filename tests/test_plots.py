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
