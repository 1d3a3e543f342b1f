"""scratchnade.train: the loop, early stopping, restoring, history, progress, divergence."""
import json
import math

import numpy as np
import pytest

from scratchnade.backend import asnumpy, device_of, get_xp, to_device
from scratchnade.functional import sigmoid, softplus
from scratchnade.train import History, TrainingDiverged, batch_weight, evaluate, fit


class LogReg:
    """Logistic regression p(y=1|x) = sigmoid(x.W + b); batch = (X (B, D), y (B,))."""

    def __init__(self, D, device="cpu", dtype=np.float64):
        self.params = {"W": to_device(np.zeros(D, dtype), device),
                       "b": to_device(np.zeros((), dtype), device)}

    def loss_and_grads(self, batch):
        X, y = batch
        xp = get_xp(X, self.params["W"])
        a = X @ self.params["W"] + self.params["b"]             # logits, (B,)
        loss = xp.mean(softplus(a) - y * a)                     # mean Bernoulli NLL
        da = (sigmoid(a) - y) / X.shape[0]                      # dloss/da
        return loss, {"W": X.T @ da, "b": xp.sum(da)}

    def log_prob(self, batch):
        X, y = batch
        a = X @ self.params["W"] + self.params["b"]
        return -(softplus(a) - y * a)


class SGD:
    """Stand-in for scratchnade.optim.SGD: params -= lr * grads, in place."""

    def __init__(self, lr):
        self.lr = lr

    def step(self, params, grads):
        for k, p in params.items():
            p -= self.lr * grads[k]                             # in place: same arrays in the dict


def make_data(n, D=5, flip=0.0, seed=0, batch=32, device="cpu"):
    """Batches of (X, y) with y = 1[X.w > 0], a fraction `flip` of labels flipped."""
    rng = np.random.default_rng(seed)
    w = np.linspace(1.0, -1.0, D)
    X = rng.normal(size=(n, D))
    y = (X @ w > 0).astype(np.float64)
    flipped = rng.random(n) < flip
    y[flipped] = 1 - y[flipped]
    return [(to_device(X[i:i + batch], device), to_device(y[i:i + batch], device))
            for i in range(0, n, batch)]


def host_params(model):
    return {k: asnumpy(v).copy() for k, v in model.params.items()}


def test_loss_decreases_and_history_lengths():
    model, train, valid = LogReg(5), make_data(256), make_data(128, seed=1)
    h = fit(model, train, valid, SGD(0.5), epochs=4, progress=False)
    assert h.epoch == [1, 2, 3, 4]
    for name in ("train_loss", "valid_loss", "seconds", "lr"):
        assert len(getattr(h, name)) == 4, name
    assert len(h.step_loss) == 4 * len(train) and h.eval_step == [8, 16, 24, 32]
    assert h.step_loss[0] == pytest.approx(math.log(2))         # W = 0, b = 0 at the first step
    assert h.train_loss[-1] < h.train_loss[0] < math.log(2)
    assert h.valid_loss[-1] < 0.5 * math.log(2)
    assert h.train_loss[0] == pytest.approx(np.mean(h.step_loss[:8]))
    assert h.lr == [0.5] * 4 and not h.stopped_early and h.stop_reason is None
    assert h.best_valid == min(h.valid_loss) and h.best_epoch == 4


def test_evaluate_is_weighted_by_batch_size():
    model = LogReg(3)
    model.params["W"][:] = [1.0, -2.0, 0.5]
    data = make_data(70, D=3, batch=64)                          # batches of 64 and 6 examples
    losses = [float(model.loss_and_grads(b)[0]) for b in data]
    assert evaluate(model, data) == pytest.approx((64 * losses[0] + 6 * losses[1]) / 70)
    full = [(np.concatenate([b[0] for b in data]), np.concatenate([b[1] for b in data]))]
    assert evaluate(model, data) == pytest.approx(evaluate(model, full))
    assert batch_weight(np.zeros((7, 4))) == 28 and batch_weight((np.zeros((3, 2)), 0)) == 6
    assert math.isnan(evaluate(model, []))


def test_evaluate_prefers_model_loss_and_switches_training_mode():
    seen = []

    class Model(LogReg):
        training = True

        def loss(self, batch):
            seen.append(self.training)
            return 2.5

    assert evaluate(Model(5), make_data(64)) == 2.5
    assert seen == [False, False]


def test_training_flag_is_true_in_steps_false_in_validation():
    modes = {"train": set(), "valid": set()}

    class Model(LogReg):
        training = "untouched"

        def loss_and_grads(self, batch):
            modes["train"].add(self.training)
            return super().loss_and_grads(batch)

        def loss(self, batch):
            modes["valid"].add(self.training)
            return self.loss_and_grads(batch)[0]

    model = Model(5)
    fit(model, make_data(64), make_data(64, seed=1), SGD(0.1), epochs=2, eval_every=1, progress=False)
    assert modes["valid"] == {False} and True in modes["train"]
    assert model.training == "untouched"


def test_fit_reuses_gradient_buffers_only_while_it_trains():
    seen = set()

    class Model(LogReg):
        reuse_buffers = False                      # the models' safe default

        def loss_and_grads(self, batch):
            seen.add(self.reuse_buffers)
            return super().loss_and_grads(batch)

    model = Model(5)
    fit(model, make_data(64), None, SGD(0.1), epochs=2, progress=False)
    assert seen == {True}                          # every step applies its gradient before the next
    assert model.reuse_buffers is False            # and the caller's setting comes back


def test_early_stopping_restores_best_params_exactly():
    # separable training data drives |W| up forever; noisy validation labels prefer a small W,
    # so the validation loss falls, then rises.
    model = LogReg(5)
    train, valid = make_data(256, batch=16), make_data(256, flip=0.3, seed=1)
    W, b = model.params["W"], model.params["b"]
    snapshots = {}

    def remember(epoch, history):
        snapshots[epoch] = host_params(model)

    h = fit(model, train, valid, SGD(0.05), epochs=50, patience=3, on_epoch_end=remember,
            progress=False)
    assert h.stopped_early and h.stop_reason == "patience"
    assert 1 < h.best_epoch < len(h.epoch) == h.best_epoch + 3 < 50
    assert h.best_valid == min(h.valid_loss) == h.valid_loss[h.best_epoch - 1]
    assert all(v > h.best_valid for v in h.valid_loss[h.best_epoch:])
    assert model.params["W"] is W and model.params["b"] is b      # restored in place
    for k, v in snapshots[h.best_epoch].items():
        np.testing.assert_array_equal(model.params[k], v)
    assert not np.array_equal(snapshots[len(h.epoch)]["W"], model.params["W"])
    assert evaluate(model, valid) == h.best_valid


def test_restore_best_false_keeps_last_params():
    model = LogReg(5)
    train, valid = make_data(256, batch=16), make_data(256, flip=0.3, seed=1)
    last = {}
    h = fit(model, train, valid, SGD(0.05), epochs=50, patience=3, restore_best=False, progress=False,
            on_epoch_end=lambda epoch, history: last.update(host_params(model)))
    assert h.stopped_early
    np.testing.assert_array_equal(model.params["W"], last["W"])
    assert evaluate(model, valid) > h.best_valid


def test_eval_every_counts_patience_in_evaluations():
    model = LogReg(5)
    train, valid = make_data(256, batch=16), make_data(256, flip=0.3, seed=1)  # 16 steps per epoch
    h = fit(model, train, valid, SGD(0.05), epochs=50, patience=4, eval_every=5, progress=False)
    assert h.stopped_early and h.stop_reason == "patience"
    # every 5 steps, plus the end of each epoch that did not just evaluate
    assert all(s % 5 == 0 or s % 16 == 0 for s in h.eval_step)
    assert h.eval_step == sorted(set(h.eval_step))
    best = h.eval_loss.index(h.best_valid)
    assert h.eval_step[best] == h.best_step and len(h.eval_loss) == best + 1 + 4
    assert evaluate(model, valid) == h.best_valid
    assert len(h.step_loss) == h.eval_step[-1]                  # stopped right at that evaluation


def test_callable_train_batches_gets_epoch_numbers():
    data, seen = make_data(64), []

    def batches(epoch):
        seen.append(epoch)
        rng = np.random.default_rng(epoch)                      # reshuffle per epoch
        return [data[i] for i in rng.permutation(len(data))]

    h = fit(LogReg(5), batches, lambda epoch: data, SGD(0.1), epochs=3, progress=False)
    assert seen == [1, 2, 3] and h.epoch == [1, 2, 3]


def test_one_shot_iterator_and_bad_arguments_are_refused():
    model, data = LogReg(5), make_data(64)
    with pytest.raises(TypeError, match="one-shot"):
        fit(model, iter(data), None, SGD(0.1), progress=False)
    with pytest.raises(ValueError, match="valid_batches"):
        fit(model, data, None, SGD(0.1), patience=2, progress=False)
    with pytest.raises(ValueError, match="no batches in epoch 1"):
        fit(model, [], None, SGD(0.1), progress=False)


def test_on_epoch_end_can_stop():
    h = fit(LogReg(5), make_data(64), None, SGD(0.1), epochs=10, progress=False,
            on_epoch_end=lambda epoch, history: epoch == 2)
    assert h.epoch == [1, 2] and h.stopped_early and h.stop_reason == "callback"
    assert h.valid_loss == [None, None] and h.best_valid is None


def test_lr_schedule_multiplies_base_lr_and_puts_it_back():
    lrs = []

    class Recording(SGD):
        def step(self, params, grads):
            lrs.append(self.lr)
            super().step(params, grads)

    opt = Recording(0.4)
    h = fit(LogReg(5), make_data(64), None, opt, epochs=2, progress=False,
            lr_schedule=lambda step: 1.0 / (1 + step))
    assert lrs == pytest.approx([0.4, 0.2, 0.4 / 3, 0.1])
    assert h.lr == pytest.approx([0.2, 0.1]) and opt.lr == 0.4


def test_progress_false_prints_nothing(capsys):
    fit(LogReg(5), make_data(128), make_data(64, seed=1), SGD(0.1), epochs=2, eval_every=3,
        progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_progress_bar_shows_loss_and_rate(capsys):
    fit(LogReg(5), make_data(128), None, SGD(0.1), epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=" in err and "items_per_s=" in err


def test_nan_loss_raises_naming_epoch_and_step_and_restores_best():
    class Diverging(LogReg):
        calls = 0

        def loss_and_grads(self, batch):
            Diverging.calls += 1
            loss, grads = super().loss_and_grads(batch)
            return (float("nan") if Diverging.calls == 11 else loss), grads

        def loss(self, batch):                                  # validation: not counted
            return super().loss_and_grads(batch)[0]

    model = Diverging(5)
    train, valid = make_data(128), make_data(64, seed=1)        # 4 steps per epoch
    snapshots = {}
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 11") as info:
        fit(model, train, valid, SGD(0.5), epochs=5, progress=False,
            on_epoch_end=lambda epoch, h: snapshots.update({epoch: host_params(model)}))
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert err.epoch == 3 and err.step == 11 and err.history.stop_reason == "diverged"
    assert err.history.epoch == [1, 2] and len(err.history.step_loss) == 10
    for k, v in snapshots[err.history.best_epoch].items():
        np.testing.assert_array_equal(model.params[k], v)


def test_history_round_trips_through_json():
    h = fit(LogReg(5), make_data(128), make_data(64, seed=1), SGD(0.3), epochs=3, patience=5,
            progress=False)
    d = json.loads(json.dumps(h.to_dict()))
    assert History.from_dict(d) == h
    assert History.from_dict({**d, "added_later": 1}) == h
    assert History.from_dict({}) == History()


def test_fit_on_fake_device(fake_device):
    model = LogReg(5, device=fake_device)
    W = model.params["W"]
    train = make_data(256, batch=16, device=fake_device)
    valid = make_data(256, flip=0.3, seed=1, device=fake_device)
    h = fit(model, train, valid, SGD(0.05), epochs=30, patience=2, progress=False)
    assert device_of(model.params["W"]) == device_of(model.params["b"]) == fake_device
    assert model.params["W"] is W and h.stopped_early
    assert h.train_loss[-1] < h.train_loss[0]
    assert evaluate(model, valid) == h.best_valid
    host = LogReg(5)                                             # same run on the host, same numbers
    h_host = fit(host, make_data(256, batch=16), make_data(256, flip=0.3, seed=1), SGD(0.05),
                 epochs=30, patience=2, progress=False)
    assert h.valid_loss == pytest.approx(h_host.valid_loss, rel=1e-12)
    np.testing.assert_allclose(asnumpy(model.params["W"]), host.params["W"], rtol=1e-12)


def test_with_scratchnade_optimizers(device):
    optim = pytest.importorskip("scratchnade.optim")
    for opt in (optim.SGD(lr=0.5), optim.Nesterov(lr=0.1), optim.Adam(lr=0.05)):
        model = LogReg(5, device=device)
        h = fit(model, make_data(256, device=device), make_data(128, seed=1, device=device), opt,
                epochs=3, progress=False)
        assert h.train_loss[-1] < h.train_loss[0] < math.log(2), type(opt).__name__
        assert device_of(model.params["W"]) == device


# ----------------------------------------------------------------------------- progress, rate, summary (issue 15)

def test_progress_defaults_to_a_bar_only_when_stderr_is_a_terminal(capsys, monkeypatch):
    import sys
    fit(LogReg(5), make_data(128), None, SGD(0.1), epochs=1)          # captured stderr: not a terminal
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fit(LogReg(5), make_data(128), None, SGD(0.1), epochs=1)
    assert "epoch 1" in capsys.readouterr().err
    fit(LogReg(5), make_data(128), None, SGD(0.1), epochs=1, progress=False)   # asked: never
    assert capsys.readouterr().err == ""


class FakeClock:
    """time.perf_counter that advances one second per call."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        self.t += 1.0
        return self.t


def test_the_rate_counts_examples_or_the_models_own_items(capsys, monkeypatch):
    import scratchnade.train as train_module
    from scratchnade.models.gaussian_ar import LinearGaussianAR
    from scratchnade.models.nade import NADE
    from scratchnade.models.recurrent_nade import RecurrentNADE
    from scratchnade.train import batch_items
    X = np.zeros((32, 5))
    assert batch_items(LogReg(5), (X, np.zeros(32))) == 32                    # pairs, not 160 elements
    assert batch_items(NADE(D=5, H=3), X) == 32                                # images, not 160 bits
    assert batch_items(LinearGaussianAR(p=1), np.zeros((7, 50))) == 7         # sequences
    assert batch_items(RecurrentNADE(5, H=3), np.zeros((6, 4), int)) == 24    # tokens: the loss's unit
    assert batch_items(object(), 3.0) == 1
    monkeypatch.setattr(train_module, "time", FakeClock())                     # step k ends k seconds in
    fit(LogReg(5), make_data(128), None, SGD(0.1), epochs=1, progress=True)   # 4 batches of 32 pairs
    err = capsys.readouterr().err
    assert "items_per_s=32" in err and "items_per_s=160" not in err


def test_history_prints_a_summary_not_every_step():
    h = fit(LogReg(5), make_data(256, batch=16), make_data(256, flip=0.3, seed=1), SGD(0.05), epochs=50,
            patience=3, progress=False)
    text = repr(h)
    assert str(h) == text and len(text) < 200 and "\n" not in text
    assert text.startswith(f"History({len(h.epoch)} epochs, train loss {h.train_loss[0]:.4f} -> "
                           f"{h.train_loss[-1]:.4f}, best valid {h.best_valid:.4f} at epoch {h.best_epoch}, "
                           f"stopped: patience, {len(h.step_loss):,} step losses)")
    assert f"{h.step_loss[5]}" not in text
    done = fit(LogReg(5), make_data(64), None, SGD(0.1), epochs=1, progress=False, record_steps=False)
    loss = f"{done.train_loss[0]:.4f}"
    assert repr(done) == f"History(1 epoch, train loss {loss} -> {loss}, ran every epoch)"
    assert repr(History()) == "History(no epochs)"
