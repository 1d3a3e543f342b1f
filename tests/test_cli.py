"""The command line through main(argv): train / evaluate / sample / gradcheck, checkpoints,
exact resume, reproducibility and every failure path (tiny synthetic runs, tmp_path run dirs)."""
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from scratchnade import cli
from scratchnade.checkpoint import load_checkpoint, save_checkpoint
from scratchnade.cli import main
from scratchnade.data.synthetic import gaussian_ar_entropy, gaussian_ar_source, markov_source
from scratchnade.models.gaussian_ar import LinearGaussianAR
from scratchnade.models.nade import NADE
from scratchnade.registry import MODELS

NADE_ARGS = ["--model", "nade", "--hidden", "6", "--dim", "6", "--n-train", "300", "--batch-size", "50",
             "--no-plot"]
RNN_ARGS = ["--model", "rnn", "--hidden", "8", "--order", "6", "--vocab", "5", "--n-train", "2000",
            "--batch-size", "16", "--dropout", "0.3", "--lr", "0.01", "--no-plot"]
TRANSFORMER_ARGS = ["--model", "transformer", "--d-model", "8", "--heads", "2", "--layers", "2", "--context", "6",
                    "--vocab", "5", "--n-train", "2000", "--batch-size", "16", "--dropout", "0.2", "--lr", "0.01",
                    "--no-plot"]
ENTROPY_LINE = re.compile(r"test NLL (-?\d+\.\d+) nats per \w+ vs true entropy (-?\d+\.\d+) nats per \w+ "
                          r"\(gap (-?\d+\.\d+) \+- (\d+\.\d+), one standard error over [\d,]+ test \w+; "
                          r"a negative gap within ~2 standard errors is sampling error\)")


def train(run_dir, args, epochs, *extra):
    return main(["train", *args, "--epochs", str(epochs), "--run-dir", str(run_dir), *extra])


def resume(run_dir, epochs, *extra):
    return main(["train", "--resume", str(run_dir), "--epochs", str(epochs), *extra])


def checkpoint(run_dir, name="last.npz"):
    return load_checkpoint(run_dir / name)


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def patch_validation(monkeypatch, evaluate):
    """Replace the validation loss computation (train.evaluate, wherever the loop looks it up)."""
    import scratchnade.runs as runs_module
    import scratchnade.train as train_module
    for module in (train_module, runs_module):
        if hasattr(module, "evaluate"):
            monkeypatch.setattr(module, "evaluate", evaluate)


def fail_at_step(monkeypatch, k, make_result):
    """Patch NADE.loss_and_grads so that its k-th call returns / raises make_result(...) instead."""
    real, calls = NADE.loss_and_grads, {"n": 0}

    def patched(self, x):
        calls["n"] += 1
        loss, grads = real(self, x)
        return make_result(loss, grads) if calls["n"] == k else (loss, grads)
    monkeypatch.setattr(NADE, "loss_and_grads", patched)


# ----------------------------------------------------------------------------- the four commands

def test_train_without_data_writes_the_run_and_compares_with_the_true_entropy(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, NADE_ARGS[:-1], 2) == 0                    # with the learning-curve plot
    out = capsys.readouterr().out
    nll, H, gap, se = map(float, ENTROPY_LINE.search(out.strip().splitlines()[-1]).groups())
    assert H > 0 and abs(nll - H - gap) < 2e-3 and nll - H < 0.5
    assert 0.005 < se < 0.2                                      # std of ~2 nats over sqrt(500) test examples
    for name in ("config.json", "last.npz", "best.npz", "history.csv", "history.json", "learning_curve.png"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "nade" and cfg["data"] == "synthetic-fvsbn" and cfg["hidden"] == 6
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,valid_loss,lr") and len(rows) == 3
    hist = json.loads((run / "history.json").read_text())
    assert hist["epoch"] == [1, 2] and len(hist["items_per_s"]) == 2 and hist["items_per_s"][0] > 0
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    meta, params, optim = checkpoint(run)
    assert meta["model"] == "NADE" and meta["epoch"] == 2 and meta["run_config"]["epochs"] == 2
    assert meta["optimizer"]["type"] == "Adam" and meta["optimizer"]["t"] == 12 and optim
    assert meta["scratchnade_version"] and len(meta["state"]["history"]["train_loss"]) == 2


def test_rnn_train_evaluate_and_sample_text(tmp_path, capsys):
    run = tmp_path / "rnn"
    assert train(run, RNN_ARGS, 2) == 0
    out = capsys.readouterr().out
    assert ENTROPY_LINE.search(out) and "tok/s" in out and re.search(r"test perplexity \d+\.\d+ \(chunked\)", out)
    meta = checkpoint(run)[0]
    assert meta["vocab"] == list("abcde") and meta["model"] == "RecurrentNADE"

    assert main(["evaluate", str(run), "--mode", "sliding", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mode"] == "sliding" and r["p"] == 6 and r["count"] == 500 and r["split"] == "test"
    assert np.isfinite(r["nll"]) and r["nll"] > r["true_entropy"] - 0.2 and abs(r["ppl"] - np.exp(r["nll"])) < 1e-6
    assert main(["evaluate", str(run / "last.npz"), "--split", "valid"]) == 0
    text = capsys.readouterr().out
    assert "mode          chunked" in text and "valid split" in text and "perplexity" in text
    assert main(["evaluate", str(run), "--mode", "stream", "--eval-batch-size", "4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)                  # 4 streams of 125 tokens, state carried
    assert r["mode"] == "stream" and r["count"] == 500 and r["nll"] > r["true_entropy"] - 0.2

    assert main(["sample", str(run), "-n", "2", "--length", "30", "--prompt", "abc", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    samples = [line for line in lines if not line.startswith("---")]
    assert len(samples) == 2 and all(len(s) == 33 and s.startswith("abc") and set(s) <= set("abcde")
                                     for s in samples)


def test_transformer_train_evaluate_sample_and_exposure_bias(tmp_path, capsys):
    run = tmp_path / "transformer"
    assert train(run, TRANSFORMER_ARGS, 2) == 0
    out = capsys.readouterr().out
    assert ENTROPY_LINE.search(out) and re.search(r"test perplexity \d+\.\d+ \(chunked\)", out)
    meta = checkpoint(run)[0]
    assert meta["model"] == "Transformer" and meta["run_config"]["order"] == 6     # windows fill the context
    sizes = {k: meta["config"][k] for k in ("context", "d_model", "heads", "layers", "dropout")}
    assert sizes == {"context": 6, "d_model": 8, "heads": 2, "layers": 2, "dropout": 0.2}
    for mode in ("chunked", "sliding"):
        assert main(["evaluate", str(run), "--mode", mode, "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["mode"] == mode and r["p"] == 6 and r["count"] == 500 and r["nll"] > r["true_entropy"] - 0.2
    assert main(["sample", str(run), "-n", "2", "--length", "20", "--prompt", "abc", "--top-k", "3",
                 "--temperature", "0.8"]) == 0                # 23 tokens: past the context of 6
    samples = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("---")]
    assert len(samples) == 2 and all(len(s) == 23 and s.startswith("abc") and set(s) <= set("abcde")
                                     for s in samples)
    assert main(["exposure-bias", str(run), "-n", "8", "--length", "12", "--window", "4"]) == 0
    summary = json.loads((run / "exposure-bias" / "summary.json").read_text())
    assert summary["model"] == "Transformer" and summary["length"] == 12


@pytest.mark.parametrize("flag", ["--init-bias", "--no-init-bias"])
def test_token_models_start_from_the_unigram_bias_unless_told_not_to(tmp_path, monkeypatch, flag):
    run = tmp_path / "rnn"
    monkeypatch.setattr(cli, "train_loop", lambda *args, **kw: None)   # last.npz: the initial parameters
    monkeypatch.setattr(cli, "_final_report", lambda *args, **kw: None)
    assert train(run, RNN_ARGS, 1, flag) == 0
    b = checkpoint(run)[1]["b"].astype(np.float64)
    if flag == "--no-init-bias":
        assert np.all(b == 0.0)
    else:                                                        # log frequencies of a 5-token chain
        assert np.exp(b).sum() == pytest.approx(1.0, abs=1e-5) and np.ptp(b) > 0.01


def test_sample_images_and_completions(tmp_path, capsys):
    run = tmp_path / "nade"
    assert train(run, NADE_ARGS, 1) == 0
    out = tmp_path / "s.png"
    assert main(["sample", str(run), "-n", "8", "--out", str(out), "--complete", "2", "--temperature", "0.5"]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "s-completions.png").read_bytes()[:4] == b"\x89PNG"
    bits = [line for line in text.splitlines() if re.fullmatch(r"[01]{6}", line)]
    assert len(bits) == 8                                        # D = 6: the samples are printed too


def test_gaussian_ar_train_and_sample(tmp_path, capsys):
    run = tmp_path / "ar"
    assert train(run, ["--model", "gaussian-ar", "--seq-len", "20", "--n-train", "200", "--no-plot"], 2) == 0
    assert "nats per sequence vs true entropy" in capsys.readouterr().out
    assert main(["sample", str(run), "-n", "2", "--length", "7"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and all(len(r.split()) == 7 for r in rows)
    assert np.all(np.isfinite([float(v) for r in rows for v in r.split()]))


def test_gradcheck_all_models_pass(capsys):
    assert main(["gradcheck", "--model", "all", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("nade", "fvsbn", "gaussian-ar", "softmax-fvsbn", "sequence-nade", "deep-nade", "rnn", "made",
                 "orderless-nade", "transformer"):
        assert f"== {name}:" in out
    assert "parameter | rel. error | ok" in out and "| NO" not in out and "passed" in out


def test_gradcheck_flags_a_wrong_gradient(monkeypatch, capsys):
    real = NADE.loss_and_grads

    def wrong(self, x):
        loss, grads = real(self, x)
        grads["c"] = grads["c"] * 1.01                           # a 1% bug in one parameter
        return loss, grads
    monkeypatch.setattr(NADE, "loss_and_grads", wrong)
    assert main(["gradcheck", "--model", "nade"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^c\s+\|.*\| NO$", out, re.M) and "FAILED" in out


def test_config_file_with_flags_overriding(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "nade", "hidden": 5, "dim": 6, "n-train": 300, "lr": 0.02,
                               "plot": False, "epochs": 1}))
    assert main(["train", "--config", str(cfg), "--lr", "0.005", "--run-dir", str(tmp_path / "a")]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["hidden"] == 5 and saved["lr"] == 0.005 and saved["n_train"] == 300 and saved["epochs"] == 1
    toml = tmp_path / "c.toml"
    toml.write_text('model = "nade"\nhidden = 4\ndim = 6\nn_train = 300\nplot = false\nepochs = 1\n')
    assert main(["train", "--config", str(toml), "--run-dir", str(tmp_path / "b")]) == 0
    assert checkpoint(tmp_path / "b")[0]["config"]["H"] == 4
    for wrong, message in (({"hiden": 5}, "unknown option(s) ['hiden']"),
                           ({"optimizer": "rmsprop"}, "\"optimizer\" must be one of")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(wrong))
        assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "c")]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("model, extra", [
    ("fvsbn", ["--form", "vector", "--dim", "6", "--n-train", "300"]),
    ("softmax-fvsbn", ["--order", "4", "--vocab", "5", "--n-train", "1500", "--embed-dim", "3"]),
    ("sequence-nade", ["--order", "4", "--vocab", "5", "--n-train", "1500", "--hidden", "6", "--tied"]),
    ("deep-nade", ["--order", "4", "--vocab", "5", "--n-train", "1500", "--hidden", "6", "--layers", "2"]),
    ("rnn", ["--order", "5", "--vocab", "5", "--n-train", "1500", "--hidden", "6", "--tied"]),
    ("made", ["--dim", "6", "--n-train", "300", "--hidden", "8", "--layers", "2", "--direct", "--masks", "2"]),
    ("orderless-nade", ["--dim", "6", "--n-train", "300", "--hidden", "8", "--activation", "sigmoid"]),
    ("transformer", ["--order", "5", "--vocab", "5", "--n-train", "1500", "--d-model", "8", "--heads", "2",
                     "--layers", "2", "--context", "6", "--tied"]),
])
def test_every_model_trains_on_its_synthetic_source(tmp_path, capsys, model, extra):
    assert train(tmp_path / "run", ["--model", model, *extra, "--no-plot"], 1) == 0
    assert ENTROPY_LINE.search(capsys.readouterr().out)
    assert main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["nll"])


def test_plateau_decay_early_stopping_and_warmup(tmp_path, monkeypatch, capsys):
    script = iter([5.0, 4.0, 4.5, 4.6, 4.7] + [4.8] * 10)      # validation losses, one per epoch (then tests)

    patch_validation(monkeypatch, lambda model, batches: next(script))
    run = tmp_path / "run"
    args = NADE_ARGS + ["--lr-decay", "0.5", "--lr-patience", "1", "--patience", "3", "--warmup", "12"]
    assert train(run, args, 10) == 0
    out = capsys.readouterr().out
    assert "early stop: no better validation loss for 3 epochs (best 4.0000 at epoch 2)" in out
    meta = checkpoint(run)[0]
    h = meta["state"]["history"]
    assert h["epoch"] == [1, 2, 3, 4, 5] and h["valid_loss"] == [5.0, 4.0, 4.5, 4.6, 4.7]
    assert h["lr"][:2] == [pytest.approx(1e-3 * 6 / 12), pytest.approx(1e-3)]   # warm-up over 12 steps, 6 an epoch
    assert h["lr"][2:] == [pytest.approx(1e-3), pytest.approx(5e-4), pytest.approx(2.5e-4)]  # halved per stall
    assert meta["optimizer"]["hyper"]["lr"] == pytest.approx(1.25e-4)
    assert checkpoint(run, "best.npz")[0]["epoch"] == 2
    assert resume(run, 10) == 0                                  # the early stop is remembered
    assert checkpoint(run)[0]["epoch"] == 5


def test_anneal_keeps_lr_then_decays_it_to_zero_over_the_run(tmp_path, capsys):
    run = tmp_path / "run"                                       # 300 examples / 50 = 6 steps an epoch, 24 in all
    assert train(run, NADE_ARGS + ["--lr", "0.01", "--anneal", "0.5"], 4) == 0
    lr = checkpoint(run)[0]["state"]["history"]["lr"]            # the lr of each epoch's last step
    assert lr == [pytest.approx(0.01), pytest.approx(0.01),      # global steps 5, 11: progress <= 0.5
                  pytest.approx(0.01 * (1 - 17 / 24) / 0.5), pytest.approx(0.01 * (1 - 23 / 24) / 0.5)]
    assert main(["train", *NADE_ARGS, "--anneal", "1.0", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "--anneal must be a finite number in [0, 1) (FROM is the fraction" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- checkpoints and resume

def test_crash_during_save_leaves_the_old_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(run, NADE_ARGS, 1) == 0
    before = (run / "last.npz").read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(np, "savez", crash)
    assert resume(run, 2) == 2                                   # one line, how to continue
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk full (simulated)" in err and "last.npz holds the end of epoch 1" in err
    assert f"--resume {run}" in err and "Traceback" not in err
    monkeypatch.undo()
    assert (run / "last.npz").read_bytes() == before
    assert checkpoint(run)[0]["epoch"] == 1
    assert not list(run.glob("*.part"))


@pytest.mark.parametrize("args", [
    NADE_ARGS + ["--weight-decay", "1e-3", "--betas", "0.8", "0.99"],
    RNN_ARGS + ["--carry-state", "--warmup", "5", "--lr-decay", "0.5", "--clip", "1.0"],
    ["--model", "sequence-nade", "--hidden", "6", "--order", "4", "--vocab", "5", "--n-train", "1500",
     "--batch-size", "16", "--dropout", "0.2", "--optimizer", "nesterov", "--lr", "0.05", "--no-plot"],
    ["--model", "made", "--hidden", "8", "--masks", "5", "--shuffle-order", "--dim", "6", "--n-train", "300",
     "--batch-size", "50", "--no-plot"],
    ["--model", "orderless-nade", "--hidden", "8", "--layers", "2", "--dim", "6", "--n-train", "300",
     "--batch-size", "50", "--no-plot"],
    TRANSFORMER_ARGS + ["--warmup", "5", "--clip", "1.0"],
], ids=["nade-adam-l2", "rnn-dropout-carry-warmup-decay-clip", "sequence-nade-dropout-nesterov",
        "made-mask-draws", "orderless-nade-mask-draws", "transformer-dropout-warmup-clip"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, args):
    assert train(tmp_path / "straight", args, 4) == 0
    assert train(tmp_path / "split", args, 2) == 0
    assert resume(tmp_path / "split", 4) == 0
    a_meta, a_params, a_optim = checkpoint(tmp_path / "straight")
    b_meta, b_params, b_optim = checkpoint(tmp_path / "split")
    assert b_meta["epoch"] == 4
    assert_same_arrays(a_params, b_params)
    assert_same_arrays(a_optim, b_optim)
    assert a_meta["rng"] == b_meta["rng"] and a_meta["optimizer"] == b_meta["optimizer"]
    ha, hb = a_meta["state"]["history"], b_meta["state"]["history"]
    assert ha["train_loss"] == hb["train_loss"] and ha["valid_loss"] == hb["valid_loss"] and ha["lr"] == hb["lr"]
    assert_same_arrays(checkpoint(tmp_path / "straight", "best.npz")[1], checkpoint(tmp_path / "split", "best.npz")[1])


def test_same_seed_gives_identical_runs_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert train(tmp_path / name, RNN_ARGS, 1, "--seed", seed) == 0
    a, b, c = (checkpoint(tmp_path / n)[1] for n in "abc")
    assert_same_arrays(a, b)
    assert not np.array_equal(a["W_h"], c["W_h"])


def test_resume_may_extend_epochs_but_not_change_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, NADE_ARGS, 1) == 0
    assert resume(run, 1, "--hidden", "7") == 2
    assert "cannot change --hidden" in capsys.readouterr().err
    assert train(run, NADE_ARGS, 1) == 2                          # a fresh run would overwrite it
    assert "--resume" in capsys.readouterr().err


# ----------------------------------------------------------------------------- failures

def _nan_loss(loss, grads):
    return float("nan"), grads


def _inf_grad(loss, grads):
    grads["W"][0, 0] = np.inf
    return loss, grads


@pytest.mark.parametrize("failure, message", [
    ("loss", "training loss is nan at epoch 2, step 2 of the epoch (step 8 of the run)"),
    ("grad", "gradient of 'W' contains NaN or inf at epoch 2"),
    ("valid", "validation loss is nan after epoch 2"),
])
def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys,
                                                                              failure, message):
    run, seen = tmp_path / "run", {}

    def snapshot(result):
        def fail(loss, grads):
            seen["last"] = (run / "last.npz").read_bytes()       # the end of epoch 1
            return result(loss, grads)
        return fail
    if failure == "valid":
        losses = iter([1.0, float("nan")])
        patch_validation(monkeypatch, lambda model, batches: next(losses))
        fail_at_step(monkeypatch, 8, snapshot(lambda loss, grads: (loss, grads)))
    else:
        fail_at_step(monkeypatch, 8, snapshot(_nan_loss if failure == "loss" else _inf_grad))
    assert train(run, NADE_ARGS, 3) == 3                        # 6 steps an epoch: step 8 is in epoch 2
    err = capsys.readouterr().err
    assert "training diverged" in err and message in err and "last.npz is untouched" in err
    assert "Traceback" not in err
    assert (run / "last.npz").read_bytes() == seen["last"]
    assert checkpoint(run)[0]["epoch"] == 1


@pytest.mark.parametrize("schedule", [[], ["--anneal", "0.3"]], ids=["constant-lr", "anneal"])
def test_ctrl_c_keeps_the_epoch_boundary_checkpoint_and_resume_is_exact(tmp_path, monkeypatch, capsys, schedule):
    run, args = tmp_path / "run", NADE_ARGS + schedule

    def interrupt(loss, grads):
        raise KeyboardInterrupt
    fail_at_step(monkeypatch, 9, interrupt)
    assert train(run, args, 3) == 130
    err = capsys.readouterr().err
    assert "interrupted during epoch 2" in err and f"--resume {run}" in err
    assert checkpoint(run)[0]["epoch"] == 1
    monkeypatch.undo()
    assert resume(run, 3) == 0                                   # same --epochs: the same lr at every step
    assert train(tmp_path / "straight", args, 3) == 0
    assert_same_arrays(checkpoint(run)[1], checkpoint(tmp_path / "straight")[1])


def test_corrupt_truncated_and_missing_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, NADE_ARGS, 1) == 0
    data = (run / "best.npz").read_bytes()
    (run / "best.npz").write_bytes(data[: len(data) // 2])
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "best.npz" in err and "Traceback" not in err
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    assert main(["sample", str(tmp_path / "junk.npz")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (run / "last.npz").write_bytes(b"")
    assert resume(run, 2) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    assert train(tmp_path / "nade", NADE_ARGS, 1) == 0
    assert train(tmp_path / "rnn", RNN_ARGS, 1) == 0
    shutil.copy(tmp_path / "rnn" / "last.npz", tmp_path / "nade" / "last.npz")
    assert resume(tmp_path / "nade", 2) == 2
    err = capsys.readouterr().err
    assert "holds a RecurrentNADE model, not a NADE" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "rnn"), "--data", "synthetic-fvsbn"]) == 2
    assert "tokens data" in capsys.readouterr().err


def test_checkpoint_with_mismatched_shapes_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, NADE_ARGS, 1) == 0
    meta, params, optim = checkpoint(run)
    meta.pop("scratchnade_version")
    params["W"] = params["W"][:, :-1]                            # (H, D - 1)
    save_checkpoint(run / "best.npz", params, meta, optim)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "parameter 'W' has shape (6, 5)" in err and "Traceback" not in err
    save_checkpoint(run / "last.npz", params, meta, optim)
    assert resume(run, 2) == 2
    assert "'W'" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--model", "rnn", "--data", "ptb"], ["--model", "nade", "--data", "mnist"]])
def test_missing_data_says_where_to_put_it_and_how_to_download(tmp_path, capsys, args):
    assert main(["train", *args, "--data-dir", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "SCRATCHNADE_DATA" in err and "download" in err and str(tmp_path / "nowhere") in err
    assert "Traceback" not in err and not (tmp_path / "r" / "last.npz").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "lstm"], "unknown model 'lstm'"),
    (["train", "--model", "nade", "--data", "ptb"], "models binary data"),
    (["train", "--model", "rnn", "--layers", "2"], "--layers does not apply to model rnn"),
    (["train", "--model", "rnn", "--heads", "2"], "--heads does not apply to model rnn"),
    (["train", "--model", "transformer", "--heads", "3"], "--heads 3 must divide --d-model 256"),
    (["train", "--model", "transformer", "--context", "16", "--order", "17"], "--order 17 is longer than --context 16"),
    (["train", "--model", "nade", "--momentum", "0.5"], "--momentum only applies"),
    (["train", "--optimizer", "sgd", "--eps", "1e-6"], "--betas and --eps only apply"),
    (["train", "--epochs", "ten"], "invalid int value"),
    (["train", "--optimizer", "rmsprop"], "invalid choice"),
    (["gradcheck", "--model", "lstm"], "unknown model"),
])
def test_argument_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    assert main([*argv, *(["--run-dir", str(tmp_path / "r")] if argv[0] == "train" else [])]) == 2
    assert message in capsys.readouterr().err


def test_progress_bar_reports_items_per_second(tmp_path, capsys):
    assert train(tmp_path / "run", NADE_ARGS, 1, "--progress") == 0
    err = capsys.readouterr().err
    assert "epoch 1" in err and "items_per_s=" in err


@pytest.mark.parametrize("args", [RNN_ARGS, NADE_ARGS, TRANSFORMER_ARGS], ids=["rnn", "nade", "transformer"])
def test_the_strict_fake_device_gives_the_cpu_results(tmp_path, fake_device, capsys, args):
    assert train(tmp_path / "cpu", args, 1) == 0
    assert train(tmp_path / "dev", args, 1, "--device", fake_device) == 0
    assert ENTROPY_LINE.search(capsys.readouterr().out)
    assert_same_arrays(checkpoint(tmp_path / "cpu")[1], checkpoint(tmp_path / "dev")[1])
    assert main(["evaluate", str(tmp_path / "dev"), "--device", fake_device]) == 0
    extra = ["--out", str(tmp_path / "s.png"), "--complete", "2"] if args is NADE_ARGS else []
    assert main(["sample", str(tmp_path / "dev"), "--device", fake_device, "-n", "3", *extra]) == 0


def test_defaults_table_covers_every_train_flag():
    parser = cli.build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train_parser._actions} - {"help", "config", "run_dir", "resume"}
    assert dests - {"threads"} == set(cli.DEFAULTS)     # --threads sizes this process, it is not a run's setting
    assert "threads" in dests and "threads" not in cli.DEFAULTS


# ----------------------------------------------------------------------------- the synthetic sources

def test_markov_source_entropy_is_the_true_chains_nll():
    src = markov_source(V=6, n_tokens=60000, seed=3, concentration=0.4)
    P, pi, ids = src.transition, src.stationary, src.ids
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 6 and len(ids) == 60000
    assert np.allclose(P.sum(axis=1), 1) and np.allclose(pi @ P, pi) and abs(pi.sum() - 1) < 1e-12
    nll = -np.log(P[ids[:-1], ids[1:]]).mean()                   # the chain's own per-token NLL
    assert abs(nll - src.entropy) < 0.02 and 0 < src.entropy < src.initial_entropy <= np.log(6)
    counts = np.bincount(ids, minlength=6) / len(ids)
    assert np.abs(counts - pi).max() < 0.02                      # the stream is stationary
    assert src.expected_nll(10, 10) == pytest.approx(src.initial_entropy)
    assert src.expected_nll(10, 1) == pytest.approx((src.initial_entropy + 9 * src.entropy) / 10)
    assert np.array_equal(markov_source(V=6, n_tokens=500, seed=3, concentration=0.4).ids, ids[:500])


def test_gaussian_ar_source_entropy_matches_monte_carlo():
    src = gaussian_ar_source(T=20, n_train=10, n_valid=10, n_test=20000, rho=0.7, mu=0.3, sigma=0.4, seed=1)
    truth = LinearGaussianAR(1, rho=[0.7], mu=0.3, sigma=0.4, dtype=np.float64)
    nll = -truth.log_prob(src.test)                              # (N,) per-sequence NLL
    assert abs(nll.mean() - src.entropy) < 4 * nll.std() / np.sqrt(len(nll))
    assert src.entropy == pytest.approx(gaussian_ar_entropy(20, 0.7, 0.4))
    assert gaussian_ar_entropy(1, 0.0, 1.0) == pytest.approx(0.5 * np.log(2 * np.pi * np.e))


# ----------------------------------------------------------------------------- help, resolved configs, modes

def _subparsers():
    return cli.build_parser()._subparsers._group_actions[0].choices


def test_help_is_plain_text_with_every_default_and_the_exit_codes(capsys):
    for name, sub in {"": cli.build_parser(), **_subparsers()}.items():
        text = sub.format_help()
        assert not re.search(r":(func|mod|class|meth):|``", text), name          # no Sphinx markup
        assert "exit codes:" in text and "143" in text and "130" in text, name
        for action in sub._actions:
            if action.dest in ("help", "version", "command", "target"):
                continue
            assert action.help and "default" in action.help, (name, action.dest)
    hidden = _subparsers()["train"]._option_string_actions["--hidden"].help
    assert "500 for nade" in hidden and "256 for" in hidden and "rnn" in hidden


def test_the_readme_command_lines_parse():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    commands = [shlex.split(line.split("#")[0])[3:] for line in lines if line.startswith("python -m scratchnade")]
    assert len(commands) >= 8
    parser = cli.build_parser()
    for argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert not extra, argv
        if args.command == "train" and not args.resume:              # and they pass the range checks
            explicit = {k: v for k, v in vars(args).items() if k in cli.DEFAULTS}
            cli.fresh_config(_subparsers()["train"], explicit, {})


@pytest.mark.parametrize("model", list(MODELS))
def test_config_records_the_resolved_values_not_null(model):
    spec = MODELS[model]
    cfg = cli.fresh_config(_subparsers()["train"], {"model": model}, {})
    fan_in = model in ("made", "orderless-nade")      # their init_scale None means std sqrt(gain / fan-in)
    used = [k for k in spec.options if not k.startswith("ss_") and k != "scheduled_sampling"
            and not (k == "embed_dim" and cfg.get("encoding") != "embedding")
            and not (k == "init_scale" and fan_in)]
    assert all(cfg[k] is not None for k in used), {k: cfg[k] for k in used}
    assert cfg["batch_size"] and cfg["eval_batch_size"] and cfg["eval_mode"] and cfg["lr"] > 0
    if spec.kind == "tokens":                          # a transformer's windows fill its positions
        assert cfg["order"] == (cfg["context"] if model == "transformer" else spec.defaults["order"])
    if model == "nade":
        assert cfg["hidden"] == 500 and cfg["init_scale"] == 0.01 and cfg["n_train"] == 10000 and cfg["dim"] == 10
    if model == "rnn":
        ss = cli.fresh_config(_subparsers()["train"], {"model": "rnn", "scheduled_sampling": "inverse-sigmoid"}, {})
        assert ss["ss_k"] == 500.0 and ss["ss_min"] == 0.0


def test_carry_state_runs_are_scored_in_stream_mode_and_every_perplexity_says_its_mode(tmp_path, capsys):
    run = tmp_path / "rnn"
    assert train(run, RNN_ARGS, 1, "--carry-state", "--eval-tokens", "200", "--eval-batch-size", "4") == 0
    out = capsys.readouterr().out
    assert re.search(r"test perplexity \d+\.\d+ \(stream\)", out)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["eval_mode"] == "stream" and cfg["eval_tokens"] == 200 and cfg["diverge_factor"] == 100.0
    assert main(["evaluate", str(run)]) == 0                        # no --mode: stream, as trained
    assert re.search(r"perplexity +\d+\.\d+ \(stream\)", capsys.readouterr().out)
    assert main(["evaluate", str(run), "--mode", "sliding", "--max-tokens", "100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mode"] == "sliding" and r["count"] == 100


def test_scheduled_sampling_header_shows_how_eps_moves(tmp_path, capsys):
    from scratchnade.registry import teacher_forcing_eps
    from scratchnade.scheduled_sampling import teacher_forcing_schedule
    cfg = {"scheduled_sampling": "inverse-sigmoid", "ss_k": 2.0, "ss_c": None, "ss_min": 0.0}
    assert teacher_forcing_eps(cfg, 7) == teacher_forcing_schedule("inverse-sigmoid", 7, 2.0)
    assert teacher_forcing_eps({"scheduled_sampling": None}, 7) is None
    assert train(tmp_path / "ss", RNN_ARGS, 2, "--scheduled-sampling", "inverse-sigmoid", "--ss-k", "2") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ss "))
    start, end = map(float, re.search(r"eps (\d\.\d+) now, (\d\.\d+) at the last step of epoch 2", line).groups())
    assert start == pytest.approx(teacher_forcing_schedule("inverse-sigmoid", 0, 2.0), abs=1e-3) and end < 0.01


def test_evaluate_scores_an_ensemble_of_mask_sets_as_a_mixture(tmp_path, capsys):
    run = tmp_path / "made"
    assert train(run, ["--model", "made", "--hidden", "8", "--masks", "4", "--shuffle-order", "--dim", "6",
                       "--n-train", "300", "--batch-size", "50", "--no-plot"], 2) == 0
    capsys.readouterr()
    results = {}
    for K in (1, 4):
        assert main(["evaluate", str(run), "--ensemble", str(K), "--json"]) == 0
        results[K] = json.loads(capsys.readouterr().out)
    assert results[4]["ensemble"] == 4 and results[4]["model"] == "MADE"
    from scratchnade.ensemble import ensemble_log_prob
    from scratchnade.registry import load_data
    meta, params, _ = checkpoint(run, "best.npz")
    from scratchnade.models.made import MADE
    model = MADE(**meta["config"])
    model.load_state_dict(params)
    test = load_data(meta["run_config"]).test
    for K in (1, 4):                                               # the CLI's figure is the mixture's NLL
        expected = -float(np.mean(ensemble_log_prob(model, test.astype(model.dtype), K)))
        assert results[K]["nll"] == pytest.approx(expected, rel=1e-5)
