"""Divergence is more than NaN (issue 15, item 5): the growth rule, Gaussian AR steps out of the
stationary region, NaN data refused at load, and the last good checkpoint kept on resume."""
import math

import numpy as np
import pytest

from scratchnade.cli import main
from scratchnade.checkpoint import load_checkpoint
from scratchnade.models.gaussian_ar import LinearGaussianAR, NonStationaryError, conditional_mle
from scratchnade.models.nade import NADE
from scratchnade.optim import SGD, Adam
from scratchnade.registry import build_model, load_data, model_spec
from scratchnade.runs import RunState, build_optimizer, restore, save_run, train_loop
from scratchnade.train import Divergence, TrainingDiverged, fit


# ----------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("first, best, limit", [
    (100.0, 90.0, 90 + 100 * 90),            # positive NLL: scale |best|
    (-20.0, -50.0, -50 + 100 * 50),          # negative NLL (Gaussian AR): scale |best|
    (1000.0, -5.0, -5 + 100 * 1005),         # trained far down: scale first - best
    (0.02, 0.01, 0.01 + 100 * 1),            # near 0: scale at least 1
    (0.5, -0.001, -0.001 + 100 * 1),         # crossing 0: scale at least 1
])
def test_limit_is_best_plus_factor_times_scale(first, best, limit):
    d = Divergence(100, first=first, best=best)
    assert d.limit() == pytest.approx(limit)
    assert d.check(limit - 1e-6 * abs(limit) - 1e-9) is None
    assert d.best == best and d.first == first
    why = d.check(limit + 1e-6 * abs(limit) + 1e-6)
    assert why and "more than 100 x its scale above its best" in why


def test_the_record_follows_the_losses_and_factor_0_is_off():
    d = Divergence(10)
    assert d.limit() == math.inf
    for loss in (5.0, 3.0, 4.0, -2.0):
        assert d.check(loss) is None
    assert (d.first, d.best) == (5.0, -2.0) and d.limit() == -2 + 10 * 7
    assert d.check(68.1) is not None and d.best == -2.0                        # a refused loss is not recorded
    off = Divergence(0, first=1.0, best=1.0)
    assert off.limit() == math.inf and off.check(1e30) is None
    assert Divergence(None).check(1e30) is None
    for bad in (-1, math.nan, math.inf, "100"):
        with pytest.raises(ValueError, match="diverge_factor"):
            Divergence(bad)


# ----------------------------------------------------------------------------- fit

class Scripted:
    """A model whose step losses follow a script; its one parameter counts the updates applied."""

    def __init__(self, losses):
        self.losses, self.calls = list(losses), 0
        self.params = {"w": np.zeros(1)}

    def loss_and_grads(self, batch):
        loss = self.losses[self.calls]
        self.calls += 1
        return loss, {"w": np.ones(1)}


class CountingSGD:
    lr = 1.0

    def step(self, params, grads):
        params["w"] += 1.0


@pytest.mark.parametrize("losses, bad", [([90.0, 80.0, 70.0, 7071.0], 7071.0),        # 70 + 100 x 70 = 7070
                                         ([-40.0, -50.0, -45.0, 4951.0], 4951.0),     # -50 + 100 x 50 = 4950
                                         ([0.3, 0.01, 0.02, 100.02], 100.02)])        # 0.01 + 100 x 1
def test_fit_stops_a_loss_grown_by_orders_of_magnitude(losses, bad):
    model = Scripted(losses)
    with pytest.raises(TrainingDiverged, match=r"training loss .* is more than 100 x its scale.*epoch 2, step 4 "
                                               r"\(step 2 of the epoch\)") as info:
        fit(model, [0, 0], None, CountingSGD(), epochs=2, progress=False)
    assert info.value.history.stop_reason == "diverged" and info.value.step == 4
    assert f"{bad:.6g}" in str(info.value) and "learning rate" in str(info.value)
    assert model.params["w"][0] == 3                                           # the bad update is not applied
    model = Scripted(losses)
    h = fit(model, [0, 0], None, CountingSGD(), epochs=2, progress=False, diverge_factor=0)    # off
    assert h.epoch == [1, 2] and model.params["w"][0] == 4
    model = Scripted(losses[:1] + [losses[-1]])
    guard = Divergence(100, first=losses[0], best=min(losses[:3]))             # carried over from earlier calls
    with pytest.raises(TrainingDiverged, match="epoch 1, step 2"):
        fit(model, [0, 0], None, CountingSGD(), epochs=1, progress=False, divergence=guard)


class NaNData:
    """Mean of the batch as the loss: NaN exactly when the batch holds NaN."""
    params = {"w": np.zeros(1)}

    def loss_and_grads(self, batch):
        return float(np.mean(batch)), {"w": np.zeros(1)}


def test_a_nan_loss_from_nan_data_blames_the_data_not_the_learning_rate():
    good, bad = np.ones((2, 3)), np.array([[1.0, np.nan, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(TrainingDiverged, match="the batch holds NaN or inf values: check the data") as info:
        fit(NaNData(), [good, bad], None, CountingSGD(), epochs=1, progress=False)
    assert "learning rate" not in str(info.value)
    with pytest.raises(TrainingDiverged, match="the batch holds NaN"):
        fit(NaNData(), [(good, good), (bad, good)], None, CountingSGD(), epochs=1, progress=False)
    model = Scripted([1.0, math.nan])                                           # finite data, NaN loss
    with pytest.raises(TrainingDiverged, match="try a smaller learning rate") as info:
        fit(model, [good, good], None, CountingSGD(), epochs=1, progress=False)
    assert "batch holds" not in str(info.value)


# ----------------------------------------------------------------------------- the Gaussian AR

def ar_data(rho=0.9, n=20, T=50, seed=0):
    return LinearGaussianAR(p=1, rho=[rho], dtype=np.float64).sample(n, T, seed=seed)


def test_a_gaussian_ar_step_out_of_the_stationary_region_is_divergence():
    model = LinearGaussianAR(p=1, dtype=np.float64)
    x = ar_data()
    with pytest.raises(TrainingDiverged, match=r"left the model's domain \(rho = \[1\.04.*\] is not stationary.* "
                                               r"at epoch 3, step 3") as info:
        fit(model, [x], None, Adam(lr=0.6), epochs=3, progress=False)      # rho 0 -> 0.6 -> 1.04
    assert isinstance(info.value.__cause__, NonStationaryError)
    assert info.value.history.stop_reason == "diverged"
    valid_model = LinearGaussianAR(p=1, dtype=np.float64)                     # found by the validation
    with pytest.raises(TrainingDiverged, match=r"not stationary.* at epoch 2, in the validation after step 2"):
        fit(valid_model, [x], [x], Adam(lr=0.6), epochs=3, progress=False)


def test_gaussian_ar_refuses_data_with_nan():
    x = ar_data()
    x[3, 7] = np.nan
    x[5, 1] = np.inf
    model = LinearGaussianAR(p=2, dtype=np.float64)
    for call in (model.log_prob, model.loss_and_grads, model.conditional_moments, conditional_mle):
        with pytest.raises(ValueError, match=r"x holds 2 NaN or inf value\(s\) \(the first in sequence 3 at t = 7\)"):
            call(x)
    conditional = LinearGaussianAR(p=1, start="conditional", dtype=np.float64)
    with pytest.raises(ValueError, match="missing values"):
        conditional.log_prob(x)
    with pytest.raises(ValueError, match="NaN"):                              # fit passes the ValueError on
        fit(model, [x], None, SGD(lr=0.01), epochs=1, progress=False)


def test_gaussian_ar_on_the_command_line_reports_the_stationary_region_as_divergence(tmp_path, capsys):
    run = tmp_path / "ar"
    code = main(["train", "--model", "gaussian-ar", "--lr", "0.6", "--batch-size", "200", "--n-train", "200",
                 "--seq-len", "20", "--epochs", "3", "--no-plot", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "training diverged" in err and "not stationary" in err and "Traceback" not in err
    kept = load_checkpoint(run / "last.npz")[0]["epoch"]
    assert kept < 3 and f"epoch {kept + 1}" in err and f"(end of epoch {kept})" in err


# ----------------------------------------------------------------------------- runs: the last good checkpoint

def run_cfg(**kw):
    cfg = {"model": "nade", "data": "synthetic-fvsbn", "dim": 6, "n_train": 300, "data_seed": 0, "hidden": 6,
           "batch_size": 50, "eval_batch_size": 500, "epochs": 4, "seed": 0, "optimizer": "adam", "lr": 1e-3,
           "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "clip": None, "patience": None,
           "lr_decay": None, "lr_patience": 1, "warmup": 0, "anneal": None, "max_batches": None,
           "progress": False, "plot": False, "device": "cpu", "dtype": "float32", "init_scale": None,
           "diverge_factor": 100.0}
    return {**cfg, **kw}


def start_run(run_dir, cfg):
    data = load_data(cfg)
    model = build_model(model_spec("nade"), cfg, data, "cpu")
    optimizer = build_optimizer(cfg)
    state = RunState()
    save_run(run_dir / "last.npz", model, optimizer, state, cfg, data)
    return data, model, optimizer, state


def blow_up_after(monkeypatch, n_calls, factor=1e4):
    """From the n-th training step on, NADE's loss is `factor` times the real one (earlier patches undone)."""
    monkeypatch.undo()
    real, calls = NADE.loss_and_grads, {"n": 0}

    def patched(self, x):
        loss, grads = real(self, x)
        calls["n"] += 1
        return (loss * factor if calls["n"] >= n_calls else loss), grads
    monkeypatch.setattr(NADE, "loss_and_grads", patched)
    return calls


def test_growth_stops_the_run_and_resume_never_overwrites_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = run_cfg()
    data, model, optimizer, state = start_run(run, cfg)
    blow_up_after(monkeypatch, 6 + 3)                                   # 6 steps an epoch: epoch 2, step 3
    with pytest.raises(TrainingDiverged, match=r"more than 100 x its scale.* at epoch 2, step 3 of the epoch "
                                               r"\(step 9 of the run\)"):
        train_loop(run, model, optimizer, data, cfg, state, "cpu")
    good = (run / "last.npz").read_bytes()
    meta = load_checkpoint(run / "last.npz")[0]
    assert meta["epoch"] == 1 and meta["state"]["loss_best"] is not None   # the guard's record is saved
    for _ in range(2):                                                  # resume: the same step diverges again
        model = build_model(model_spec("nade"), cfg, data, "cpu")
        optimizer = build_optimizer(cfg)
        state = restore(run / "last.npz", model, optimizer, data)
        assert (state.loss_first, state.loss_best) == (meta["state"]["loss_first"], meta["state"]["loss_best"])
        blow_up_after(monkeypatch, 3)
        with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 3 of the epoch"):
            train_loop(run, model, optimizer, data, cfg, state, "cpu")
        assert (run / "last.npz").read_bytes() == good
    blow_up_after(monkeypatch, 3)
    state = restore(run / "last.npz", model, optimizer, data)
    train_loop(run, model, optimizer, data, {**cfg, "diverge_factor": 0}, state, "cpu")   # 0: the check is off
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 4


def test_a_validation_loss_grown_by_orders_of_magnitude_stops_the_run(tmp_path, monkeypatch):
    import scratchnade.runs as runs
    run = tmp_path / "run"
    cfg = run_cfg(epochs=3)
    data, model, optimizer, state = start_run(run, cfg)
    losses = iter([4.0, 3.0, 3.0 + 100 * 4.0 + 1])                    # first 4, best 3: limit 3 + 100 x 4
    monkeypatch.setattr(runs, "evaluate", lambda model, batches: next(losses))
    with pytest.raises(TrainingDiverged, match="validation loss 404 is more than 100 x its scale above its best 3 "
                                               r".* after epoch 3"):
        train_loop(run, model, optimizer, data, cfg, state, "cpu")
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 2


def test_diverged_run_exits_3_on_the_command_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    blow_up_after(monkeypatch, 9)
    args = ["train", "--model", "nade", "--hidden", "6", "--dim", "6", "--n-train", "300", "--batch-size", "50",
            "--no-plot", "--epochs", "3", "--run-dir", str(run)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "more than 100 x its scale" in err and "last.npz is untouched" in err and "Traceback" not in err
    assert load_checkpoint(run / "last.npz")[0]["epoch"] == 1
