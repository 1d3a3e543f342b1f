"""Quick evaluation and what the epoch line says (issue 15, items 6 and 7, the runs side):
evaluate_split(max_tokens=...), the evaluation mode of a recurrent model that carries its state,
cfg["eval_tokens"] in the training loop, and the scheduled-sampling eps in the epoch line and
history.csv."""
import csv
import math
import re

import pytest

from scratchnade.evaluate import perplexity
from scratchnade.registry import build_model, load_data, model_spec
from scratchnade.runs import (RunState, UsageError, build_optimizer, eval_mode, evaluate_split, save_run,
                              train_loop, validation_mode)
from scratchnade.scheduled_sampling import teacher_forcing_schedule

EPOCH_LINE = re.compile(r"valid (\d+\.\d+) \(ppl (\d+\.\d+), (\w+)(, first ([\d,]+) tokens)?\)")


def token_cfg(**kw):
    cfg = {"model": "rnn", "data": "synthetic-markov", "vocab": 5, "n_train": 2000, "data_seed": 0, "hidden": 8,
           "order": 6, "batch_size": 16, "eval_batch_size": 8, "epochs": 2, "seed": 0, "optimizer": "adam",
           "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "clip": None, "patience": None,
           "lr_decay": None, "lr_patience": 1, "warmup": 0, "anneal": None, "max_batches": None,
           "progress": False, "plot": False, "device": "cpu", "dtype": "float64", "carry_state": None,
           "eval_mode": None, "eval_tokens": None}
    return {**cfg, **kw}


def setup(cfg):
    data = load_data(cfg)
    model = build_model(model_spec(cfg["model"]), cfg, data, "cpu")
    return data, model


@pytest.fixture(scope="module")
def markov():
    cfg = token_cfg()
    data, model = setup(cfg)
    return cfg, data, model


# ----------------------------------------------------------------------------- evaluate_split

@pytest.mark.parametrize("mode", ["chunked", "sliding", "stream"])
def test_max_tokens_scores_only_the_first_tokens(markov, mode):
    cfg, data, model = markov
    full = evaluate_split(model, data, "valid", cfg, mode=mode)
    r = evaluate_split(model, data, "valid", cfg, mode=mode, max_tokens=101)
    ref = perplexity(model, data.valid[:101], p=6, batch_size=8, mode=mode)
    assert r["nll"] == ref["nll"] and r["count"] == ref["tokens"] and r["max_tokens"] == 101
    assert r["count"] == (96 if mode == "stream" else 101) < full["count"]    # stream: 8 streams of 12
    assert r["nll"] != full["nll"]
    short = type(data)(**{**vars(data), "valid": data.valid[:101]})
    assert r["true_entropy"] == short.true_entropy("valid", mode, 6, 8) != full["true_entropy"]
    assert evaluate_split(model, data, "valid", cfg, mode=mode, max_tokens=10 ** 9) == {**full, "max_tokens": 10 ** 9}


def test_max_tokens_is_refused_where_it_cannot_apply(markov):
    cfg, data, model = markov
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(UsageError, match="must be a whole number >= 1"):
            evaluate_split(model, data, "valid", cfg, max_tokens=bad)
    with pytest.raises(UsageError, match="stream evaluation cuts the split into --eval-batch-size = 8 streams"):
        evaluate_split(model, data, "valid", cfg, mode="stream", max_tokens=7)
    bcfg = {**token_cfg(), "model": "nade", "data": "synthetic-fvsbn", "dim": 6, "n_train": 300, "hidden": 4,
            "eval_batch_size": 100}
    bdata, nade = setup(bcfg)
    with pytest.raises(UsageError, match="only applies to token data; synthetic-fvsbn holds binary data"):
        evaluate_split(nade, bdata, "valid", bcfg, max_tokens=100)
    assert evaluate_split(nade, bdata, "valid", bcfg)["count"] == len(bdata.valid)


def test_a_recurrent_model_that_carries_its_state_is_evaluated_in_stream_mode_by_default():
    cfg = token_cfg(carry_state=True)
    data, carrying = setup(cfg)
    _, plain = setup(token_cfg())
    _, nade = setup(token_cfg(model="sequence-nade", hidden=4))
    assert eval_mode(cfg, carrying) == "stream" and eval_mode({}, carrying) == "stream"
    assert eval_mode(cfg, plain) == "chunked" and eval_mode(cfg, nade) == "chunked"
    assert eval_mode({**cfg, "eval_mode": "chunked"}, carrying) == "chunked"       # an explicit mode wins
    assert validation_mode({**cfg, "eval_mode": "sliding"}, plain) == "chunked"    # sliding: the final test only
    r = evaluate_split(carrying, data, "valid", cfg)
    assert r["mode"] == "stream"
    assert r["nll"] == perplexity(carrying, data.valid, p=6, batch_size=8, mode="stream")["nll"]
    assert evaluate_split(plain, data, "valid", cfg)["mode"] == "chunked"


# ----------------------------------------------------------------------------- the training loop

def train(tmp_path, name, capsys, **kw):
    cfg = token_cfg(**kw)
    data, model = setup(cfg)
    optimizer, state = build_optimizer(cfg), RunState()
    run = tmp_path / name
    save_run(run / "last.npz", model, optimizer, state, cfg, data)
    train_loop(run, model, optimizer, data, cfg, state, "cpu")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    return cfg, data, model, state, lines, run


@pytest.mark.parametrize("kw, mode, n", [({"carry_state": True}, "stream", None), ({}, "chunked", None),
                                         ({"carry_state": True, "eval_tokens": 200}, "stream", 200),
                                         ({"eval_tokens": 150}, "chunked", 150)])
def test_validation_uses_the_eval_mode_and_eval_tokens_and_the_epoch_line_says_so(tmp_path, capsys, kw, mode, n):
    cfg, data, model, state, lines, _ = train(tmp_path, "run", capsys, **kw)
    assert len(lines) == 2
    v, ppl, shown, _, first = EPOCH_LINE.search(lines[-1]).groups()
    assert shown == mode and first == (None if n is None else f"{n:,}")
    assert float(ppl) == pytest.approx(math.exp(state.history.valid_loss[-1]), abs=0.006)
    r = evaluate_split(model, data, "valid", cfg, mode=mode, max_tokens=n)        # the last epoch's parameters
    assert state.history.valid_loss[-1] == r["nll"] and float(v) == pytest.approx(r["nll"], abs=6e-5)
    if n is not None:
        assert r["count"] <= n


def test_eval_tokens_for_binary_data_is_refused_before_the_first_epoch(tmp_path):
    cfg = {**token_cfg(), "model": "nade", "data": "synthetic-fvsbn", "dim": 6, "n_train": 300, "hidden": 4,
           "eval_batch_size": 100, "eval_tokens": 100}
    data, model = setup(cfg)
    with pytest.raises(UsageError, match="only applies to token data"):
        train_loop(tmp_path / "r", model, build_optimizer(cfg), data, cfg, RunState(), "cpu")
    assert not (tmp_path / "r").exists()


def test_scheduled_sampling_eps_is_in_the_epoch_line_and_history_csv(tmp_path, capsys):
    cfg, data, model, state, lines, run = train(tmp_path, "ss", capsys, scheduled_sampling="linear", ss_c=0.01,
                                                ss_k=1.0, ss_min=0.0)
    steps = math.ceil(data.train.size // 6 / 16)                      # windows of 6, 16 a batch: 21 a step
    want = [teacher_forcing_schedule("linear", e * steps - 1, 1.0, 0.01, 0.0) for e in (1, 2)]
    assert want == pytest.approx([0.8, 0.59])
    assert [float(re.search(r"  eps (\d\.\d+)", ln).group(1)) for ln in lines] == pytest.approx(want, abs=5e-4)
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["teacher_forcing"]) for r in rows] == pytest.approx(want)
    assert state.teacher_forcing == pytest.approx(want)
    _, _, _, _, plain_lines, plain = train(tmp_path, "plain", capsys)
    assert " eps " not in plain_lines[-1]
    assert "teacher_forcing" not in (plain / "history.csv").read_text()
