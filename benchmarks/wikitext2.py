"""WikiText-2: training throughput and learning curves of our models against the same equations in PyTorch.

    python benchmarks/wikitext2.py speed [--threads 1] [--steps 8]
    python benchmarks/wikitext2.py speed --model transformer [--layers 2 --heads 4 --d-model 256 --context 128]
    python benchmarks/wikitext2.py train --model rnn [--tied] [--tokens 1044314] [--eval-every 262144] [--torch]
    python benchmarks/wikitext2.py train --model nade --order 8 --epochs 3
    python benchmarks/wikitext2.py train --model transformer --lr 1e-3 --clip 1 --epochs 0.125 --torch
    python benchmarks/wikitext2.py train --model transformer --tied --warmup 262144 --anneal 0.2 --final-sliding

`speed` times forward + backward + Adam step (float32, B = 32, H = 256, V = 33,278) for the
recurrent NADE (p = 35, tied and untied) and the order-p NADE (p = 8), alternating ours and
PyTorch's step by step in one process, and prints tokens/s and the ratio; on WikiText-2's
first training batches (default) or, with `--ids uniform`, on uniform random ids.  With
`--model transformer` it times the transformer instead (untied and tied; L = 2 blocks,
d_model = 256, 4 heads, windows of p = context = 128 tokens, B = 16 by default); with `--model
nade` the order-p NADE alone (`--lazy-adam`: ours with lazy Adam, labelled).  In the same
rotation it times the output layer's three matmuls alone at the same shapes (`of_matmul_limit`:
our step's speed as a fraction of theirs), and then each side alone in a process of its own for
its peak resident memory (`wikitext2_memory` lines; `--no-memory` skips them).

`train` trains on the training split (RNN: consecutive stream batches with the state carried
across chunks; NADE and transformer: shuffled p-token segments), evaluates validation perplexity every
`--eval-every` tokens (chunked: independent p-token windows, each from the initial state / with
the history inside the window, as trained; stream: the RNN's state carried through 64 contiguous
streams), and test perplexity at the end (`--final-sliding` adds the NADE's sliding-window figure).
With `--torch` the PyTorch twin starts from the same parameters, sees the same batches and follows
the same learning rate, and both curves print.  `--decay 0.25` divides the learning rate by 4
whenever validation perplexity fails to improve; `--anneal` decays it linearly to zero over the
budget (tokens or `--minutes`, whichever runs out first), `--anneal 0.5` over its second half only;
`--minutes` caps the wall time; `--warmup T` ramps it up linearly over the first T tokens.
One JSON line per result.  Needs the data (SCRATCHNADE_DATA or --data-dir) and, for the
comparison, torch (CPU build).
"""
import argparse
import os
import sys

from scratchnade.blas_env import prepare_blas


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "train"])
    p.add_argument("--model", choices=["rnn", "nade", "transformer"], default="rnn")
    p.add_argument("--tied", action="store_true")
    p.add_argument("--order", type=int, default=None,
                   help="window p (default 35 for rnn, 8 for nade, --context for transformer)")
    p.add_argument("--hidden", type=int, default=256, help="rnn, nade: hidden units H")
    p.add_argument("--layers", type=int, default=2, help="transformer: blocks L")
    p.add_argument("--heads", type=int, default=4, help="transformer: attention heads")
    p.add_argument("--d-model", type=int, default=256, help="transformer: width d")
    p.add_argument("--context", type=int, default=128, help="transformer: positions (the longest window)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (default 16 for transformer, "
                                                                "else 32)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eps", type=float, default=1e-8, help="Adam's epsilon")
    p.add_argument("--lazy-adam", action="store_true",
                   help="our Adam with lazy=True: rows with no gradient keep w, m, v (a different optimizer "
                        "from the twin's dense Adam; every result line says which)")
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--init-scale", type=float, default=None, help="default 0.02 for transformer, else 0.1")
    p.add_argument("--output-init-scale", type=float, default=None,
                   help="untied models: redraw the output weights (rnn W_o, nade W) at this scale (0: zeros), "
                        "so the random inputs shape h while the logits start at the bias")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="transformer: on attention probabilities and residual branches (the twin draws its own "
                        "masks at the same rate)")
    p.add_argument("--epochs", type=float, default=None, help="training budget in epochs (or --tokens)")
    p.add_argument("--tokens", type=int, default=None, help="training budget in tokens")
    p.add_argument("--minutes", type=float, default=None,
                   help="also stop after this many minutes of wall time (then the final report as usual)")
    p.add_argument("--decay", type=float, default=None,
                   help="multiply lr (ours and the twin's) by this factor whenever a validation run does "
                        "not improve on the best so far (the usual RNN-LM schedule; e.g. 0.25)")
    p.add_argument("--anneal", type=float, nargs="?", const=0.0, default=None, metavar="FROM",
                   help="decay lr linearly to 0 over the budget, set before every step: constant lr until "
                        "progress FROM (default 0), then lr * (1 - progress) / (1 - FROM); progress is the "
                        "larger of the token fraction and (with --minutes) the wall-time fraction")
    p.add_argument("--warmup", type=int, default=0, metavar="TOKENS",
                   help="raise lr linearly from 0 over the first TOKENS training tokens (then --anneal, if "
                        "given, as usual); the usual start for a transformer")
    p.add_argument("--eval-start", action="store_true",
                   help="also report validation perplexity before the first step (the unigram start)")
    p.add_argument("--final-sliding", action="store_true",
                   help="nade, transformer: also report test perplexity with a sliding window (stride 1 for "
                        "nade: every token sees its full p-token history, p times the cost of chunked; "
                        "--stride for the transformer)")
    p.add_argument("--stride", type=int, default=None,
                   help="--final-sliding: new tokens scored per window (default 1 for nade, p / 2 for the "
                        "transformer: every token sees at least p / 2 earlier tokens, at twice the chunked cost)")
    p.add_argument("--eval-every", type=int, default=262_144, help="tokens between validation runs")
    p.add_argument("--target-ppl", type=float, default=None, metavar="PPL",
                   help="time to quality: stop at the first validation run (first --eval-mode) with perplexity "
                        "<= PPL and print the wall minutes of training up to it (earlier validation runs included) "
                        "(e.g. 326, the interpolated bigram's)")
    p.add_argument("--unigram-bias", action="store_true",
                   help="start the output bias b at the log unigram frequencies (model.init_bias)")
    p.add_argument("--eval-mode", choices=["chunked", "stream", "both"], default=None,
                   help="validation perplexity mode (default: both for rnn, chunked for nade)")
    p.add_argument("--valid-tokens", type=int, default=None,
                   help="a quick study: score only the first N validation tokens, and no test split")
    p.add_argument("--torch", action="store_true", help="train the PyTorch twin beside ours")
    p.add_argument("--torch-tokens", type=int, default=None,
                   help="train the twin only for the first N tokens (default: the whole budget)")
    p.add_argument("--save", default=None, help="write our final parameters to this .npz checkpoint")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model (speed)")
    p.add_argument("--side", choices=["both", "ours", "torch"], default="both",
                   help="speed: time one side alone and print its peak RSS (what the memory lines run)")
    p.add_argument("--no-memory", action="store_true",
                   help="speed: skip the peak-memory lines (two more processes, one per side)")
    p.add_argument("--ids", choices=["wikitext2", "uniform"], default="wikitext2",
                   help="speed: time on WikiText-2 training batches (needs the data) or on uniform random ids; "
                        "the batch's tokens decide how many rows of an input weight get a gradient")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: library default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    transformer = a.model == "transformer"
    a.batch_size = a.batch_size or (16 if transformer else 32)
    a.init_scale = a.init_scale if a.init_scale is not None else (0.02 if transformer else 0.1)
    if a.warmup < 0:
        p.error(f"--warmup must be >= 0 tokens, got {a.warmup}")
    return a


args = parse(sys.argv[1:] if __name__ == "__main__" else [])
prepare_blas(args.threads)  # must happen before NumPy loads its BLAS

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from scratchnade.backend import asnumpy, to_device  # noqa: E402
from scratchnade.checkpoint import save_checkpoint  # noqa: E402
from scratchnade.data.text import load_wikitext2, stream_batches, window_batches  # noqa: E402
from scratchnade.evaluate import perplexity  # noqa: E402
from scratchnade.models import RecurrentNADE, SequenceNADE, Transformer  # noqa: E402
from scratchnade.models.recurrent_nade import hidden_states  # noqa: E402
from scratchnade.optim import SGD, Adam, linear_anneal  # noqa: E402

V_WIKITEXT2 = 33_278
if args.anneal is not None:                  # refuse a bad FROM before the corpus loads
    try:
        linear_anneal(0.0, args.anneal)
    except ValueError as err:
        raise SystemExit(f"--anneal: {err}") from None


def build(kind, V, p, a):
    """Our model; its gradients live in reused buffers (each is applied before the next step)."""
    if kind == "rnn":
        model = RecurrentNADE(V, H=a.hidden, tied=a.tied, carry_state=True, dropout=a.dropout,
                              init_scale=a.init_scale, seed=a.seed)
    elif kind == "transformer":
        if p > a.context:
            raise SystemExit(f"--order {p} is longer than --context {a.context}")
        model = Transformer(V, context=a.context, d_model=a.d_model, layers=a.layers, heads=a.heads, tied=a.tied,
                            dropout=a.dropout, init_scale=a.init_scale, seed=a.seed)
    else:
        model = SequenceNADE(V, p=p, H=a.hidden, tied=a.tied, dropout=a.dropout, init_scale=a.init_scale,
                             seed=a.seed)
    model.reuse_buffers = True
    return model


def redraw_output(model, scale, seed):
    """Output weights ~ N(0, scale^2) (RNN and transformer W_o, NADE W), the rest as built.  Untied
    models only: tied, the same array is also the input weights."""
    if model.config["tied"]:
        raise SystemExit("--output-init-scale needs an untied model (tied, W_o / W is also the input)")
    name = "W" if kind_of(model) == "nade" else "W_o"
    w = model.params[name]
    new = np.random.default_rng([seed, 2]).normal(0.0, scale, size=w.shape)
    w[...] = to_device(new.astype(w.dtype), model.device)


def diagnostics(model, ids):
    """Why a tied sigmoid RNN learns slowly: how much of W_o lies along its mean row, and how
    saturated the hidden units are on `ids`.

    common_share  ||mean_v W_o[v]||^2 * V / ||W_o||_F^2: 1 when every row is the same vector.
    saturated     fraction of h_t outside (0.05, 0.95) over a stream of `ids`.
    """
    W_o = np.asarray(asnumpy(model.params["W_o"]), dtype=np.float64)
    m = W_o.mean(axis=0)
    share = float(m @ m * W_o.shape[0] / (W_o * W_o).sum())
    x = np.asarray(ids[: 35 * 64]).reshape(64, 35).T                  # (35, 64) windows
    hs = asnumpy(hidden_states(model.params, to_device(x, model.device)))
    sat = float(((hs[1:] < 0.05) | (hs[1:] > 0.95)).mean())
    return {"common_share": round(share, 3), "saturated": round(sat, 3)}


def torch_step_fn(model, lr, clip):
    """A closure x -> loss that does one PyTorch step on the twin of `model` (state carried for the RNN)."""
    import torch
    from torch_twins import twin
    if args.threads:
        torch.set_num_threads(args.threads)
    net = twin(model)
    opt = (torch.optim.SGD(net.parameters(), lr=lr) if args.optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=lr, eps=args.eps, fused=True))
    state = {"h": None}

    def step(x):
        xt = torch.from_numpy(np.ascontiguousarray(x))
        h = state["h"] if state["h"] is not None and state["h"].shape[0] == x.shape[1] else None
        opt.zero_grad(set_to_none=True)
        loss, state["h"] = net(xt, h if kind_of(model) == "rnn" else None)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        return loss.item()

    def reset():
        state["h"] = None
    step.reset, step.net, step.torch_opt = reset, net, opt
    return step


def kind_of(model):
    if isinstance(model, Transformer):
        return "transformer"
    return "rnn" if isinstance(model, RecurrentNADE) else "nade"


def sizes(kind, p):
    """The sizes of a result row: H for the NADEs, L / d / heads / context for the transformer."""
    if kind == "transformer":
        return {"p": p, "layers": args.layers, "d_model": args.d_model, "heads": args.heads, "context": args.context}
    return {"p": p, "H": args.hidden}


def our_step_fn(model, lr, clip):
    opt = SGD(lr=lr, clip=clip) if args.optimizer == "sgd" else Adam(lr=lr, eps=args.eps, clip=clip,
                                                                      lazy=args.lazy_adam)

    model.compact_grads = True                                   # as the training loop sets it

    def step(x):
        loss, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)
        return loss
    step.opt = opt
    return step


def set_lr(steps, lr):
    """Give every optimizer behind `steps` (ours, and the twin's when present) the learning rate lr."""
    for step in steps:
        if step is None:
            continue
        if hasattr(step, "opt"):                                 # ours
            step.opt.lr = lr
        if hasattr(step, "torch_opt"):                           # the twin's
            for group in step.torch_opt.param_groups:
                group["lr"] = lr


def speed_batches(kind, p, train, rng):
    """args.steps + 1 batches (p, B): the first training batches as `train` would see them, or uniform ids."""
    if train is None:
        return list(rng.integers(0, V_WIKITEXT2, size=(args.steps + 1, p, args.batch_size)))
    batches = (stream_batches(train, p, args.batch_size, drop_last=True) if kind == "rnn" else
               window_batches(train, p, args.batch_size, rng=rng, drop_last=True))
    return [x for _, x in zip(range(args.steps + 1), batches)]


def output_matmuls_fn(model, p):
    """A closure x -> None doing only the output layer's three matmuls at the step's shapes (float32):
    the logits f = h W^T, and in the backward dW = df^T h and dh = df W.  Everything else in a step
    (softmax, embeddings, the recurrence or attention, Adam) is overhead on top of this, so
    step time / this time is how close a step comes to the matmul limit on this machine.
    Each product is written as the models write it: OpenBLAS 0.3.31 runs dh^T = W^T df^T, the
    same numbers, ~10 ms slower (119 against 109 ms at 2 threads), which would flatter the ratio."""
    B, V = args.batch_size, V_WIKITEXT2
    kind = kind_of(model)
    K = args.d_model if kind == "transformer" else args.hidden
    rng = np.random.default_rng(0)
    if kind == "nade":                                         # one (B, H) x (H, d) product per position
        W = rng.normal(size=(p, V, K)).astype(np.float32)
        h, f = rng.normal(size=(p, B, K)).astype(np.float32), np.empty((p, B, V), np.float32)
        dW, dh = np.empty_like(W), np.empty((p, B, K), np.float32)
        Wt, ft = W.transpose(0, 2, 1), f.transpose(0, 2, 1)
    else:                                                      # one (p B, K) x (K, V) product
        W = rng.normal(size=(V, K)).astype(np.float32)
        h, f = rng.normal(size=(p * B, K)).astype(np.float32), np.empty((p * B, V), np.float32)
        dW, dh = np.empty_like(W), np.empty((p * B, K), np.float32)
        Wt, ft = W.T, f.T

    def step(x):
        np.matmul(h, Wt, out=f)                                # f = h W^T
        np.matmul(ft, h, out=dW)                               # dW = df^T h (df: f's shape)
        np.matmul(f, W, out=dh)                                # dh = df W, as the models do it
    return step


def max_rss_mib(field="VmHWM"):
    """Peak resident memory of this process since the last reset_peak_rss() (VmHWM), in MiB
    (field="VmRSS": the resident memory now)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    import resource                                            # no /proc: the peak since the start
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    """Start the peak (VmHWM) again from the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def speed_cases():
    if args.model == "transformer":
        p = args.order or args.context
        return [("transformer", p, False), ("transformer", p, True)]
    if args.model == "nade":                                   # the order-p NADE alone
        return [("nade", args.order or 8, False)]
    return [("rnn", 35, False), ("rnn", 35, True), ("nade", 8, False)]


def speed():
    """tokens/s of ours and PyTorch's at WikiText-2's vocabulary, on its training batches or random ids,
    alternating step by step with the output layer's matmuls alone (the matmul limit); then, unless
    --no-memory, the peak memory of each side measured in a process of its own (speed_side)."""
    if args.side != "both":
        return speed_side()
    rng = np.random.default_rng(args.seed)
    train = load_wikitext2(args.data_dir).train if args.ids == "wikitext2" else None
    for kind, p, tied in speed_cases():
        args.tied = tied
        model = build(kind, V_WIKITEXT2, p, args)
        fns = {"ours": our_step_fn(model, 1e-3, None), "torch": torch_step_fn(model, 1e-3, None),
               "matmul": output_matmuls_fn(model, p)}
        xs = speed_batches(kind, p, train, rng)
        times = {name: [] for name in fns}
        for i, x in enumerate(xs):
            names = list(fns)[i % 3:] + list(fns)[:i % 3]       # rotate who goes first
            for name in names:
                t0 = time.perf_counter()
                fns[name](x)
                if i > 0:                                      # step 0 allocates buffers and Adam state
                    times[name].append(time.perf_counter() - t0)
        tok = p * args.batch_size
        o, t, m = (tok / np.median(times[name]) for name in ("ours", "torch", "matmul"))
        print(json.dumps({"benchmark": "wikitext2_speed", "model": kind, "tied": tied, "B": args.batch_size,
                          **sizes(kind, p), "V": V_WIKITEXT2, "threads": args.threads or "default",
                          "ours_tok_s": round(o), "torch_tok_s": round(t), "ratio": round(o / t, 2),
                          "matmul_tok_s": round(m), "of_matmul_limit": round(o / m, 2),
                          "ours_adam": "lazy" if args.lazy_adam else "dense",
                          "steps": args.steps, "ids": args.ids}), flush=True)
        del model, fns
    if not args.no_memory:
        memory()


def speed_side():
    """One side only (--side ours / torch): tokens/s and the peak RSS over its timed steps, per case.
    The torch side builds our model only to copy its initial values, and drops it before the reset."""
    import gc
    rng = np.random.default_rng(args.seed)
    train = load_wikitext2(args.data_dir).train if args.ids == "wikitext2" else None
    for kind, p, tied in speed_cases():
        args.tied = tied
        model = build(kind, V_WIKITEXT2, p, args)
        fn = our_step_fn(model, 1e-3, None) if args.side == "ours" else torch_step_fn(model, 1e-3, None)
        if args.side == "torch":
            del model
        xs = speed_batches(kind, p, train, rng)
        gc.collect()
        reset_peak_rss()
        before = max_rss_mib("VmRSS")                          # libraries, corpus, parameters
        times = []
        for i, x in enumerate(xs):
            t0 = time.perf_counter()
            fn(x)
            if i > 0:
                times.append(time.perf_counter() - t0)
        print(json.dumps({"benchmark": "wikitext2_side", "side": args.side, "model": kind, "tied": tied,
                          "tok_s": round(p * args.batch_size / np.median(times)),
                          "max_rss_mib": round(max_rss_mib()), "before_steps_mib": round(before)}), flush=True)
        del fn, xs
        gc.collect()


def memory():
    """Peak memory per case of each side, each in a fresh process (one process's peak is both's):
    the peak RSS over the timed steps (libraries, corpus and parameters included) and the part of it the
    training steps added (gradients, optimizer state, activations)."""
    import subprocess
    argv = [a for a in sys.argv[1:] if a not in ("--side", "both")]
    rows = {}
    for side in ("ours", "torch"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--side", side],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            r = json.loads(line)
            rows.setdefault((r["model"], r["tied"]), {})[side] = r
    for (kind, tied), r in rows.items():
        o, t = r["ours"], r["torch"]
        print(json.dumps({"benchmark": "wikitext2_memory", "model": kind, "tied": tied,
                          "threads": args.threads or "default", "ours_max_rss_mib": o["max_rss_mib"],
                          "torch_max_rss_mib": t["max_rss_mib"], "ratio": round(o["max_rss_mib"] / t["max_rss_mib"], 2),
                          "ours_training_mib": o["max_rss_mib"] - o["before_steps_mib"],
                          "torch_training_mib": t["max_rss_mib"] - t["before_steps_mib"]}), flush=True)


def torch_perplexity(step, ids, p, stream):
    """Perplexity of the twin: chunked (independent p-token windows from the initial state) or
    stream (64 contiguous streams, state carried from window to window).  Like ours: every
    token, the T mod p left over as one shorter window, and no dropout."""
    import torch
    total, count, h = 0.0, 0, None
    batches = stream_batches(ids, p, 64) if stream else window_batches(ids, p, 256, shuffle=False)
    if not stream and ids.size % p:
        batches = [*batches, ids[ids.size - ids.size % p:, None]]     # scratchnade.evaluate's chunked windows
    step.net.eval()
    with torch.no_grad():
        for x in batches:
            loss, h = step.net(torch.from_numpy(np.ascontiguousarray(x)), h if stream else None)
            total, count = total + float(loss) * x.size, count + x.size
    step.net.train()
    return math.exp(total / count)


def modes(kind):
    m = args.eval_mode or ("both" if kind == "rnn" else "chunked")
    return ["chunked", "stream"] if m == "both" else [m]


def train():
    corpus = load_wikitext2(args.data_dir)
    kind = args.model
    p = args.order or {"rnn": 35, "nade": 8, "transformer": args.context}[kind]
    model = build(kind, corpus.vocab_size, p, args)
    if args.output_init_scale is not None:
        redraw_output(model, args.output_init_scale, args.seed)
    if args.unigram_bias:
        model.init_bias(corpus.train)
    ours = our_step_fn(model, args.lr, args.clip)
    theirs = torch_step_fn(model, args.lr, args.clip) if args.torch else None
    epoch_tokens = corpus.train.size
    budget = args.tokens or int((args.epochs or 1.0) * epoch_tokens)
    torch_budget = min(budget, args.torch_tokens or budget)
    seen, twin_seen, step, next_eval, epoch, started = 0, 0, 0, args.eval_every, 0, time.perf_counter()
    best = {"ppl": math.inf, "reached": False}              # best validation (--decay); --target-ppl met

    def out_of_time():
        return args.minutes is not None and time.perf_counter() - started > 60 * args.minutes

    def progress():
        by_time = (time.perf_counter() - started) / (60 * args.minutes) if args.minutes else 0.0
        return max(seen / budget, by_time)

    def report(final=False, start=False):
        valid = corpus.valid[: args.valid_tokens] if args.valid_tokens else corpus.valid
        row = {"benchmark": "wikitext2_train", "model": kind, "tied": args.tied, **sizes(kind, p),
               "B": args.batch_size, "optimizer": args.optimizer, "lazy_adam": args.lazy_adam, "lr": args.lr,
               "eps": args.eps,
               "dropout": args.dropout, "init_scale": args.init_scale, "output_init_scale": args.output_init_scale,
               "unigram_bias": args.unigram_bias, "anneal": args.anneal, "warmup": args.warmup,
               "lr_now": ours.opt.lr, "tokens": seen, "epochs": round(seen / epoch_tokens, 3),
               "minutes": round((time.perf_counter() - started) / 60, 1), "valid_tokens": int(valid.size)}
        for mode in modes(kind):
            row[f"ours_valid_ppl_{mode}"] = round(perplexity(model, valid, p, mode=mode)["ppl"], 1)
            if theirs is not None and twin_seen == seen:          # the twin saw exactly our batches
                row[f"torch_valid_ppl_{mode}"] = round(torch_perplexity(theirs, valid, p, mode == "stream"), 1)
            if final and not args.valid_tokens:
                row[f"ours_test_ppl_{mode}"] = round(perplexity(model, corpus.test, p, mode=mode)["ppl"], 1)
        if final and args.final_sliding and kind != "rnn" and not args.valid_tokens:
            stride = args.stride or (p // 2 if kind == "transformer" else 1)
            row["sliding_stride"] = stride
            row["ours_test_ppl_sliding"] = round(perplexity(model, corpus.test, p, mode="sliding", stride=stride,
                                                            batch_size=512 if kind == "nade" else 64)["ppl"], 1)
        if kind == "rnn":
            row.update(diagnostics(model, corpus.valid))
        print(json.dumps(row), flush=True)
        ppl = row[f"ours_valid_ppl_{modes(kind)[0]}"]
        if args.target_ppl is not None and ppl <= args.target_ppl and not final:
            print(json.dumps({"benchmark": "wikitext2_time_to_quality", "model": kind, "tied": args.tied,
                              **sizes(kind, p), "target_ppl": args.target_ppl, "valid_ppl": ppl,
                              "mode": modes(kind)[0], "tokens": seen, "epochs": row["epochs"],
                              "minutes": row["minutes"], "threads": args.threads or "default"}), flush=True)
            best["reached"] = True
        if args.decay and not (final or start):
            if ppl >= best["ppl"]:                              # no progress: lr *= decay, both models
                set_lr([ours, theirs], ours.opt.lr * args.decay)
            best["ppl"] = min(best["ppl"], ppl)

    if args.eval_start:
        report(start=True)
    while seen < budget and not out_of_time():
        epoch += 1
        if kind == "rnn":
            batches = stream_batches(corpus.train, p, args.batch_size, drop_last=True)
            model.reset_state()
            if theirs is not None:
                theirs.reset()
        else:
            batches = window_batches(corpus.train, p, args.batch_size, rng=np.random.default_rng([args.seed, epoch]),
                                     drop_last=True)
        for x in batches:
            if args.anneal is not None or args.warmup:
                warm = min(1.0, (seen + x.size) / args.warmup) if args.warmup else 1.0
                anneal = linear_anneal(progress(), args.anneal) if args.anneal is not None else 1.0
                set_lr([ours, theirs], args.lr * warm * anneal)
            ours(x)
            if theirs is not None and seen < torch_budget:
                theirs(x)
                twin_seen += x.size
            seen += x.size
            step += 1
            if step % 50 == 0:                                 # progress on stderr: tokens and tok/s so far
                print(f"# {seen} tokens, {seen / (time.perf_counter() - started):.0f} tok/s", file=sys.stderr,
                      flush=True)
            if seen >= next_eval:
                report()
                next_eval += args.eval_every
            if seen >= budget or out_of_time() or best["reached"]:
                break
        if best["reached"]:
            return
    report(final=True)
    if args.save:
        save_checkpoint(args.save, {k: asnumpy(v) for k, v in model.params.items()},
                        {"model": type(model).__name__, "config": model.config, "tokens": seen})


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # for torch_twins
    speed() if args.what == "speed" else train()
