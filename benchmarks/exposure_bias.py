"""Exposure-bias figures: a char-level recurrent NADE trained with teacher forcing and with
scheduled sampling, a binary NADE's half-image completions, and the exact AR(1) case.

    python benchmarks/exposure_bias.py [--tf runs/eb-rnn-tf] [--ss runs/eb-rnn-ss]
        [--ss75 runs/eb-rnn-ss75] [--nade runs/demo-nade] [--out benchmarks/figures/exposure_bias]

A run directory without a checkpoint is trained first through the command line (about two
minutes each on one free CPU core; the NADE run is skipped when absent):

    python -m scratchnade train --model rnn --data shakespeare-char --hidden 128 --order 100 \\
        --batch-size 32 --lr 3e-3 --clip 1 --epochs 10 --seed 0 [SCHEDULED SAMPLING]

with no scheduled sampling (teacher forcing), ``--scheduled-sampling inverse-sigmoid`` (eps_i =
k / (k + exp(i / k)), k = 500: from 1 to 0.49 over the 3,140 steps), and the same with
``--ss-min 0.75``.  Each run's last.npz (the end of its 10 epochs, where scheduled sampling has
had its full effect) is used: the best teacher-forced validation NLL of both scheduled runs is at
epoch 6 (eps ~ 0.92), where they are still the same model.

Writes into --out: rnn_position_nll.png, rnn_drift.png, schedules.png, rnn_samples.txt,
nade_completions.png, ar_k_step.png; prints one JSON line per result.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from scratchnade.cli import main as cli
from scratchnade.commands import data_for
from scratchnade.models import LinearGaussianAR
from scratchnade.ngram import NGramModel
from scratchnade.plots import (completion_grid, k_step_errors, position_curves, position_nll_curves, save_figure,
                               teacher_forcing_schedules)
from scratchnade.runs import model_from_checkpoint
from scratchnade import sampling

RNN_ARGS = ["--model", "rnn", "--data", "shakespeare-char", "--hidden", "128", "--order", "100",
            "--batch-size", "32", "--lr", "3e-3", "--clip", "1", "--epochs", "10", "--seed", "0", "--no-progress"]
RUNS = {  # flag: (label, default run directory, extra training flags)
    "tf": ("teacher forcing", "runs/eb-rnn-tf", []),
    "ss": ("scheduled sampling, eps to 0.5", "runs/eb-rnn-ss", ["--scheduled-sampling", "inverse-sigmoid"]),
    "ss75": ("scheduled sampling, eps >= 0.75", "runs/eb-rnn-ss75",
             ["--scheduled-sampling", "inverse-sigmoid", "--ss-min", "0.75"]),
}


def emit(**record):
    print(json.dumps(record), flush=True)


def load(run_dir, data_dir, checkpoint="best.npz"):
    """(meta, model, data) of a run's checkpoint."""
    meta, model = model_from_checkpoint(Path(run_dir) / checkpoint)
    args = argparse.Namespace(data=None, data_dir=data_dir, download=None, eval_batch_size=None)
    return meta, model, data_for(meta, model, args, run_dir)[0]


def train_if_missing(run_dir, extra):
    if not (Path(run_dir) / "last.npz").is_file():
        code = cli(["train", *RNN_ARGS, *extra, "--run-dir", str(run_dir)])
        if code:
            raise SystemExit(f"training {run_dir} failed with exit code {code}")


def text_figures(runs, out, data_dir, seed):
    """Per-position NLL (side by side), drift and distinct-n, the schedules, a few samples."""
    loaded = {label: load(d, data_dir, "last.npz") for label, d in runs.items()}
    data = next(iter(loaded.values()))[2]
    V = len(data.vocab)
    ref = NGramModel(4).fit(data.train, V, valid=data.valid)
    emit(result="reference", model=repr(ref), valid_nll=ref.nll(data.valid), test_nll=ref.nll(data.test))
    fig = Figure(figsize=(6 * len(loaded), 4.5), layout="constrained")
    axes = fig.subplots(1, len(loaded), sharey=True)
    scratch, prompt_len = {}, 50
    for ax, (label, (meta, model, _)) in zip(axes, loaded.items()):
        r = sampling.position_nll(model, ref, data.test, 200, n=256, prompt_len=prompt_len, seed=seed)
        valid, epoch = meta["state"]["history"]["valid_loss"][-1], meta["epoch"]
        position_nll_curves(r, smooth=3, reference="4-gram", ax=ax,
                            title=f"{label}\nepoch {epoch}: valid NLL {valid:.3f} (teacher forced)")
        after = slice(prompt_len, None)
        emit(result="position_nll", model=label, valid_nll=valid, prompt_len=prompt_len,
             model_on_real=float(r.model_data[after].mean()), model_on_samples=float(r.model_samples[after].mean()),
             ref_on_real=float(r.reference_data[after].mean()),
             ref_on_samples=float(r.reference_samples[after].mean()),
             ref_on_samples_first10=float(r.reference_samples[after][:10].mean()),
             ref_on_samples_last50=float(r.reference_samples[-50:].mean()))
        scratch[label] = sampling.sample(model, 1024, 200, seed=seed + 1)           # from h_0, no prompt
    fig.suptitle("Char-level recurrent NADE (H = 128) on tiny-shakespeare: the first 50 characters are real "
                 "test text, the rest the model's own samples (256 of each)")
    save_figure(fig, out / "rnn_position_nll.png")

    floor = sampling.random_windows(data.train, 200, 1024, seed + 2)
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, order in zip(axes[:2], (1, 2)):
        curves = {f"{label} samples": sampling.drift_by_position(s, data.train, V, order, 20)
                  for label, s in scratch.items()}
        curves["training windows (finite-sample floor)"] = sampling.drift_by_position(floor, data.train, V, order, 20)
        position_curves(curves, ylabel=f"total variation to the training {('uni', 'bi')[order - 1]}grams", ax=ax,
                        title=f"{('unigram', 'bigram')[order - 1]} drift (1024 sequences, bins of 20)")
        emit(result=f"drift_order{order}", **{k: float(c.value.mean()) for k, c in curves.items()})
    curves = {f"{label} samples": sampling.distinct_n_by_position(s, 2, 20) for label, s in scratch.items()}
    curves["training windows"] = sampling.distinct_n_by_position(floor, 2, 20)
    position_curves(curves, ylabel="distinct-2 within a bin (1 - repetition)", ax=axes[2],
                    title="distinct bigrams (bins of 20)")
    emit(result="distinct2", **{k: float(c.value.mean()) for k, c in curves.items()})
    fig.suptitle("Samples from scratch (h_0) against the training text, by position")
    save_figure(fig, out / "rnn_drift.png")

    lines = []
    for label, (meta, model, _) in loaded.items():
        for text in sampling.sample_text(model, data.vocab, 3, 300, "ROMEO:\n", temperature=1.0, seed=seed):
            lines += [f"--- {label}, T = 1 ---", text, ""]
    (out / "rnn_samples.txt").write_text("\n".join(lines), encoding="utf-8")

    steps = max(meta["state"]["step"] for meta, _, _ in loaded.values())
    schedules = {"linear (k = 1, c = 1e-3)": {"kind": "linear"},
                 "exponential (k = 0.999)": {"kind": "exponential"},
                 "inverse-sigmoid (k = 500): run ss": {"kind": "inverse-sigmoid"},
                 "inverse-sigmoid (k = 500), eps_min = 0.75: run ss75": {"kind": "inverse-sigmoid", "eps_min": 0.75}}
    save_figure(teacher_forcing_schedules(steps, schedules, title=f"eps_i over the {steps} training steps"),
                out / "schedules.png")


def nade_figure(run_dir, out, data_dir, seed):
    meta, model, data = load(run_dir, data_dir)
    picks = np.sort(np.random.default_rng(seed).choice(len(data.test), 10, replace=False))
    orig, comps = sampling.completion_pairs(model, data.test[picks], 14 * 28, 3, seed)
    save_figure(completion_grid(orig, comps, title=f"NADE (H = {model.config['H']}): top 14 rows of test digits "
                                                   f"given, 3 completions each"), out / "nade_completions.png")
    nll = lambda x: -float(np.mean(np.asarray(model.log_prob(x))))             # noqa: E731
    emit(result="nade_completions", nll_originals=nll(orig), nll_completions=nll(comps.reshape(-1, 784)),
         pixels_differing=float(np.abs(comps - orig[:, None])[..., 392:].mean()))


def ar_figure(out, seed, rho=0.9, sigma=1.0):
    truth = LinearGaussianAR(1, rho=[rho], mu=0.0, sigma=sigma, dtype=np.float64)
    x = np.asarray(truth.sample(2000, 80, seed))
    model = LinearGaussianAR.fit_closed_form(x, dtype=np.float64)
    r = sampling.ar_k_step_error(model, x, 40, seed=seed)
    rho_hat, sigma_hat = float(model.params["rho"][0]), float(np.exp(model.params["log_sigma"]))
    closed = sampling.ar_k_step_error_closed_form(rho_hat, sigma_hat, 40)
    save_figure(k_step_errors(r, closed, title=f"AR(1) fitted to 2000 sequences of 80 values\n"
                                               f"true rho = {rho}, sigma = {sigma}; fitted {rho_hat:.3f}, "
                                               f"{sigma_hat:.3f}"), out / "ar_k_step.png")
    emit(result="ar_k_step", rho=rho_hat, sigma=sigma_hat, teacher_forced=float(r.teacher_forced[0]),
         k=[1, 5, 10, 20, 40], free_running=[float(r.free_running[k - 1]) for k in (1, 5, 10, 20, 40)],
         sample_var=[float(r.sample_var[k - 1]) for k in (1, 5, 10, 20, 40)],
         closed_form=[float(closed[k - 1]) for k in (1, 5, 10, 20, 40)], stationary_var=r.stationary_var)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (label, run_dir, _) in RUNS.items():
        p.add_argument(f"--{flag}", default=run_dir, help=f"RNN run: {label} (trained if missing)")
    p.add_argument("--nade", default="runs/demo-nade", help="binary NADE run on binarized MNIST")
    p.add_argument("--out", default="benchmarks/figures/exposure_bias")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ar_figure(out, args.seed)
    for flag, (_, _, extra) in RUNS.items():
        train_if_missing(getattr(args, flag), extra)
    text_figures({label: getattr(args, flag) for flag, (label, _, _) in RUNS.items()}, out, args.data_dir, args.seed)
    if (Path(args.nade) / "best.npz").is_file():
        nade_figure(args.nade, out, args.data_dir, args.seed)
    print(f"figures written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
