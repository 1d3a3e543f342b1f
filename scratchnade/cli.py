"""The command line: python -m scratchnade {train,evaluate,sample,exposure-bias,gradcheck} ...

    python -m scratchnade train --model rnn --hidden 64 --lr 0.01 --epochs 5      # Markov tokens, known entropy
    python -m scratchnade train --model nade --data binarized-mnist --hidden 500 --epochs 50 --patience 5
    python -m scratchnade train --resume runs/rnn-wikitext-2-<timestamp> --epochs 20     # continues exactly
    python -m scratchnade evaluate runs/rnn-wikitext-2-<timestamp> --split test --mode stream
    python -m scratchnade sample runs/rnn-wikitext-2-<timestamp> --prompt "the" --temperature 0.8
    python -m scratchnade exposure-bias runs/rnn-shakespeare-char-<timestamp>
    python -m scratchnade gradcheck --model all

Precedence of train options: built-in defaults < the model's and the data kind's defaults <
--config FILE (JSON, or TOML on Python >= 3.11, with the option names as keys) < flags.
Every option is checked (type and range) before a run directory is made or data is loaded.

A run directory gets config.json (every option, resolved), last.npz (every epoch boundary),
best.npz (best validation loss), history.csv / .json and learning_curve.png.  One process at
a time writes to it (a lock file, RUN_DIR/.lock); a fresh train refuses a directory that
already holds a run.  Ctrl-C, SIGTERM or a diverging loss leaves last.npz at the end of the
last completed epoch; --resume restarts the interrupted epoch from its first batch, so the
resumed run is bit-identical (on the CPU) to one that was never interrupted.
"""
import argparse
import json
import math
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

from . import __version__
from .backend import DeviceUnavailableError
from .checkpoint import CheckpointError, load_checkpoint
from .commands import (EXIT_CODES, check_number, cmd_evaluate, cmd_exposure_bias, cmd_gradcheck,
                       cmd_sample, nll_stderr, one_line, ppl_text)
from .data.download import ChecksumError, DownloadError, MissingDataError
from .exact import MAX_ENUM_D
from .optim import linear_anneal
from .parallel import set_threads
from .registry import (DATASETS, KIND_DEFAULTS, MODELS, SYNTHETIC_N_TRAIN, DataError, ModelUnavailable,
                       build_model, data_spec, defaults_by_model, load_data, model_defaults, model_spec,
                       teacher_forcing_eps)
from .rundir import RUN_FILES, RunDirError, RunDirLock, check_fresh, checkpoint_epoch, clean_partials
from .runs import (RunState, UsageError, build_optimizer, check_device, evaluate_split, load_params, restore,
                   save_run, train_batches, train_loop, write_config)
from .train import TrainingDiverged

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
DIVERGE_FACTOR = 100.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (exit code 143)."""


# ----------------------------------------------------------------------------- train options

DEFAULTS = {}         # run-config key -> built-in default (flags parse to SUPPRESS when absent)
OPTIONS = {}          # run-config key -> its argparse action (the type a config file must give)
MODEL_KEYS = ("hidden", "order", "layers", "tied", "embed_dim", "encoding", "form", "start", "carry_state",
              "dropout", "init_scale", "scheduled_sampling", "ss_k", "ss_c", "ss_min", "activation", "direct",
              "masks", "shuffle_order", "context", "d_model", "heads")
SS_KEYS = ("ss_k", "ss_c", "ss_min")
DATA_KEYS = {"dim": "synthetic-fvsbn", "vocab": "synthetic-markov", "seq_len": "synthetic-ar"}
DATA_KEY_DEFAULTS = {"dim": 10, "vocab": 16, "seq_len": 50}
RESUMABLE = {"epochs", "patience", "max_batches", "progress", "plot", "device", "data_dir", "download",
             "eval_batch_size", "eval_mode", "eval_tokens", "diverge_factor", "lr", "clip", "lr_decay",
             "lr_patience"}


def _opt(group, *flags, default=None, help="", shown=None, **kw):
    """add_argument whose absence leaves no attribute (so explicit flags can be told apart).

    shown: the default as the help text says it (default: `default` itself, when not None).
    """
    if shown is None and default is not None:
        shown = " ".join(map(str, default)) if isinstance(default, list) else \
            ("on" if default is True else "off" if default is False else str(default))
    text = help + (f" (default: {shown})" if shown else "")
    action = group.add_argument(*flags, default=argparse.SUPPRESS, help=text, **kw)
    DEFAULTS[action.dest] = default
    OPTIONS[action.dest] = action
    return action


def _kind_default(key):
    return ", ".join(f"{v[key]} for {kind.rstrip('s')} data" for kind, v in KIND_DEFAULTS.items())


def _add_train_options(p):
    flag = argparse.BooleanOptionalAction
    g = p.add_argument_group("model")
    _opt(g, "--model", default="nade", help=f"one of {', '.join(MODELS)}")
    _opt(g, "--hidden", type=int, help="hidden units H", shown=defaults_by_model("hidden"))
    _opt(g, "--order", type=int, help="window length p of the token models (the RNN's BPTT length; transformer: "
                                      "at most --context); gaussian-ar: the AR order",
         shown=defaults_by_model("order") + "; --context for transformer")
    _opt(g, "--layers", type=int, help="deep-nade, made, orderless-nade: hidden layers; transformer: blocks",
         shown=defaults_by_model("layers"))
    _opt(g, "--d-model", type=int, help="transformer: width d of the token and position embeddings and of every "
                                        "block (its MLP is 4d wide)", shown=defaults_by_model("d_model"))
    _opt(g, "--heads", type=int, help="transformer: attention heads h, each of d / h features; must divide "
                                      "--d-model", shown=defaults_by_model("heads"))
    _opt(g, "--context", type=int, help="transformer: positions it has embeddings for, the longest window "
                                        "(--order); longer samples slide a window over the last context - 1 tokens",
         shown=defaults_by_model("context"))
    _opt(g, "--activation", choices=["relu", "sigmoid"], help="made, orderless-nade: hidden units",
         shown=defaults_by_model("activation"))
    _opt(g, "--masks", type=int, help="made: connectivity-agnostic training over a pool of K mask sets, one "
                                      "drawn per mini-batch (K = 1: one fixed mask); evaluate --ensemble K "
                                      "mixes them", shown=defaults_by_model("masks"))
    _opt(g, "--shuffle-order", action=flag, help="made: every mask set has its own random ordering of the "
                                                 "inputs", shown="off")
    _opt(g, "--direct", action=flag, help="made: direct input-to-output connections", shown="off")
    _opt(g, "--tied", action=flag, help="sequence-nade, rnn, transformer: share input and output weights",
         shown="off")
    _opt(g, "--embed-dim", type=int, help="softmax-fvsbn: embedding width K (implies --encoding embedding)",
         shown="128 with --encoding embedding")
    _opt(g, "--encoding", choices=["onehot", "embedding"], help="softmax-fvsbn: input encoding",
         shown="onehot (embedding with --embed-dim)")
    _opt(g, "--form", choices=["matrix", "vector"], help="fvsbn: general (matrix) or lecture (vector) form",
         shown="matrix")
    _opt(g, "--start", choices=["stationary", "conditional"],
         help="gaussian-ar: likelihood of the first p values", shown="stationary")
    _opt(g, "--carry-state", action=flag, help="rnn: carry the hidden state across batches (truncated BPTT "
                                               "on contiguous streams; reset every epoch); validation and the "
                                               "test figure then use stream evaluation", shown="off")
    _opt(g, "--dropout", type=float, help="input/embedding dropout probability, in [0, 1) (token models; "
                                          "transformer: on the attention probabilities and both residual "
                                          "branches of every block)", shown="0")
    _opt(g, "--init-scale", type=float, help="std of the initial weights",
         shown=defaults_by_model("init_scale") + "; made, orderless-nade: std sqrt(gain / fan-in) per layer")
    _opt(g, "--init-bias", action=flag, default=True,
         help="start the output bias at the training data's marginals: pixel logits (nade) or "
              "unigram log-frequencies (token models)")
    _opt(g, "--scheduled-sampling", choices=["linear", "exponential", "inverse-sigmoid"],
         help="rnn: scheduled sampling (Bengio et al. 2015): at step i feed the real token with probability "
              "eps_i, else the model's own draw; eps_i decays linearly (max(min, k - c i)), exponentially "
              "(k^i) or as an inverse sigmoid (k / (k + exp(i / k))); the header and every epoch show eps",
         shown="off")
    _opt(g, "--ss-k", type=float, help="scheduled sampling: k (linear: k > 0; exponential: 0 < k <= 1; "
                                       "inverse-sigmoid: k >= 1, eps falls to 1/2 near step k ln k)",
         shown="1 linear, 0.999 exponential, 500 inverse-sigmoid")
    _opt(g, "--ss-c", type=float, help="scheduled sampling, linear: slope c per step, >= 0", shown="0.001")
    _opt(g, "--ss-min", type=float, help="scheduled sampling: floor eps_min of eps_i, in [0, 1]", shown="0")
    g = p.add_argument_group("data")
    _opt(g, "--data", help=f"one of {', '.join(DATASETS)}",
         shown="the synthetic source of the model's kind: synthetic-fvsbn, synthetic-markov or synthetic-ar")
    _opt(g, "--data-dir", help="folder with the data sets", shown="$SCRATCHNADE_DATA, else ~/.cache/scratchnade")
    _opt(g, "--download", action=flag, default=False, help="download a missing data set")
    _opt(g, "--data-seed", type=int, default=0, help="seed of a synthetic source, >= 0")
    _opt(g, "--n-train", type=int, help="synthetic: training examples / tokens / sequences (valid and test get "
                                        "a fifth, at least 500; synthetic-ar: at least 2000)",
         shown=" / ".join(str(SYNTHETIC_N_TRAIN[k]) for k in ("synthetic-fvsbn", "synthetic-markov",
                                                               "synthetic-ar")))
    _opt(g, "--dim", type=int, shown="10", help=f"synthetic-fvsbn: bits D, 1 to {MAX_ENUM_D} (the exact "
                                                f"entropy enumerates all 2^D vectors)")
    _opt(g, "--vocab", type=int, shown="16", help="synthetic-markov: vocabulary size V, >= 2")
    _opt(g, "--seq-len", type=int, shown="50", help="synthetic-ar: sequence length T, >= 2")
    g = p.add_argument_group("optimisation")
    _opt(g, "--optimizer", choices=["sgd", "nesterov", "adam"], default="adam", help="update rule")
    _opt(g, "--lr", type=float, default=1e-3, help="learning rate, > 0", shown="0.001; 0.01 for gaussian-ar")
    _opt(g, "--momentum", type=float, default=0.9, help="nesterov momentum, in [0, 1)")
    _opt(g, "--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), default=[0.9, 0.999],
         help="adam moment decay rates, each in [0, 1)")
    _opt(g, "--eps", type=float, default=1e-8, help="adam epsilon, > 0")
    _opt(g, "--weight-decay", type=float, default=0.0, help="L2 penalty weight_decay/2 ||w||^2, >= 0")
    _opt(g, "--clip", type=float, help="clip the global gradient norm to this, > 0", shown="no clipping")
    _opt(g, "--batch-size", type=int, help="examples or windows per step", shown=_kind_default("batch_size"))
    _opt(g, "--epochs", type=int, default=10, help="epochs to train, >= 1 (in all, counting resumed ones)")
    _opt(g, "--patience", type=int, help="early stopping: epochs without a better validation loss",
         shown="no early stopping")
    _opt(g, "--lr-decay", type=float, help="multiply lr by this, in (0, 1], when validation stalls",
         shown="no decay")
    _opt(g, "--lr-patience", type=int, default=1, help="stalled epochs before each lr decay, >= 1")
    _opt(g, "--warmup", type=int, default=0, help="linear lr warm-up over this many steps")
    _opt(g, "--anneal", type=float, nargs="?", const=0.0, metavar="FROM",
         help="decay lr linearly to 0 over the run's --epochs, constant until the fraction FROM in [0, 1) of "
              "its steps (bare --anneal: from the first step; --anneal 0.5: over the second half)",
         shown="off")
    _opt(g, "--max-batches", type=int, help="at most this many training batches per epoch (quick runs)",
         shown="all")
    _opt(g, "--diverge-factor", type=float, default=DIVERGE_FACTOR,
         help="stop the run (exit code 3) when the training loss grows this many times over its best, > 1; "
              "0 stops only on NaN/inf")
    _opt(g, "--seed", type=int, default=0, help="initialisation, batch order and dropout, >= 0")
    g = p.add_argument_group("hardware and output")
    _opt(g, "--device", default="cpu", help="cpu or gpu (CuPy)")
    _opt(g, "--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype")
    _opt(g, "--eval-batch-size", type=int, help="examples or windows (streams in stream mode) per "
                                                "evaluation batch", shown=_kind_default("eval_batch_size"))
    _opt(g, "--eval-mode", choices=["chunked", "sliding", "stream"],
         help="token models: evaluate in chunked windows (as trained), with a sliding window (full p-token "
              "history), or (rnn) in streams with the hidden state carried",
         shown="stream for rnn --carry-state, else chunked")
    _opt(g, "--eval-tokens", type=int, help="token data: validation scores only the first N tokens of the "
                                            "validation split (quick tries on big corpora)",
         shown="the whole split")
    _opt(g, "--progress", action=flag, help="progress bar with items/s", shown="when stderr is a terminal")
    _opt(g, "--plot", action=flag, default=True, help="redraw learning_curve.png every epoch")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file of options, keys as the options above "
                                                    "(lr, batch_size or batch-size, ...); flags override it "
                                                    "(default: none)")
    p.add_argument("--run-dir", help="where to write the run; must not hold a run already "
                                     "(default: runs/<model>-<data>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.npz (default: start a new run)")


# ----------------------------------------------------------------------------- config files

def _config_value(key, value, where):
    """`value` of config key `key` typed like its flag; UsageError naming the key and the file."""
    action = OPTIONS[key]
    flag = "/".join(action.option_strings)

    def bad(what):
        raise UsageError(f'{where}: "{key}" must be {what} (like {flag}), got {value!r}')
    if value is None:
        if DEFAULTS[key] is None:
            return None
        bad("set (not null)")
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if action.nargs == 2:
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            bad("a list of two numbers")
        return [float(v) for v in value]
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        return value
    if action.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        return float(value)
    if not isinstance(value, str):
        bad("a string")
    if action.choices and value not in action.choices:
        bad(f"one of {list(action.choices)}")
    return value


def read_config(path, what="config file"):
    """Options from a JSON or TOML file, keys normalised to run-config names (dashes -> underscores),
    each value typed like its flag."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {what} {path}: {err}") from err
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError as err:
                raise UsageError(f"{what} {path}: TOML needs Python >= 3.11 (tomllib); use JSON") from err
            cfg = tomllib.loads(text)
        else:
            cfg = json.loads(text)
    except ValueError as err:                          # JSONDecodeError and TOMLDecodeError
        kind = path.suffix[1:].upper() or "JSON"
        raise UsageError(f"{what} {path} is not valid {kind}: {err}") from err
    if not isinstance(cfg, dict):
        raise UsageError(f"{what} {path} must hold one object of options, not a {type(cfg).__name__}")
    cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"unknown option(s) {unknown} in {what} {path}; known: {', '.join(sorted(DEFAULTS))}")
    return {k: _config_value(k, v, f"{what} {path}") for k, v in cfg.items()}


class _Names:
    """How a message names a run-config key: its flag, and the file it came from if not a flag."""

    def __init__(self, explicit, files=()):
        self.explicit, self.files = explicit, files           # files: [(keys, path), ...]

    def __call__(self, key):
        flag = "--" + key.replace("_", "-")
        if key not in self.explicit:
            for keys, path in self.files:
                if key in keys:
                    return f'{flag} ("{key}" in {path})'
        return flag


# ----------------------------------------------------------------------------- range checks

INT_MIN = {  # checked in this order: context before order, which defaults to it (transformer)
    "hidden": 1, "context": 1, "order": 1, "layers": 1, "d_model": 1, "heads": 1, "masks": 1, "embed_dim": 1,
    "batch_size": 1, "eval_batch_size": 1, "max_batches": 1, "n_train": 1, "dim": 1, "vocab": 2, "seq_len": 2,
    "eval_tokens": 1, "epochs": 1, "warmup": 0, "patience": 0, "lr_patience": 1, "seed": 0, "data_seed": 0}
INT_MAX = {"dim": MAX_ENUM_D}
FLOAT_RANGE = {          # key: (low, low included, high, high included)
    "lr": (0.0, False, math.inf, False), "clip": (0.0, False, math.inf, False),
    "eps": (0.0, False, math.inf, False), "init_scale": (0.0, False, math.inf, False),
    "weight_decay": (0.0, True, math.inf, False), "momentum": (0.0, True, 1.0, False),
    "dropout": (0.0, True, 1.0, False), "lr_decay": (0.0, False, 1.0, True), "anneal": (0.0, True, 1.0, False),
    "ss_c": (0.0, True, math.inf, False), "ss_min": (0.0, True, 1.0, True), "ss_k": (0.0, False, math.inf, False),
}
WHY = {"anneal": " (FROM is the fraction of the run at constant lr)", "dim": " (the exact entropy enumerates "
       "all 2^D vectors)", "vocab": " (a Markov chain needs two tokens)"}


def _interval(low, low_in, high, high_in):
    if high == math.inf:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_ranges(cfg, name):
    """UsageError naming the first option of run config `cfg` that is out of its range."""
    for key, low in INT_MIN.items():
        v = cfg.get(key)
        if v is None:
            continue
        high = INT_MAX.get(key)
        if v < low or (high is not None and v > high):
            what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
            raise UsageError(f"{name(key)} must be {what}{WHY.get(key, '')}, got {v}")
    for key, (low, low_in, high, high_in) in FLOAT_RANGE.items():
        v = cfg.get(key)
        if v is not None:
            check_number(v, name(key), low, low_in, high, high_in, WHY.get(key, ""))
    for i, b in enumerate(cfg.get("betas") or ()):
        check_number(b, f"{name('betas')} (BETA{i + 1})", 0.0, True, 1.0, False)
    f = cfg.get("diverge_factor")
    if f is not None and not (f == 0 or (math.isfinite(f) and f > 1)):
        raise UsageError(f"{name('diverge_factor')} must be > 1 (or 0: stop only on NaN/inf), got {f}")
    if cfg.get("scheduled_sampling") is not None:
        from .scheduled_sampling import teacher_forcing_schedule
        try:
            teacher_forcing_schedule(cfg["scheduled_sampling"], 0, cfg.get("ss_k"), cfg.get("ss_c"),
                                     cfg.get("ss_min") or 0.0)
        except ValueError as err:
            raise UsageError(f"{name('ss_k')}: {err}") from None


def check_model_options(spec, cfg, name):
    """Options that depend on the model: evaluation modes, eval_tokens, the transformer's sizes."""
    heads, d, context = cfg.get("heads"), cfg.get("d_model"), cfg.get("context")
    if heads is not None and d is not None and d % heads:
        raise UsageError(f"{name('heads')} {heads} must divide {name('d_model')} {d}: each head gets d / h "
                         f"features")
    if context is not None and cfg.get("order") is not None and cfg["order"] > context:
        raise UsageError(f"{name('order')} {cfg['order']} is longer than {name('context')} {context}: the "
                         f"transformer has position embeddings for {context} positions")
    mode = cfg.get("eval_mode")
    if mode not in (None, "chunked") and spec.kind != "tokens":
        raise UsageError(f"{name('eval_mode')} {mode} only applies to token models, not {spec.name}")
    if mode == "stream" and spec.name != "rnn":
        raise UsageError(f"{name('eval_mode')} stream needs a recurrent model (rnn); {spec.name} carries no "
                         f"state: use chunked or sliding")
    if cfg.get("eval_tokens") is not None and spec.kind != "tokens":
        raise UsageError(f"{name('eval_tokens')} only applies to token data, not {spec.kind} data")


def check_data_fit(cfg, data, name):
    """Options that must fit the loaded data: the window length, stream counts, eval_tokens."""
    if data.kind == "real":
        T = data.dim
        if cfg["order"] >= T:
            raise UsageError(f"{name('order')} {cfg['order']} does not fit {data.name}: the AR order must be "
                             f"less than the sequence length T = {T}")
        return
    if data.kind != "tokens":
        return
    p = cfg["order"]
    for split in ("train", "valid", "test"):
        n = data.split(split).size
        if p > n:
            raise UsageError(f"{name('order')} {p} does not fit {data.name}: its {split} split has only "
                             f"{n:,} tokens")
    if cfg.get("carry_state") and data.train.size < cfg["batch_size"]:
        raise UsageError(f"{name('batch_size')} {cfg['batch_size']} streams need at least that many training "
                         f"tokens; {data.name} has {data.train.size:,}")
    if cfg.get("eval_mode") == "stream":
        for split in ("valid", "test"):
            n = data.split(split).size
            if n < cfg["eval_batch_size"]:
                raise UsageError(f"{name('eval_batch_size')} {cfg['eval_batch_size']} streams need at least "
                                 f"that many tokens; the {split} split of {data.name} has {n:,}")
    n = cfg.get("eval_tokens")
    if n is not None:
        need = max(p, cfg["eval_batch_size"] if cfg.get("eval_mode") == "stream" else 1)
        if n < need:
            raise UsageError(f"{name('eval_tokens')} {n} is too few to validate on: at least {need} (the "
                             f"window length p{' and the number of streams' if need > p else ''})")


# ----------------------------------------------------------------------------- run configs

def _resolve_model_defaults(spec, cfg, given):
    """Fill the options the model uses but nobody gave with the values it will use (config.json
    then records them instead of null)."""
    if spec.name == "softmax-fvsbn" and cfg.get("embed_dim") is not None and given.get("encoding") is None:
        cfg["encoding"] = "embedding"                          # --embed-dim alone means embeddings
    for key, value in model_defaults(spec).items():
        if cfg.get(key) is None and key in spec.options:
            cfg[key] = value
    if cfg.get("encoding") == "embedding" and cfg.get("embed_dim") is None:
        cfg["embed_dim"] = 128
    if "context" in spec.options and cfg.get("order") is None:
        cfg["order"] = cfg["context"]                          # transformer: windows fill its positions
    kind = cfg.get("scheduled_sampling")
    if kind is not None:
        from .scheduled_sampling import SCHEDULES
        cfg["ss_k"] = SCHEDULES[kind]["k"] if cfg.get("ss_k") is None else cfg["ss_k"]
        if kind == "linear" and cfg.get("ss_c") is None:
            cfg["ss_c"] = SCHEDULES["linear"]["c"]
    else:
        for key in SS_KEYS:
            cfg[key] = None
    if cfg.get("eval_mode") is None:
        cfg["eval_mode"] = "stream" if cfg.get("carry_state") else "chunked"


def _check_choices(parser, cfg):
    """Config-file values obey the same choices as flags."""
    for action in parser._actions:
        if action.choices and action.dest in cfg and cfg[action.dest] is not None \
                and cfg[action.dest] not in action.choices:
            raise UsageError(f"{action.dest} must be one of {list(action.choices)}, got {cfg[action.dest]!r}")


def fresh_config(parser, explicit, file_cfg, name=None):
    """The run config of a new run: defaults < kind and model defaults < config file < flags,
    with every option checked against the model, the data set and its range."""
    name = name or _Names(explicit)
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
            raise UsageError(f"{name(key)} does not apply to model {spec.name}")
    if any(given.get(k) is not None for k in SS_KEYS) and given.get("scheduled_sampling") is None:
        raise UsageError("--ss-k, --ss-c and --ss-min need --scheduled-sampling")
    if given.get("ss_c") is not None and given.get("scheduled_sampling") != "linear":
        raise UsageError(f"{name('ss_c')} only applies to --scheduled-sampling linear")
    for key, source in DATA_KEYS.items():
        if key in given and data.name != source:
            raise UsageError(f"{name(key)} only applies to --data {source}")
        if data.name != source:
            cfg[key] = None                                    # not this data set's option
        elif cfg.get(key) is None:
            cfg[key] = DATA_KEY_DEFAULTS[key]
    if "n_train" in given and not data.synthetic:
        raise UsageError(f"{name('n_train')} only applies to the synthetic data sets")
    if data.synthetic and cfg.get("n_train") is None:
        cfg["n_train"] = SYNTHETIC_N_TRAIN[data.name]
    if "momentum" in given and cfg["optimizer"] != "nesterov":
        raise UsageError(f"{name('momentum')} only applies to --optimizer nesterov")
    if ("betas" in given or "eps" in given) and cfg["optimizer"] != "adam":
        raise UsageError("--betas and --eps only apply to --optimizer adam")
    _resolve_model_defaults(spec, cfg, given)
    check_ranges(cfg, name)
    check_model_options(spec, cfg, name)
    if cfg.get("anneal") is not None:
        linear_anneal(0.0, cfg["anneal"])                      # the schedule's own check (range checked above)
    return cfg


def resume_config(run_dir, explicit, file_cfg, name=None):
    """The run config of `run_dir` (its config.json, else the one in last.npz), with the options
    that may change on resume overridden.  Returns (config, keys given now)."""
    run_dir = Path(run_dir)
    saved_from = run_dir / "config.json"
    if saved_from.is_file():
        saved = read_config(saved_from, what="run config")
    else:
        saved_from = run_dir / "last.npz"
        saved = load_checkpoint(saved_from)[0].get("run_config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{run_dir}/last.npz has no run config: it was not written by `train`")
    given = {**file_cfg, **explicit}
    name = name or _Names(explicit)
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE and saved.get(k) != v)
    if changed:
        raise UsageError(f"cannot change {', '.join(name(k) for k in changed)} when resuming {run_dir} (the run used "
                         + ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
                         + f"); only {', '.join(sorted(RESUMABLE))} may change")
    cfg = {**DEFAULTS, **saved, **given}
    if cfg.get("eval_mode") is None:
        cfg["eval_mode"] = "stream" if cfg.get("carry_state") else "chunked"
    name.files = [*name.files, (set(saved), saved_from)]
    check_ranges(cfg, name)
    try:
        spec = model_spec(cfg["model"])
    except ValueError as err:
        raise UsageError(f"{saved_from}: {err}") from err
    check_model_options(spec, cfg, name)
    return cfg, set(given)


def _default_run_dir(cfg):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg['model']}-{cfg['data']}-{stamp}"
    k = 1
    while path.exists():
        path, k = Path("runs") / f"{cfg['model']}-{cfg['data']}-{stamp}-{k}", k + 1
    return path


# ----------------------------------------------------------------------------- train

def _load(cfg):
    """load_data, with running out of memory reported as a usage error."""
    try:
        return load_data(cfg)
    except MemoryError:
        raise UsageError(f"not enough memory to load {cfg['data']}"
                         + (" (try a smaller --n-train)" if DATASETS[cfg["data"]].synthetic else "")) from None


def _build(cfg, data):
    spec = model_spec(cfg["model"])
    try:
        return build_model(spec, cfg, data, cfg["device"]), build_optimizer(cfg)
    except (TypeError, ValueError) as err:
        raise UsageError(f"cannot build {spec.name}: {err}") from err
    except MemoryError:
        raise UsageError(f"not enough memory for {spec.name} with these sizes (try a smaller --hidden, "
                         f"--order or vocabulary)") from None


def _make_dirs(path):
    """mkdir -p; the directories it created, outermost first."""
    created, p = [], Path(path)
    while not p.exists():
        created.append(p)
        p = p.parent
    Path(path).mkdir(parents=True, exist_ok=True)
    return created[::-1]


def cmd_train(args, parser):
    """Train a new run, or resume one; prints one line per epoch and the final test NLL."""
    explicit = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    file_cfg = read_config(args.config) if args.config else {}
    name = _Names(explicit, [(set(file_cfg), args.config)] if args.config else [])
    if args.resume:
        return _resume(args, explicit, file_cfg, name)
    cfg = fresh_config(parser, explicit, file_cfg, name)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(cfg)
    check_fresh(run_dir)
    check_device(cfg["device"])
    data = _load(cfg)
    check_data_fit(cfg, data, name)
    model, optimizer = _build(cfg, data)
    created = _make_dirs(run_dir)                            # validated: now the directory may exist
    try:
        lock = RunDirLock(run_dir, _command_line(args)).acquire()
    except BaseException:
        _remove_created(created)
        raise
    try:
        try:
            check_fresh(run_dir, locked=True)                # nobody slipped a run in meanwhile
            if cfg["init_bias"] and hasattr(model, "init_bias"):
                model.init_bias(data.train)                  # b = pixel logits / log unigram frequencies
            state = RunState()
            write_config(run_dir, cfg)
            save_run(run_dir / "last.npz", model, optimizer, state, cfg, data)
        except BaseException:                                # nothing of a half-made start stays
            if not isinstance(sys.exc_info()[1], RunDirError):
                for fname in RUN_FILES:
                    (run_dir / fname).unlink(missing_ok=True)
                clean_partials(run_dir)
            lock.release()
            _remove_created(created)
            raise
        return _train(run_dir, model, optimizer, data, cfg, state)
    finally:
        lock.release()


def _remove_created(created):
    """Remove the directories this start created, if nothing but (at most) a lock file is in them."""
    for d in reversed(created):
        try:
            (d / ".lock").unlink(missing_ok=True)
            d.rmdir()
        except OSError:
            return


def _command_line(args):
    return " ".join(["python -m scratchnade", *sys.argv[1:]]) if sys.argv[1:] else f"scratchnade {args.command}"


def _resume(args, explicit, file_cfg, name):
    run_dir = Path(args.resume)
    if args.run_dir and Path(args.run_dir) != run_dir:
        raise UsageError("--resume RUN_DIR already names the run directory; drop --run-dir")
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run directory")
    with RunDirLock(run_dir, _command_line(args)):
        cfg, given = resume_config(run_dir, explicit, file_cfg, name)
        done = checkpoint_epoch(run_dir / "last.npz")
        if done is not None and cfg["epochs"] <= done:
            raise UsageError(f"{run_dir} has already trained {done} epoch{'s' * (done != 1)}"
                             + (f" and --epochs {cfg['epochs']} asks for no more" if "epochs" in given
                                else " (its --epochs)")
                             + f": pass --epochs N with N > {done} to train longer")
        check_device(cfg["device"])
        data = _load(cfg)
        check_data_fit(cfg, data, name)
        model, optimizer = _build(cfg, data)
        state = restore(run_dir / "last.npz", model, optimizer, data)
        removed = clean_partials(run_dir)
        if removed:
            print(f"note: removed {len(removed)} temporary file(s) of an interrupted save: {', '.join(removed)}",
                  file=sys.stderr)
        for key in ("lr", "clip"):
            if key in given:
                setattr(optimizer, key, cfg[key])
        write_config(run_dir, cfg)
        print(f"resumed {run_dir} after epoch {state.epoch}")
        return _train(run_dir, model, optimizer, data, cfg, state)


def _train(run_dir, model, optimizer, data, cfg, state):
    _print_header(run_dir, model, data, cfg, state)
    progress = cfg["progress"] if cfg["progress"] is not None else sys.stderr.isatty()
    try:
        train_loop(run_dir, model, optimizer, data, {**cfg, "progress": progress}, state, cfg["device"])
    except TrainingDiverged as err:
        return _diverged(run_dir, str(err), state)
    except KeyboardInterrupt as err:
        return _interrupted(run_dir, state, err)
    except OSError as err:
        held = checkpoint_epoch(run_dir / "last.npz")
        raise UsageError(f"writing the run failed: {err}; {run_dir}/last.npz holds the end of epoch {held}: "
                         f"fix the cause, then continue with --resume {run_dir}") from err
    _final_report(run_dir, model, data, cfg, state)
    return EXIT_OK


def _interrupted(run_dir, state, err):
    """The Ctrl-C / SIGTERM message: what last.npz holds on disk (read back, not assumed)."""
    held = checkpoint_epoch(run_dir / "last.npz")
    what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
    if held is None:
        held_text = f"{run_dir}/last.npz could not be read back"
        held = state.epoch
    else:
        held_text = f"{run_dir}/last.npz holds the end of epoch {held}"
    print(f"\n{what} during epoch {held + 1}. {held_text} (checkpoints are saved at epoch boundaries; the "
          f"partial epoch is dropped).\n"
          f"continue with:  python -m scratchnade train --resume {run_dir}\n"
          f"(epoch {held + 1} restarts from its first batch, so the result is bit-identical to an "
          f"uninterrupted run)", file=sys.stderr)
    return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED


def _print_header(run_dir, model, data, cfg, state):
    sizes = " / ".join(f"{len(data.split(s)) if data.kind != 'tokens' else data.split(s).size:,}"
                       for s in ("train", "valid", "test"))
    extra = f", V = {len(data.vocab):,}" if data.vocab is not None else f", {data.dim} per {data.unit}"
    print(f"run    {run_dir}")
    print(f"model  {model!r}: {model.num_parameters():,} parameters on {cfg['device']}")
    print(f"data   {data.name}: {sizes} {data.unit}s (train / valid / test{extra})")
    print(f"optim  {cfg['optimizer']} lr {cfg['lr']:g}, batch {cfg['batch_size']}"
          + (f", windows of {cfg['order']}" if data.kind == "tokens" else "") + f", {cfg['epochs']} epochs")
    if data.kind == "tokens":
        n = cfg.get("eval_tokens")
        print(f"eval   {cfg['eval_mode']}" + (f", validation on the first {n:,} tokens" if n else ""))
    if cfg.get("scheduled_sampling"):
        steps = len(train_batches(data, cfg, 1, model, cfg["device"]))
        last = cfg["epochs"] * steps - 1
        print(f"ss     {cfg['scheduled_sampling']} k {cfg['ss_k']:g}: eps {teacher_forcing_eps(cfg, state.step):.3f} "
              f"now, {teacher_forcing_eps(cfg, last):.3f} at the last step of epoch {cfg['epochs']} "
              f"({steps:,} steps an epoch)")


def _diverged(run_dir, message, state):
    held = checkpoint_epoch(run_dir / "last.npz")
    print(f"error: training diverged: {message}\n"
          f"{run_dir}/last.npz is untouched: it holds the last good parameters "
          f"(end of epoch {state.epoch if held is None else held}).\n"
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
        print(f"test perplexity {ppl_text(r)}, {r['bits']:.4f} bits per token (windows of {r['p']} tokens)")
    line = f"test NLL {r['nll']:.3f} {unit}"
    if r["true_entropy"] is not None:
        se, n = nll_stderr(model, data, "test", cfg, cfg["device"])
        gap = r["nll"] - r["true_entropy"]
        line += (f" vs true entropy {r['true_entropy']:.3f} {unit} (gap {gap:.3f} +- {se:.3f}, one standard "
                 f"error over {n:,} test {data.unit}s; a negative gap within ~2 standard errors is sampling "
                 f"error)")
    print(line)


# ----------------------------------------------------------------------------- main

EPILOG = "exit codes:\n" + "\n".join(textwrap.fill(what, 100, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
                                      for code, what in EXIT_CODES.items())


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: 'scratchnade train: error: ... (see scratchnade train --help)'."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser():
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(prog="scratchnade", description=__doc__, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"scratchnade {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("train", help="train a model on a data set (synthetic by default)", epilog=EPILOG,
                       description="Train a model, or continue one with --resume.\nEvery option can also come "
                                   "from --config FILE; flags override it.", formatter_class=fmt)
    _add_train_options(t)
    t.set_defaults(func=lambda args: cmd_train(args, t))
    for name, func, helptext in (("evaluate", cmd_evaluate, "NLL / perplexity of a checkpoint on a split"),
                                 ("sample", cmd_sample, "draw samples from a checkpoint")):
        s = sub.add_parser(name, help=helptext, description=helptext, epilog=EPILOG, formatter_class=fmt)
        s.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT",
                       help="a run directory (its best.npz, else last.npz) or an .npz file")
        s.add_argument("--device", default="cpu", help="cpu or gpu (default: cpu)")
        s.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
        s.add_argument("--data-dir", help="folder with the data sets (default: $SCRATCHNADE_DATA, else "
                                          "~/.cache/scratchnade)")
        s.add_argument("--download", action="store_true", default=None, help="download missing data (default: off)")
        s.set_defaults(func=func)
        if name == "evaluate":
            s.add_argument("--split", choices=["valid", "test"], default="test", help="split (default: test)")
            s.add_argument("--mode", choices=["chunked", "sliding", "stream"],
                           help="token models: windows as trained (chunked), a sliding window (full history), "
                                "or (rnn) streams with the hidden state carried (default: stream for an rnn "
                                "trained with --carry-state, else chunked)")
            s.add_argument("--eval-batch-size", type=int, help="examples, windows or streams per batch "
                                                               "(default: the run's)")
            s.add_argument("--max-tokens", type=int, metavar="N",
                           help="token data: score only the first N tokens of the split (default: all)")
            s.add_argument("--ensemble", type=int, metavar="K",
                           help="made, orderless-nade: score the mixture of K members (mask sets or "
                                "orderings), log p = logsumexp_k log p_k - log K (default: member 0 alone)")
            s.add_argument("--json", action="store_true", help="print one JSON object (default: text)")
        else:
            s.add_argument("-n", type=int, help="samples (default: 3 texts, 100 images, 5 sequences)")
            s.add_argument("--length", type=int,
                           help="tokens to generate (default: 200), or the length of AR sequences (default: "
                                "the run's --seq-len)")
            s.add_argument("--temperature", type=float, default=1.0,
                           help="divide the logits by this, > 0 (default: 1; greedy decoding: --top-k 1)")
            s.add_argument("--top-k", type=int, help="text: sample among the k most likely tokens, 1 to the "
                                                     "vocabulary size (default: all)")
            s.add_argument("--prompt", help="text to continue (token models; default: none)")
            s.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
            s.add_argument("--out", help="PNG for image samples (default: RUN_DIR/samples.png)")
            s.add_argument("--complete", type=int, metavar="N",
                           help="binary images: also complete the bottom half of N test images (default: none)")
    _add_exposure_bias_parser(sub)
    g = sub.add_parser("gradcheck", help="finite-difference check of every parameter's gradient (float64)",
                       description="Finite-difference check of every parameter's gradient (float64) at small "
                                   "random sizes.", epilog=EPILOG, formatter_class=fmt)
    g.add_argument("--model", default="all", help=f"one of {', '.join(MODELS)}, or all (default: all)")
    g.add_argument("--seed", type=int, default=0, help="draws the sizes, parameters and batch (default: 0)")
    g.add_argument("--tol", type=float, default=1e-6, help="largest relative error that passes (default: 1e-06)")
    g.add_argument("--device", default="cpu", help="cpu or gpu (default: cpu)")
    g.set_defaults(func=cmd_gradcheck)
    for parser in (p, *sub.choices.values()):        # before or after the command's name
        parser.add_argument("--threads", type=thread_count, metavar="N", default=argparse.SUPPRESS,
                            help="cores for the matmuls (BLAS) and the elementwise passes (default: "
                                 "$SCRATCHNADE_THREADS, else the BLAS setting, else every core)")
    return p


def thread_count(text):
    """argparse type of --threads: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of threads >= 1, got {text!r}")
    return int(text)


def _add_exposure_bias_parser(sub):
    e = sub.add_parser("exposure-bias", help="figures of the train / generate mismatch of a checkpoint",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Writes into RUN_DIR/exposure-bias/: token models: position_nll.png (NLL "
                                   "by position of real text and of the model's samples under a reference "
                                   "n-gram) and drift.png (n-gram drift and distinct-n by position); binary "
                                   "NADE / FVSBN: completions.png (top halves of test images completed); "
                                   "gaussian-ar: k_step_error.png (free-running k-step error vs closed form). "
                                   "Also summary.json with the numbers.")
    e.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run directory (its best.npz, else last.npz) or an .npz file")
    e.add_argument("--device", default="cpu", help="cpu or gpu (default: cpu)")
    e.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir", help="folder with the data sets (default: $SCRATCHNADE_DATA, else "
                                      "~/.cache/scratchnade)")
    e.add_argument("--download", action="store_true", default=None, help="download missing data (default: off)")
    e.add_argument("-n", type=int, help="samples and real windows (default: 256), or images to complete (10)")
    e.add_argument("--length", type=int, help="tokens per sequence (default: 200), or the largest horizon k "
                                              "of gaussian-ar (default: 20)")
    e.add_argument("--prompt-len", type=int, default=0,
                   help="tokens: start every sample from this many real tokens, in [0, --length) (default: 0: "
                        "from scratch)")
    e.add_argument("--ngram", type=int, help="order of the reference n-gram (default: 4 for characters, 3 for "
                                             "words)")
    e.add_argument("--window", type=int, default=20, help="tokens: positions per bin of the drift curves "
                                                          "(default: 20)")
    e.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by this, > 0 (default: 1; greedy decoding: --top-k 1)")
    e.add_argument("--top-k", type=int, help="tokens: sample among the k most likely tokens (default: all)")
    e.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    e.add_argument("--out", help="output folder (default: RUN_DIR/exposure-bias)")
    e.set_defaults(func=cmd_exposure_bias)


def _on_sigterm(signum, frame):
    raise Terminated()


def _error(command, message):
    print(f"scratchnade {command}: error: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None):
    """Run one command; returns the exit code (see EXIT_CODES, printed by --help)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:                               # named by the subcommand: "scratchnade train: error: ..."
            parser._subparsers._group_actions[0].choices[args.command].error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:                   # argparse errors (2) and --help (0)
        return int(exc.code or 0)
    if getattr(args, "threads", None):          # the pool; BLAS took it from __main__ (blas_env)
        set_threads(args.threads)
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except Terminated:
        print(f"\nscratchnade {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:                   # outside training (loading data, evaluating, sampling)
        print(f"\nscratchnade {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, RunDirError, DataError, ChecksumError, ModelUnavailable, DeviceUnavailableError) as err:
        return _error(args.command, str(err))
    except CheckpointError as err:
        return _error(args.command, f"unusable checkpoint: {err}")
    except MissingDataError as err:
        return _error(args.command, f"{err}; from the command line: --data-dir DIR names the folder (or set "
                                    f"SCRATCHNADE_DATA), and --download fetches the missing files")
    except DownloadError as err:
        return _error(args.command, f"download failed: {err}")
    except MemoryError as err:
        return _error(args.command, f"out of memory{': ' + str(err) if str(err) else ''} (try smaller sizes: "
                                    f"--batch-size, --eval-batch-size, --hidden)")
    except OSError as err:
        return _error(args.command, str(err))
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
