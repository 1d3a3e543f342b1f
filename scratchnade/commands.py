"""The commands that read a checkpoint: ``evaluate``, ``sample``, and ``gradcheck`` (no checkpoint).

Each ``cmd_*(args)`` takes the parsed arguments of :mod:`scratchnade.cli` and returns an exit
code; bad options raise :class:`scratchnade.runs.UsageError`, unusable checkpoints
:class:`scratchnade.checkpoint.CheckpointError` (main turns both into a message and code 2).
"""
import json
from pathlib import Path

import numpy as np

from .backend import asnumpy
from .checkpoint import CheckpointError
from .data.text import Vocabulary
from .registry import (KIND_DEFAULTS, MODELS, available_models, data_spec, gradcheck_case, load_data,
                       model_spec)
from .runs import (UsageError, check_device, check_vocab, checkpoint_path, evaluate_split,
                   model_from_checkpoint)

EXIT_OK, EXIT_FAILED = 0, 1


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
    data = load_data(cfg)
    kind = (meta.get("data") or {}).get("kind") or model_kind(model)
    if data.kind != kind:
        raise UsageError(f"{path} models {kind} data; {data.name} holds {data.kind} data")
    check_vocab(meta, data, path)
    return data, cfg


def model_kind(model):
    """The data kind of a model instance, from its row in the registry."""
    return next(s.kind for s in MODELS.values() if s.cls == type(model).__name__)


def cmd_evaluate(args):
    """NLL (and perplexity) of a checkpoint on a split, one line per figure or one JSON object."""
    check_device(args.device)
    path, meta, model = _open(args.target, args.device)
    data, cfg = data_for(meta, model, args, path)
    r = evaluate_split(model, data, args.split, cfg, mode=args.mode, device=args.device)
    r.update(checkpoint=str(path), model=type(model).__name__, epoch=meta.get("epoch"), data=data.name)
    if args.json:
        print(json.dumps(r))
        return EXIT_OK
    unit = f"nats per {data.unit}"
    print(f"checkpoint    {path} ({r['model']}, epoch {r['epoch']})")
    print(f"data          {data.name}, {args.split} split: {r['count']:,} {data.unit}s")
    if r["mode"] == "chunked":
        print(f"mode          chunked: windows of {r['p']} tokens, each token sees the earlier tokens "
              f"of its window")
    elif r["mode"] == "sliding":
        print(f"mode          sliding: every token sees up to {r['p'] - 1} previous tokens "
              f"(a window of {r['p']} ending at it)")
    print(f"NLL           {r['nll']:.4f} {unit}")
    if r["mode"]:
        print(f"perplexity    {r['ppl']:.3f}")
        print(f"bits          {r['bits']:.4f} bits per token")
    if r["true_entropy"] is not None:
        print(f"true entropy  {r['true_entropy']:.4f} {unit} (gap {r['nll'] - r['true_entropy']:.4f})")
    return EXIT_OK


# ----------------------------------------------------------------------------- sample

def cmd_sample(args):
    """Text to stdout, binary images to a PNG (and completions), AR sequences printed."""
    check_device(args.device)
    path, meta, model = _open(args.target, args.device)
    info = meta.get("data") or {}
    kind = info.get("kind") or model_kind(model)
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
    return _sample_images(args, path, meta, model, info)


def _sample_text(args, meta, model, info):
    if not meta.get("vocab"):
        raise CheckpointError("the checkpoint has no vocabulary to decode samples with")
    vocab, level = Vocabulary.from_list(meta["vocab"]), info.get("level") or "word"
    prompt = None
    if args.prompt:
        prompt = vocab.encode(args.prompt.split() if level == "word" else args.prompt)
    length = (args.length or 200) + (0 if prompt is None else len(prompt))
    ids = model.sample(args.n, length, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                       prompt=prompt)
    sep = " " if level == "word" else ""
    for j in range(ids.shape[1]):
        if args.n > 1:
            print(f"--- sample {j + 1} ---")
        print(vocab.decode(ids[:, j], sep=sep))
    return EXIT_OK


def _sample_images(args, path, meta, model, info):
    from .plots import completion_grid, image_grid, save_figure
    D = model.config["D"]
    h, w = info.get("image_shape") or ((28, 28) if D == 784 else (1, D))
    out = Path(args.out or path.parent / "samples.png")
    x = asnumpy(model.sample(args.n, args.seed, temperature=args.temperature))
    title = f"{type(model).__name__} samples (T = {args.temperature:g})"
    save_figure(image_grid(x, shape=(h, w), title=title), out)
    print(f"{args.n} samples written to {out}")
    if D <= 64:                                                   # small synthetic vectors: show the bits
        for row in x.astype(int):
            print("".join(map(str, row.tolist())))
    if args.complete:
        if not hasattr(model, "complete"):
            raise UsageError(f"{type(model).__name__} has no complete(): half-image completions need NADE")
        data, _ = data_for(meta, model, args, path)
        rng = np.random.default_rng(args.seed)
        originals = data.test[np.sort(rng.choice(len(data.test), args.complete, replace=False))]
        given = (h // 2) * w
        comps = np.stack([asnumpy(model.complete(originals, given, seed=args.seed + k,
                                                    temperature=args.temperature)) for k in range(3)], axis=1)
        out_c = out.with_name(out.stem + "-completions" + out.suffix)
        save_figure(completion_grid(originals, comps, n_given_rows=h // 2, shape=(h, w),
                                    title=f"{type(model).__name__}: top {h // 2} rows given, "
                                          f"3 completions"), out_c)
        print(f"{args.complete} half-image completions written to {out_c}")
    return EXIT_OK


# ----------------------------------------------------------------------------- gradcheck

def cmd_gradcheck(args):
    """check_model on every variant of one model (or all) at small random sizes; exit 1 on a failure."""
    from .gradcheck import check_model, format_table
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
