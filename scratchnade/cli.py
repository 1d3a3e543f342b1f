"""The command line: ``python -m scratchnade {train,evaluate,sample,exposure-bias,gradcheck} ...``.

    python -m scratchnade train --model rnn --hidden 64 --lr 0.01   # synthetic Markov tokens, known entropy
    python -m scratchnade train --model rnn --data wikitext-2 --hidden 256 --dropout 0.2 --clip 5
    python -m scratchnade train --resume runs/rnn-wikitext-2-20250101-120000 --epochs 20
    python -m scratchnade evaluate runs/rnn-wikitext-2-20250101-120000 --mode sliding
    python -m scratchnade sample runs/rnn-wikitext-2-20250101-120000 --prompt "the" --temperature 0.8
    python -m scratchnade train --model rnn --data shakespeare-char --scheduled-sampling inverse-sigmoid
    python -m scratchnade exposure-bias runs/rnn-shakespeare-char-20250101-120000
    python -m scratchnade gradcheck --model all

Precedence of `train` options: built-in defaults < the model's and data kind's defaults <
``--config FILE`` (JSON, or TOML on Python >= 3.11, with the option names as keys) < flags.

A run directory (see :mod:`scratchnade.runs`) gets config.json, last.npz (every epoch
boundary), best.npz (best validation loss), history.csv / .json and learning_curve.png.
Ctrl-C or a NaN loss leaves last.npz at the end of the last completed epoch; ``--resume``
restarts the interrupted epoch from its first batch, so the resumed run is bit-identical
(on the CPU) to one that was never interrupted.

Exit codes: 0 ok; 1 a gradient check failed; 2 bad arguments, missing data, unusable
checkpoint or device; 3 training diverged (NaN/inf); 130 interrupted (Ctrl-C).
"""
import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .backend import DeviceUnavailableError
from .checkpoint import CheckpointError, load_checkpoint
from .commands import cmd_evaluate, cmd_exposure_bias, cmd_gradcheck, cmd_sample
from .data.download import MissingDataError
from .optim import linear_anneal
from .registry import (DATASETS, KIND_DEFAULTS, MODELS, ModelUnavailable, build_model, data_spec, load_data,
                       model_spec)
from .runs import (RunState, UsageError, build_optimizer, check_device, evaluate_split, load_params, restore,
                   save_run, train_loop, write_config)
from .train import TrainingDiverged

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


# ----------------------------------------------------------------------------- train options

DEFAULTS = {}         # run-config key -> built-in default (flags parse to SUPPRESS when absent)
MODEL_KEYS = ("hidden", "order", "layers", "tied", "embed_dim", "encoding", "form", "start", "carry_state",
              "dropout", "init_scale", "scheduled_sampling", "ss_k", "ss_c", "ss_min")
SS_KEYS = ("ss_k", "ss_c", "ss_min")
DATA_KEYS = {"dim": "synthetic-fvsbn", "vocab": "synthetic-markov", "seq_len": "synthetic-ar"}
RESUMABLE = {"epochs", "patience", "max_batches", "progress", "plot", "device", "data_dir", "download",
             "eval_batch_size", "eval_mode", "lr", "clip", "lr_decay", "lr_patience"}


def _opt(group, *flags, default=None, help="", **kw):
    """add_argument whose absence leaves no attribute (so explicit flags can be told apart)."""
    shown = f" (default: {default})" if default not in (None, False) else ""
    action = group.add_argument(*flags, default=argparse.SUPPRESS, help=help + shown, **kw)
    DEFAULTS[action.dest] = default
    return action


def _add_train_options(p):
    flag = argparse.BooleanOptionalAction
    g = p.add_argument_group("model")
    _opt(g, "--model", default="nade", help=f"one of {', '.join(MODELS)}")
    _opt(g, "--hidden", type=int, help="hidden units H (default: the model's)")
    _opt(g, "--order", type=int, help="window length p of token models (the RNN's BPTT length; default 8, "
                                      "rnn 35); gaussian-ar: the AR order (default 1)")
    _opt(g, "--layers", type=int, help="deep-nade: hidden layers")
    _opt(g, "--tied", action=flag, help="sequence-nade, rnn: share input and output weights")
    _opt(g, "--embed-dim", type=int, help="softmax-fvsbn: embedding width K (implies --encoding embedding)")
    _opt(g, "--encoding", choices=["onehot", "embedding"], help="softmax-fvsbn: input encoding")
    _opt(g, "--form", choices=["matrix", "vector"], help="fvsbn: general (matrix) or lecture (vector) form")
    _opt(g, "--start", choices=["stationary", "conditional"],
         help="gaussian-ar: likelihood of the first p values")
    _opt(g, "--carry-state", action=flag, help="rnn: carry the hidden state across batches (truncated BPTT "
                                               "on contiguous streams; reset every epoch)")
    _opt(g, "--dropout", type=float, help="input/embedding dropout probability (token models)")
    _opt(g, "--init-scale", type=float, help="std of the initial weights (default: the model's)")
    _opt(g, "--init-bias", action=flag, default=True,
         help="start the output bias at the training data's marginals: pixel logits (nade) or "
              "unigram log-frequencies (token models)")
    _opt(g, "--scheduled-sampling", choices=["linear", "exponential", "inverse-sigmoid"],
         help="rnn: scheduled sampling (Bengio et al. 2015): at step i feed the real token with probability "
              "eps_i, else the model's own draw; eps_i decays linearly (max(min, k - c i)), exponentially "
              "(k^i) or as an inverse sigmoid (k / (k + exp(i / k)))")
    _opt(g, "--ss-k", type=float, help="scheduled sampling: k (default 1 linear, 0.999 exponential, "
                                       "500 inverse-sigmoid)")
    _opt(g, "--ss-c", type=float, help="scheduled sampling, linear: slope c per step (default 1e-3)")
    _opt(g, "--ss-min", type=float, help="scheduled sampling: floor eps_min of eps_i (default 0)")
    g = p.add_argument_group("data")
    _opt(g, "--data", help=f"one of {', '.join(DATASETS)} (default: the synthetic source of the "
                           f"model's kind)")
    _opt(g, "--data-dir", help="folder with the data sets (default: $SCRATCHNADE_DATA, else "
                               "~/.cache/scratchnade)")
    _opt(g, "--download", action=flag, default=False, help="download a missing data set")
    _opt(g, "--data-seed", type=int, default=0, help="seed of a synthetic source")
    _opt(g, "--n-train", type=int, help="synthetic: training examples / tokens / sequences "
                                        "(default 10000 / 100000 / 2000; valid and test get a fifth, "
                                        "at least 500)")
    _opt(g, "--dim", type=int, default=10, help="synthetic-fvsbn: bits D")
    _opt(g, "--vocab", type=int, default=16, help="synthetic-markov: vocabulary size V")
    _opt(g, "--seq-len", type=int, default=50, help="synthetic-ar: sequence length T")
    g = p.add_argument_group("optimisation")
    _opt(g, "--optimizer", choices=["sgd", "nesterov", "adam"], default="adam", help="update rule")
    _opt(g, "--lr", type=float, default=1e-3, help="learning rate (gaussian-ar: 0.01)")
    _opt(g, "--momentum", type=float, default=0.9, help="nesterov momentum")
    _opt(g, "--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), default=[0.9, 0.999],
         help="adam moment decay rates")
    _opt(g, "--eps", type=float, default=1e-8, help="adam epsilon")
    _opt(g, "--weight-decay", type=float, default=0.0, help="L2 penalty weight_decay/2 ||w||^2")
    _opt(g, "--clip", type=float, help="clip the global gradient norm to this")
    _opt(g, "--batch-size", type=int,
         help="examples or windows per step (default 100 binary, 50 real, 32 tokens)")
    _opt(g, "--epochs", type=int, default=10, help="epochs to train (in all, counting resumed ones)")
    _opt(g, "--patience", type=int, help="early stopping: epochs without a better validation loss")
    _opt(g, "--lr-decay", type=float, help="multiply lr by this when validation stalls")
    _opt(g, "--lr-patience", type=int, default=1, help="stalled epochs before each lr decay")
    _opt(g, "--warmup", type=int, default=0, help="linear lr warm-up over this many steps")
    _opt(g, "--anneal", type=float, nargs="?", const=0.0, metavar="FROM",
         help="decay lr linearly to 0 over the run's --epochs, constant until the fraction FROM of its steps "
              "(bare --anneal: from the first step; --anneal 0.5: over the second half)")
    _opt(g, "--max-batches", type=int, help="at most this many training batches per epoch (quick runs)")
    _opt(g, "--seed", type=int, default=0, help="initialisation, batch order and dropout")
    g = p.add_argument_group("hardware and output")
    _opt(g, "--device", default="cpu", help="cpu or gpu (CuPy)")
    _opt(g, "--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype")
    _opt(g, "--eval-batch-size", type=int, help="examples or windows per evaluation batch (default 500 / 64)")
    _opt(g, "--eval-mode", choices=["chunked", "sliding", "stream"], default="chunked",
         help="token models: final test evaluation in chunked windows, a sliding window, or (rnn) "
              "streams with the state carried")
    _opt(g, "--progress", action=flag, help="progress bar with items/s (default: when stderr is a terminal)")
    _opt(g, "--plot", action=flag, default=True, help="redraw learning_curve.png every epoch")
    p.add_argument("--config", help="JSON or TOML file of options (keys as above: lr, batch_size, ...)")
    p.add_argument("--run-dir", help="where to write the run (default runs/<model>-<data>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.npz")


def read_config(path):
    """Options from a JSON or TOML file, keys normalised to run-config names (dashes -> underscores)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err}") from err
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError as err:
                raise UsageError("TOML config files need Python >= 3.11 (tomllib); use JSON") from err
            cfg = tomllib.loads(text)
        else:
            cfg = json.loads(text)
    except ValueError as err:                          # JSONDecodeError and TOMLDecodeError
        kind = path.suffix[1:].upper() or "JSON"
        raise UsageError(f"config file {path} is not valid {kind}: {err}") from err
    if not isinstance(cfg, dict):
        raise UsageError(f"config file {path} must hold one object of options")
    cfg = {k.replace("-", "_"): v for k, v in cfg.items()}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"unknown option(s) {unknown} in {path}; known: {', '.join(sorted(DEFAULTS))}")
    return cfg


def _check_choices(parser, cfg):
    """Config-file values obey the same choices as flags."""
    for action in parser._actions:
        if action.choices and action.dest in cfg and cfg[action.dest] is not None \
                and cfg[action.dest] not in action.choices:
            raise UsageError(f"{action.dest} must be one of {list(action.choices)}, got {cfg[action.dest]!r}")


def fresh_config(parser, explicit, file_cfg):
    """The run config of a new run: defaults < kind and model defaults < config file < flags."""
    given = {**file_cfg, **explicit}
    try:
        spec = model_spec(given.get("model", DEFAULTS["model"]))
        cfg = {**DEFAULTS, **KIND_DEFAULTS[spec.kind], **spec.defaults, **given}
        data = data_spec(cfg["data"], spec.kind)
    except ValueError as err:
        raise UsageError(str(err)) from err
    _check_choices(parser, cfg)
    cfg["model"] = spec.name
    cfg["data"] = data.name
    if data.kind != spec.kind:
        fits = ", ".join(d for d, s in DATASETS.items() if s.kind == spec.kind)
        raise UsageError(f"model {spec.name} models {spec.kind} data, but {data.name} holds "
                         f"{data.kind} data; {spec.kind} data sets: {fits}")
    for key in MODEL_KEYS:
        used = key in spec.options or (key == "order" and spec.kind == "tokens")
        if key in given and given[key] is not None and not used:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to model {spec.name}")
    if any(given.get(k) is not None for k in SS_KEYS) and given.get("scheduled_sampling") is None:
        raise UsageError("--ss-k, --ss-c and --ss-min need --scheduled-sampling")
    for key, source in DATA_KEYS.items():
        if key in given and data.name != source:
            raise UsageError(f"--{key.replace('_', '-')} only applies to --data {source}")
    if "n_train" in given and not data.synthetic:
        raise UsageError("--n-train only applies to the synthetic data sets")
    if "momentum" in given and cfg["optimizer"] != "nesterov":
        raise UsageError("--momentum only applies to --optimizer nesterov")
    if ("betas" in given or "eps" in given) and cfg["optimizer"] != "adam":
        raise UsageError("--betas and --eps only apply to --optimizer adam")
    if cfg.get("anneal") is not None:
        try:
            linear_anneal(0.0, cfg["anneal"])                    # the schedule's own check of FROM
        except ValueError:
            raise UsageError(f"--anneal FROM must be in [0, 1) (the fraction of the run at constant lr), "
                             f"got {cfg['anneal']}") from None
    return cfg


def resume_config(run_dir, explicit, file_cfg):
    """The run config of `run_dir` (its config.json, else the one in last.npz), with the options
    that may change on resume overridden.  Returns (config, keys given now)."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").is_file():
        saved = read_config(run_dir / "config.json")
    else:
        saved = load_checkpoint(run_dir / "last.npz")[0].get("run_config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{run_dir}/last.npz has no run config: it was not written by `train`")
    given = {**file_cfg, **explicit}
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE and saved.get(k) != v)
    if changed:
        raise UsageError(f"cannot change {', '.join(changed)} when resuming {run_dir} (the run used "
                         + ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
                         + f"); only {', '.join(sorted(RESUMABLE))} may change")
    return {**DEFAULTS, **saved, **given}, set(given)


def _default_run_dir(cfg):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg['model']}-{cfg['data']}-{stamp}"
    k = 1
    while path.exists():
        path, k = Path("runs") / f"{cfg['model']}-{cfg['data']}-{stamp}-{k}", k + 1
    return path


# ----------------------------------------------------------------------------- train

def cmd_train(args, parser):
    """Train a new run, or resume one; prints one line per epoch and the final test NLL."""
    explicit = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    file_cfg = read_config(args.config) if args.config else {}
    if args.resume:
        if args.run_dir and Path(args.run_dir) != Path(args.resume):
            raise UsageError("--resume RUN_DIR already names the run directory; drop --run-dir")
        run_dir = Path(args.resume)
        cfg, given = resume_config(run_dir, explicit, file_cfg)
    else:
        cfg = fresh_config(parser, explicit, file_cfg)
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(cfg)
        if (run_dir / "last.npz").exists():
            raise UsageError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                             f"or choose another --run-dir")
    check_device(cfg["device"])
    data = load_data(cfg)
    spec = model_spec(cfg["model"])
    try:
        model = build_model(spec, cfg, data, cfg["device"])
        optimizer = build_optimizer(cfg)
    except (TypeError, ValueError) as err:
        raise UsageError(f"cannot build {spec.name}: {err}") from err
    if args.resume:
        state = restore(run_dir / "last.npz", model, optimizer, data)
        for key in ("lr", "clip"):
            if key in given:
                setattr(optimizer, key, cfg[key])
        write_config(run_dir, cfg)
        print(f"resumed {run_dir} after epoch {state.epoch}")
    else:
        if cfg["init_bias"] and hasattr(model, "init_bias"):
            model.init_bias(data.train)              # b = pixel logits / log unigram frequencies
        state = RunState()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)
        save_run(run_dir / "last.npz", model, optimizer, state, cfg, data)
    _print_header(run_dir, model, data, cfg)
    progress = cfg["progress"] if cfg["progress"] is not None else sys.stderr.isatty()
    try:
        train_loop(run_dir, model, optimizer, data, {**cfg, "progress": progress}, state, cfg["device"])
    except TrainingDiverged as err:
        return _diverged(run_dir, str(err), state)
    except KeyboardInterrupt:
        print(f"\ninterrupted during epoch {state.epoch + 1}. {run_dir}/last.npz holds the end of epoch "
              f"{state.epoch} (checkpoints are saved at epoch boundaries; the partial epoch is dropped).\n"
              f"continue with:  python -m scratchnade train --resume {run_dir}\n"
              f"(epoch {state.epoch + 1} restarts from its first batch, so the result is bit-identical to an "
              f"uninterrupted run)", file=sys.stderr)
        return EXIT_INTERRUPTED
    _final_report(run_dir, model, data, cfg, state)
    return EXIT_OK


def _print_header(run_dir, model, data, cfg):
    sizes = " / ".join(f"{len(data.split(s)) if data.kind != 'tokens' else data.split(s).size:,}"
                       for s in ("train", "valid", "test"))
    extra = f", V = {len(data.vocab):,}" if data.vocab is not None else f", {data.dim} per {data.unit}"
    print(f"run    {run_dir}")
    print(f"model  {model!r}: {model.num_parameters():,} parameters on {cfg['device']}")
    print(f"data   {data.name}: {sizes} {data.unit}s (train / valid / test{extra})")
    print(f"optim  {cfg['optimizer']} lr {cfg['lr']:g}, batch {cfg['batch_size']}"
          + (f", windows of {cfg['order']}" if data.kind == "tokens" else "") + f", {cfg['epochs']} epochs")


def _diverged(run_dir, message, state):
    print(f"error: training diverged: {message}\n"
          f"{run_dir}/last.npz is untouched: it holds the last good parameters "
          f"(end of epoch {state.epoch}).\n"
          f"try a smaller --lr, --clip 1, or --warmup 500; continue from the last good epoch with\n"
          f"  python -m scratchnade train --resume {run_dir} --lr <smaller>", file=sys.stderr)
    return EXIT_DIVERGED


def _final_report(run_dir, model, data, cfg, state):
    """Test NLL of the best-on-validation parameters, against the true entropy for synthetic data."""
    best = run_dir / "best.npz"
    if best.is_file():
        load_params(model, load_checkpoint(best)[1], best)
    if state.best_epoch is not None:
        print(f"best epoch {state.best_epoch}: valid NLL {state.best_valid:.4f} nats per {data.unit}")
    r = evaluate_split(model, data, "test", cfg, mode=cfg["eval_mode"], device=cfg["device"])
    unit = f"nats per {data.unit}"
    if r["mode"]:
        print(f"test perplexity {r['ppl']:.3f}, {r['bits']:.4f} bits per token "
              f"({r['mode']} evaluation, windows of {r['p']} tokens)")
    line = f"test NLL {r['nll']:.3f} {unit}"
    if r["true_entropy"] is not None:
        line += f" vs true entropy {r['true_entropy']:.3f} {unit} (gap {r['nll'] - r['true_entropy']:.3f})"
    print(line)


# ----------------------------------------------------------------------------- main

def build_parser():
    p = argparse.ArgumentParser(prog="scratchnade", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"scratchnade {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model on a data set (synthetic by default)")
    _add_train_options(t)
    t.set_defaults(func=lambda args: cmd_train(args, t))
    for name, func, helptext in (("evaluate", cmd_evaluate, "NLL / perplexity of a checkpoint on a split"),
                                 ("sample", cmd_sample, "draw samples from a checkpoint")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT",
                       help="a run directory (its best.npz) or an .npz file")
        s.add_argument("--device", default="cpu", help="cpu or gpu")
        s.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
        s.add_argument("--data-dir", help="folder with the data sets")
        s.add_argument("--download", action="store_true", default=None, help="download missing data")
        s.set_defaults(func=func)
        if name == "evaluate":
            s.add_argument("--split", choices=["valid", "test"], default="test")
            s.add_argument("--mode", choices=["chunked", "sliding", "stream"], default="chunked",
                           help="token models: windows as trained, a sliding window (full history), "
                                "or (rnn) streams with the hidden state carried")
            s.add_argument("--eval-batch-size", type=int, help="examples or windows per batch")
            s.add_argument("--json", action="store_true", help="print one JSON object")
        else:
            s.add_argument("-n", type=int, help="samples (default 3 texts, 100 images, 5 sequences)")
            s.add_argument("--length", type=int,
                           help="tokens to generate (default 200), or the length of AR sequences")
            s.add_argument("--temperature", type=float, default=1.0)
            s.add_argument("--top-k", type=int, help="text: sample among the k most likely tokens")
            s.add_argument("--prompt", help="text to continue (tokens models)")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--out", help="PNG for image samples (default RUN_DIR/samples.png)")
            s.add_argument("--complete", type=int, metavar="N",
                           help="also complete the bottom half of N test images")
    _add_exposure_bias_parser(sub)
    g = sub.add_parser("gradcheck", help="finite-difference check of every parameter's gradient (float64)")
    g.add_argument("--model", default="all", help=f"one of {', '.join(MODELS)}, or all")
    g.add_argument("--seed", type=int, default=0, help="draws the sizes, parameters and batch")
    g.add_argument("--tol", type=float, default=1e-6, help="largest relative error that passes")
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=cmd_gradcheck)
    return p


def _add_exposure_bias_parser(sub):
    e = sub.add_parser("exposure-bias", help="figures of the train / generate mismatch of a checkpoint",
                       description="Writes into RUN_DIR/exposure-bias/: token models: position_nll.png (NLL "
                                   "by position of real text and of the model's samples under a reference "
                                   "n-gram) and drift.png (n-gram drift and distinct-n by position); binary "
                                   "NADE / FVSBN: completions.png (top halves of test images completed); "
                                   "gaussian-ar: k_step_error.png (free-running k-step error vs closed form). "
                                   "Also summary.json with the numbers.")
    e.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best.npz) or an .npz file")
    e.add_argument("--device", default="cpu", help="cpu or gpu")
    e.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir", help="folder with the data sets")
    e.add_argument("--download", action="store_true", default=None, help="download missing data")
    e.add_argument("-n", type=int, help="samples and real windows (default 256), or images to complete (10)")
    e.add_argument("--length", type=int, help="tokens per sequence (default 200), or the largest horizon k "
                                              "of gaussian-ar (default 20)")
    e.add_argument("--prompt-len", type=int, default=0,
                   help="tokens: start every sample from this many real tokens (default 0: from scratch)")
    e.add_argument("--ngram", type=int, help="order of the reference n-gram (default 4 for characters, 3 for words)")
    e.add_argument("--window", type=int, default=20, help="tokens: positions per bin of the drift curves")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--top-k", type=int, help="tokens: sample among the k most likely tokens")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="output folder (default RUN_DIR/exposure-bias)")
    e.set_defaults(func=cmd_exposure_bias)


def main(argv=None):
    """Run one command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                   # argparse errors (2) and --help (0)
        return int(exc.code or 0)
    try:
        return args.func(args)
    except KeyboardInterrupt:                   # outside training (loading data, evaluating, sampling)
        print(f"\nscratchnade {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ModelUnavailable) as err:
        print(f"scratchnade {args.command}: error: {err}", file=sys.stderr)
    except CheckpointError as err:
        print(f"scratchnade {args.command}: error: unusable checkpoint: {err}", file=sys.stderr)
    except MissingDataError as err:
        print(f"scratchnade {args.command}: error: {err}\n  from the command line: --data-dir DIR names the "
              f"folder (or set SCRATCHNADE_DATA), and --download fetches the missing files", file=sys.stderr)
    except DeviceUnavailableError as err:
        print(f"scratchnade {args.command}: error: {err}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
