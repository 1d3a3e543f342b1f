"""The commands that read a checkpoint: evaluate, sample, exposure-bias; and gradcheck.

Each cmd_*(args) takes the parsed arguments of scratchnade.cli and returns an exit code.
Every option is range-checked before a checkpoint or data set is loaded (those that need the
model or the data, like --top-k against the vocabulary, right after loading them, before
anything is written); bad options raise runs.UsageError, unusable checkpoints
checkpoint.CheckpointError (main turns both into one line on stderr and exit code 2).
sample and exposure-bias lock the run directory (rundir.RunDirLock) when they write into it.
"""
import contextlib
import json
import math
from pathlib import Path

import numpy as np

from .backend import asnumpy
from .checkpoint import CheckpointError
from .data.text import Vocabulary
from .registry import (KIND_DEFAULTS, MODELS, available_models, data_spec, gradcheck_case, load_data,
                       model_spec)
from .rundir import RunDirLock
from .runs import (UsageError, check_device, check_vocab, checkpoint_path, evaluate_split,
                   model_from_checkpoint)

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_CODES = {
    0: "ok",
    1: "a gradient check failed (gradcheck)",
    2: "a user error: bad option or config file, missing or corrupt data, unusable checkpoint, device not "
       "available, run directory locked or already holding a run, a failed write (one line on stderr)",
    3: "training diverged (NaN/inf, or the loss grew --diverge-factor times over its best); last.npz keeps the "
       "last good epoch",
    130: "interrupted by Ctrl-C; last.npz keeps the last completed epoch (resume with --resume)",
    143: "terminated by SIGTERM, handled like Ctrl-C",
}
GREEDY_HINT = " (for greedy decoding of text use --top-k 1)"


# ----------------------------------------------------------------------------- checks and messages

def one_line(message):
    """A message on one line: its lines joined by '; '."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def check_number(value, name, low=0.0, low_in=False, high=math.inf, high_in=False, why="", hint=""):
    """UsageError unless value is a finite number in the interval (low, high) (bounds as asked)."""
    if value is None:
        return
    ok = math.isfinite(value) and (value >= low if low_in else value > low) \
        and (high == math.inf or (value <= high if high_in else value < high))
    if not ok:
        where = f"{'>=' if low_in else '>'} {low:g}" if high == math.inf else \
            f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise UsageError(f"{name} must be a finite number {where}{why}, got {value}{hint}")


def check_count(value, name, low=1):
    """UsageError unless value (an int, or None for 'not given') is >= low."""
    if value is not None and value < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {value}")


def check_top_k(top_k, model, kind):
    """--top-k only for token models, and at most the vocabulary."""
    if top_k is None:
        return
    if kind != "tokens":
        raise UsageError(f"--top-k only applies to token models, not to a {type(model).__name__}")
    V = getattr(model, "vocab_size", None)
    if V is not None and top_k > V:
        raise UsageError(f"--top-k must be from 1 to the vocabulary size {V}, got {top_k}")


def ppl_text(r):
    """'123.456 (stream)': a perplexity always says how it was measured."""
    return f"{r['ppl']:.3f} ({r['mode']})"


def nll_stderr(model, data, split, cfg, device, max_tokens=None):
    """(standard error of the mean NLL, n): std of the per-example NLL / sqrt(n).

    Binary and real data: over the n examples of the split.  Tokens: over the per-token NLLs of
    the split's chunked windows (an approximation: neighbouring tokens are correlated).
    """
    from .backend import to_device
    from .data.binary import minibatches
    from .data.text import window_batches
    from .models.base import mode
    x = data.split(split)
    if data.kind == "tokens" and max_tokens is not None:
        x = x[:max_tokens]
    parts = []
    with mode(model, False):
        if data.kind == "tokens":
            batches = window_batches(x, cfg["order"], cfg["eval_batch_size"], shuffle=False, device=device)
        else:
            batches = minibatches(to_device(x, device), cfg["eval_batch_size"], shuffle=False, dtype=model.dtype)
        for b in batches:
            parts.append(-asnumpy(model.log_prob(b)).astype(np.float64).reshape(-1))
    nll = np.concatenate(parts)
    n = nll.size
    return (float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan), n


@contextlib.contextmanager
def _lock_if_inside(path, out, command):
    """Hold the lock of the checkpoint's run directory while writing `out` into it."""
    run_dir = Path(path).parent
    try:
        inside = Path(out).resolve().is_relative_to(run_dir.resolve())
    except (OSError, ValueError):
        inside = False
    if not inside or not run_dir.is_dir():
        yield
        return
    with RunDirLock(run_dir, command):
        yield


# ----------------------------------------------------------------------------- evaluate

def _open(target, device, prefer="best.npz"):
    """(checkpoint path, header, model with its parameters) of a run directory or .npz file."""
    path = checkpoint_path(target, prefer)
    meta, model = model_from_checkpoint(path, device)
    return path, meta, model


def data_for(meta, model, args, path):
    """The data set a checkpoint was trained on (or --data), with its run config for batching."""
    cfg = dict(meta.get("run_config") or {})
    if args.data:
        cfg["data"] = args.data
    if "data" not in cfg:
        raise UsageError(f"{path} does not say which data it was trained on: pass --data")
    try:
        spec = data_spec(cfg["data"])
    except ValueError as err:
        raise UsageError(str(err)) from err
    cfg["data"] = spec.name
    cfg = {**KIND_DEFAULTS[spec.kind], **cfg}                     # synthetic sizes: the loaders' defaults
    for key in ("data_dir", "download", "eval_batch_size"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    cfg["order"] = cfg.get("order") or getattr(model, "context", None) or 35
    try:
        data = load_data(cfg)
    except MemoryError:
        raise UsageError(f"not enough memory to load {spec.name}") from None
    kind = (meta.get("data") or {}).get("kind") or model_kind(model)
    if data.kind != kind:
        raise UsageError(f"{path} models {kind} data; {data.name} holds {data.kind} data")
    check_vocab(meta, data, path)
    return data, cfg


def model_kind(model):
    """The data kind of a model instance, from its row in the registry."""
    return next(s.kind for s in MODELS.values() if s.cls == type(model).__name__)


def ensemble_of(model, K):
    """The K-member mixture of a model with members (MADE mask sets, orderless-NADE orderings)."""
    from .ensemble import Ensemble
    if not hasattr(model, "ordering"):
        raise UsageError(f"--ensemble needs a model with members (made, orderless-nade), not a "
                         f"{type(model).__name__}")
    try:
        return Ensemble(model, K)
    except ValueError as err:
        raise UsageError(f"--ensemble {K}: {err}") from None


def _check_eval_fit(data, split, cfg, mode, max_tokens):
    """The window length and the stream count must fit the (first max_tokens tokens of the) split."""
    if data.kind != "tokens":
        return
    n = data.split(split).size if max_tokens is None else min(max_tokens, data.split(split).size)
    where = f"the first {n:,} tokens of" if max_tokens is not None else f"the {n:,} tokens of"
    if cfg["order"] > n:
        raise UsageError(f"{'--max-tokens' if max_tokens is not None else 'the data'}: windows of "
                         f"{cfg['order']} tokens do not fit in {where} the {split} split")
    if mode == "stream" and cfg["eval_batch_size"] > n:
        raise UsageError(f"--eval-batch-size {cfg['eval_batch_size']} streams need at least that many tokens; "
                         f"{where} the {split} split are fewer")


def cmd_evaluate(args):
    """NLL (and perplexity) of a checkpoint on a split, one line per figure or one JSON object."""
    check_count(args.eval_batch_size, "--eval-batch-size")
    check_count(args.max_tokens, "--max-tokens")
    check_count(args.ensemble, "--ensemble")
    check_device(args.device)
    path, meta, model = _open(args.target, args.device)
    kind = (meta.get("data") or {}).get("kind") or model_kind(model)
    if args.mode not in (None, "chunked") and kind != "tokens":
        raise UsageError(f"--mode {args.mode} only applies to token models, not to a {type(model).__name__}")
    if args.mode == "stream" and not hasattr(model, "stream_log_prob"):
        raise UsageError(f"--mode stream needs a recurrent model (rnn); {type(model).__name__} carries no state")
    if args.max_tokens is not None and kind != "tokens":
        raise UsageError(f"--max-tokens only applies to token data, not to a {type(model).__name__}")
    if args.ensemble is not None:
        model = ensemble_of(model, args.ensemble)
    mode = args.mode or ("stream" if getattr(model, "carry_state", False) else "chunked")
    data, cfg = data_for(meta, model, args, path)
    _check_eval_fit(data, args.split, cfg, mode, args.max_tokens)
    r = evaluate_split(model, data, args.split, cfg, mode=mode, device=args.device, max_tokens=args.max_tokens)
    r.update(checkpoint=str(path), model=type(getattr(model, "model", model)).__name__, epoch=meta.get("epoch"),
             data=data.name, ensemble=args.ensemble)
    if r["true_entropy"] is not None:
        r["nll_stderr"], _ = nll_stderr(model, data, args.split, cfg, args.device, args.max_tokens)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    unit = f"nats per {data.unit}"
    print(f"checkpoint    {path} ({r['model']}, epoch {r['epoch']})")
    if args.ensemble is not None:
        print(f"ensemble      mixture of {args.ensemble} members: log p(x) = logsumexp_k log p_k(x) - log "
              f"{args.ensemble}")
    print(f"data          {data.name}, {args.split} split: {r['count']:,} {data.unit}s"
          + (f" (the first {args.max_tokens:,} tokens at most)" if args.max_tokens is not None else ""))
    if r["mode"] == "chunked":
        print(f"mode          chunked: windows of {r['p']} tokens, each token sees the earlier tokens "
              f"of its window")
    elif r["mode"] == "sliding":
        print(f"mode          sliding: every token sees up to {r['p'] - 1} previous tokens "
              f"(a window of {r['p']} ending at it)")
    elif r["mode"] == "stream":
        print(f"mode          stream: {cfg['eval_batch_size']} contiguous streams, the hidden state carried "
              f"through each one (windows of {r['p']})")
    print(f"NLL           {r['nll']:.4f} {unit}")
    if r["mode"]:
        print(f"perplexity    {ppl_text(r)}")
        print(f"bits          {r['bits']:.4f} bits per token")
    if r["true_entropy"] is not None:
        print(f"true entropy  {r['true_entropy']:.4f} {unit} (gap {r['nll'] - r['true_entropy']:.4f} +- "
              f"{r['nll_stderr']:.4f}, one standard error; a negative gap within ~2 standard errors is "
              f"sampling error)")
    return EXIT_OK


# ----------------------------------------------------------------------------- sample

def _check_sampling_options(args):
    check_count(getattr(args, "n", None), "-n")
    check_count(args.length, "--length")
    check_number(args.temperature, "--temperature", hint=GREEDY_HINT)
    check_count(args.top_k, "--top-k")
    check_count(args.seed, "--seed", 0)


def cmd_sample(args):
    """Text to stdout, binary images to a PNG (and completions), AR sequences printed."""
    _check_sampling_options(args)
    check_count(args.complete, "--complete")
    check_device(args.device)
    path, meta, model = _open(args.target, args.device)
    info = meta.get("data") or {}
    kind = info.get("kind") or model_kind(model)
    check_top_k(args.top_k, model, kind)
    if args.prompt is not None and kind != "tokens":
        raise UsageError(f"--prompt only applies to token models, not to a {type(model).__name__}")
    if args.complete is not None and kind != "binary":
        raise UsageError(f"--complete only applies to binary image models, not to a {type(model).__name__}")
    if args.out is not None and kind != "binary":
        raise UsageError(f"--out only applies to image samples; a {type(model).__name__} prints its samples")
    if args.n is None:
        args.n = {"tokens": 3, "real": 5, "binary": 100}[kind]
    if kind == "tokens":
        return _sample_text(args, meta, model, info)
    if kind == "real":
        T = args.length or (meta.get("run_config") or {}).get("seq_len") or 50
        x = asnumpy(model.sample(args.n, T, args.seed, temperature=args.temperature))
        for row in x:
            print(" ".join(f"{v:.3f}" for v in row.tolist()))
        return EXIT_OK
    out = Path(args.out or path.parent / "samples.png")
    with _lock_if_inside(path, out, f"scratchnade sample {args.target}"):
        return _sample_images(args, path, meta, model, info, out)


def _sample_text(args, meta, model, info):
    if not meta.get("vocab"):
        raise CheckpointError("the checkpoint has no vocabulary to decode samples with")
    vocab, level = Vocabulary.from_list(meta["vocab"]), info.get("level") or "word"
    prompt = None
    if args.prompt:
        try:
            prompt = vocab.encode(args.prompt.split() if level == "word" else args.prompt)
        except ValueError as err:
            raise UsageError(f"--prompt {args.prompt!r}: {err}") from err
        prompt = prompt if len(prompt) else None
    length = (args.length or 200) + (0 if prompt is None else len(prompt))
    ids = model.sample(args.n, length, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                       prompt=prompt)
    sep = " " if level == "word" else ""
    for j in range(ids.shape[1]):
        if args.n > 1:
            print(f"--- sample {j + 1} ---")
        print(vocab.decode(ids[:, j], sep=sep))
    return EXIT_OK


def _sample_images(args, path, meta, model, info, out):
    from .plots import completion_grid, image_grid, save_figure
    D = model.config["D"]
    h, w = info.get("image_shape") or ((28, 28) if D == 784 else (1, D))
    data = None
    if args.complete:                                             # checked before anything is written
        data, _ = data_for(meta, model, args, path)
        if args.complete > len(data.test):
            raise UsageError(f"--complete {args.complete} asks for more images than the test split of "
                             f"{data.name} has ({len(data.test):,})")
    x = asnumpy(model.sample(args.n, args.seed, temperature=args.temperature))
    title = f"{type(model).__name__} samples (T = {args.temperature:g})"
    save_figure(image_grid(x, shape=(h, w), title=title), out)
    print(f"{args.n} samples written to {out}")
    if D <= 64:                                                   # small synthetic vectors: show the bits
        for row in x.astype(int):
            print("".join(map(str, row.tolist())))
    if args.complete:
        from .sampling import completion_pairs
        rng = np.random.default_rng(args.seed)
        picks = data.test[np.sort(rng.choice(len(data.test), args.complete, replace=False))]
        originals, comps = completion_pairs(model, picks, (h // 2) * w, seed=args.seed,
                                            temperature=args.temperature)
        out_c = out.with_name(out.stem + "-completions" + out.suffix)
        save_figure(completion_grid(originals, comps, n_given_rows=h // 2, shape=(h, w),
                                    title=f"{type(model).__name__}: top {h // 2} rows given, "
                                          f"3 completions"), out_c)
        print(f"{args.complete} half-image completions written to {out_c}")
    return EXIT_OK


# ----------------------------------------------------------------------------- exposure bias

def cmd_exposure_bias(args):
    """Exposure-bias figures of a checkpoint in RUN_DIR/exposure-bias/ (or --out), plus summary.json."""
    _check_sampling_options(args)
    check_count(args.prompt_len, "--prompt-len", 0)
    check_count(args.ngram, "--ngram")
    check_count(args.window, "--window")
    check_device(args.device)
    path, meta, model = _open(args.target, args.device)
    info = meta.get("data") or {}
    kind = info.get("kind") or model_kind(model)
    check_top_k(args.top_k, model, kind)
    if kind == "tokens" and args.prompt_len >= (args.length or 200):
        raise UsageError(f"--prompt-len must be in [0, --length = {args.length or 200}), got {args.prompt_len}")
    data, _ = data_for(meta, model, args, path)
    if kind == "tokens":
        need = (args.length or 200)
        if data.test.size < need or data.train.size < need:
            raise UsageError(f"--length {need} is longer than the test or training split of {data.name}")
    out = Path(args.out) if args.out else path.parent / "exposure-bias"
    with _lock_if_inside(path, out, f"scratchnade exposure-bias {args.target}"):
        out.mkdir(parents=True, exist_ok=True)
        summary = {"checkpoint": str(path), "model": type(model).__name__, "data": data.name, "kind": kind,
                   "seed": args.seed, "temperature": args.temperature}
        make = {"tokens": _exposure_text, "binary": _exposure_images, "real": _exposure_ar}[kind]
        figures = make(args, model, data, info, out, summary)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    for name in figures:
        print(f"wrote {out / name}")
    print(f"wrote {out / 'summary.json'}")
    return EXIT_OK


def _span_means(y, start):
    """Mean of y over all positions from `start`, and over the first and last quarter of them."""
    y = np.asarray(y)[start:]
    q = max(1, len(y) // 4)
    return {"all": float(y.mean()), "first_quarter": float(y[:q].mean()), "last_quarter": float(y[-q:].mean())}


def _exposure_text(args, model, data, info, out, summary):
    from matplotlib.figure import Figure
    from .ngram import NGramModel
    from .plots import position_curves, position_nll_curves, save_figure
    from .sampling import distinct_n_by_position, drift_by_position, position_nll, random_windows
    V, char = len(data.vocab), data.level == "char"
    n, length = args.n or 256, args.length or 200
    ref = NGramModel(args.ngram or (4 if char else 3)).fit(data.train, V, valid=data.valid)
    r = position_nll(model, ref, data.test, length, n, args.prompt_len, args.temperature, args.top_k, args.seed)
    name = f"{type(model).__name__} on {data.name}"
    save_figure(position_nll_curves(r, smooth=5, reference=f"{ref.order}-gram",
                                    title=f"{name}: NLL by position"), out / "position_nll.png")
    w = min(args.window, length)
    floor = random_windows(data.train, length, n, args.seed + 1)        # same-size sample of the data itself
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, order in zip(axes[:2], (1, 2)):
        position_curves({"model samples": drift_by_position(r.samples, data.train, V, order, w),
                         "training windows (finite-sample floor)": drift_by_position(floor, data.train, V, order, w)},
                        ylabel=f"total variation to the training {('uni', 'bi')[order - 1]}grams", ax=ax,
                        title=f"{('unigram', 'bigram')[order - 1]} drift, bins of {w}")
    position_curves({"model samples": distinct_n_by_position(r.samples, 2, w),
                     "training windows": distinct_n_by_position(floor, 2, w),
                     "test windows": distinct_n_by_position(r.real, 2, w)},
                    ylabel="distinct-2 within a bin (1 - repetition)", ax=axes[2],
                    title=f"distinct bigrams, bins of {w}")
    fig.suptitle(f"{name}: {n} samples of {length} tokens (T = {args.temperature:g})")
    save_figure(fig, out / "drift.png")
    summary.update(reference=repr(ref), reference_valid_nll=ref.nll(data.valid.reshape(-1, 1)), n=n,
                   length=length, prompt_len=args.prompt_len, top_k=args.top_k,
                   **{f"nll_{k}": _span_means(getattr(r, k), args.prompt_len)
                      for k in ("model_data", "reference_data", "reference_samples", "model_samples")})
    return ["position_nll.png", "drift.png"]


def _exposure_images(args, model, data, info, out, summary):
    from .plots import completion_grid, save_figure
    from .sampling import completion_pairs
    D = model.config["D"]
    h, w = info.get("image_shape") or ((28, 28) if D == 784 else (1, D))
    n = min(args.n or 10, len(data.test))
    rng = np.random.default_rng(args.seed)
    x = data.test[np.sort(rng.choice(len(data.test), n, replace=False))]
    given = (h // 2) * w
    orig, comps = completion_pairs(model, x, given, 3, args.seed, args.temperature)
    save_figure(completion_grid(orig, comps, n_given_rows=h // 2, shape=(h, w),
                                title=f"{type(model).__name__}: the top {h // 2} rows are real, the rest "
                                      f"sampled (T = {args.temperature:g})"), out / "completions.png")
    summary.update(n=n, given_pixels=given,
                   pixels_differing_from_original=float(np.abs(comps - orig[:, None])[..., given:].mean()))
    return ["completions.png"]


def _exposure_ar(args, model, data, info, out, summary):
    from .plots import format_values, k_step_errors, save_figure
    from .sampling import ar_k_step_error, ar_k_step_error_closed_form
    p, T = model.p, data.test.shape[1]
    K = min(args.length or 20, T - p)
    r = ar_k_step_error(model, data.test, K, seed=args.seed)
    sigma = float(np.exp(asnumpy(model.params["log_sigma"])))
    closed = ar_k_step_error_closed_form(model.params["rho"], sigma, K)
    rho = format_values("rho", asnumpy(model.params["rho"]))          # "rho = 0.799", or a tuple for AR(p)
    save_figure(k_step_errors(r, closed, title=f"AR({p}) on {data.name}: {rho}, sigma = {sigma:.3f}"),
                out / "k_step_error.png")
    summary.update(k=r.k.tolist(), teacher_forced=float(r.teacher_forced[0]), free_running=r.free_running.tolist(),
                   sample_var=r.sample_var.tolist(), closed_form=closed.tolist(), stationary_var=r.stationary_var,
                   count=r.count)
    return ["k_step_error.png"]


# ----------------------------------------------------------------------------- gradcheck

def cmd_gradcheck(args):
    """check_model on every variant of one model (or all) at small random sizes; exit 1 on a failure."""
    from .gradcheck import check_model, format_table
    check_number(args.tol, "--tol")
    check_count(args.seed, "--seed", 0)
    check_device(args.device)
    try:
        names = available_models() if args.model == "all" else [model_spec(args.model).name]
    except ValueError as err:
        raise UsageError(str(err)) from err
    rng, failed, count = np.random.default_rng(args.seed), [], 0
    for name in names:
        spec = model_spec(name)
        for variant in spec.variants:
            model, batch = gradcheck_case(spec, variant, rng, args.device)
            errors = check_model(model, batch)
            bad = [k for k, e in errors.items() if not e <= args.tol]
            shape = "x".join(map(str, np.shape(batch)))
            print(f"== {name}: {model!r} with random parameters, batch {shape} ==")
            print(format_table(errors, tol=args.tol))
            print()
            count += 1
            failed += [f"{name} {variant or ''} {k}".replace("  ", " ") for k in bad]
    if failed:
        print(f"FAILED: {len(failed)} parameter(s) above {args.tol:g}: {'; '.join(failed)}")
        return EXIT_FAILED
    print(f"all {count} gradient checks passed (relative error <= {args.tol:g}, float64)")
    return EXIT_OK
