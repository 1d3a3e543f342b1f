"""Ancestral sampling for every model, and diagnostics that make exposure bias visible.

One front door, :func:`sample`, dispatching on the kind of model:

    tokens  (SoftmaxFVSBN, SequenceNADE, DeepNADE, RecurrentNADE)
            w_t ~ softmax(f_t / tau), restricted to the k most likely tokens with top_k;
            prompt: (T0,) or (T0, n) ids to continue; returns (length, n) host ids
    binary  (NADE, FVSBN)
            x_t ~ Bern(q_t),  q_t = p_t^(1/tau) / (p_t^(1/tau) + (1 - p_t)^(1/tau)) = sigmoid(l_t / tau)
            prompt: (D0,) or (n, D0) given bits (e.g. the top half of an image); returns (n, D)
            top-k is meaningless here: of two outcomes, k = 2 keeps both and k = 1 is the
            argmax (the limit tau -> 0), so it is refused rather than silently ignored
    real    (LinearGaussianAR)
            x_t ~ N(mean_t, tau var_t): tau scales every conditional variance (exactly p^(1/tau));
            prompt: (T0,) or (n, T0) values to continue; returns (n, length)

Every draw uses host random numbers from ``numpy.random.default_rng(seed)``, so one seed
gives the same samples on every device.

Exposure bias (the lecture's last slide).  A model trained on p(x_t | x_<t) of REAL prefixes
generates from its OWN samples, whose distribution it was never trained on:

    ar_k_step_error         the exact case: an AR(1) model fed its own predictions; the
                            k-step error grows as sigma^2 (1 - rho^2k) / (1 - rho^2) while the
                            teacher-forced (one-step) error stays sigma^2
    position_nll            per position t: the model's teacher-forced NLL on real text, and a
                            fixed reference n-gram's NLL of real text and of the model's samples
    drift_by_position       unigram / bigram statistics of samples against the data, by position
    distinct_n_by_position  repetition (distinct n-grams) by position
    completion_pairs        binary images completed from their real top half

The remedy to compare, scheduled sampling, is a training option of the recurrent NADE
(:func:`teacher_forcing_schedule`, re-exported here).
"""
from typing import NamedTuple

import numpy as np

from .backend import asnumpy, device_of, get_xp, to_device
from .data.text import UNK
from .models.gaussian_ar import autocovariance, conditional_moments, innovations
from .scheduled_sampling import SCHEDULES, teacher_forcing_schedule
from .ngram import SortedCounts, gram_keys

__all__ = ["model_kind", "sample", "sample_text", "tempered_bernoulli", "complete_by_conditionals", "continue_ar",
           "KStepError", "ar_k_step_error", "ar_k_step_error_closed_form", "token_log_probs", "random_windows",
           "PositionNLL", "position_nll", "Curve", "drift_by_position", "distinct_n", "distinct_n_by_position",
           "completion_pairs", "SCHEDULES", "teacher_forcing_schedule"]


# ----------------------------------------------------------------------------- the front door

def model_kind(model):
    """"tokens", "binary" or "real": what a model generates (by what it offers, no registry)."""
    if hasattr(model, "vocab_size"):
        return "tokens"
    if hasattr(model, "conditional_moments"):
        return "real"
    if "D" in getattr(model, "config", {}):
        return "binary"
    raise ValueError(f"cannot tell what {type(model).__name__} generates")


def sample(model, n, length=None, prompt=None, temperature=1.0, top_k=None, seed=None):
    """n ancestral samples of any model, optionally continuing a prompt (see the module docstring).

    length: tokens models: the total length, prompt included (required); binary: None or D;
    real: the total length T (required).  Returns host ids (length, n) for tokens, arrays on
    the model's device (n, D) / (n, T) for binary and real data.
    """
    kind = model_kind(model)
    if kind == "tokens":
        if length is None:
            raise ValueError("token models need a length (prompt included)")
        if top_k is not None and not 1 <= int(top_k) <= model.vocab_size:
            raise ValueError(f"top_k must be in [1, V = {model.vocab_size}], got {top_k}")
        return model.sample(n, length, seed=seed, temperature=temperature, top_k=top_k, prompt=prompt)
    if top_k is not None:
        raise ValueError(f"top_k is meaningless for {kind} conditionals: use the temperature"
                         + (" (a Bernoulli has two outcomes; k = 1 is the tau -> 0 limit)" if kind == "binary"
                            else " (a Gaussian has no k most likely values)"))
    if kind == "binary":
        return _sample_binary(model, n, length, prompt, temperature, seed)
    return _sample_real(model, n, length, prompt, temperature, seed)


def _prompt_rows(prompt, n, axis):
    """A host prompt as n rows (binary / real: (n, T0)); a 1-D prompt is repeated."""
    a = np.asarray(asnumpy(prompt))
    a = np.repeat(a[None], n, axis=0) if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"prompt must be ({axis},) or (n, {axis}) with n = {n}, got shape {a.shape}")
    return a


def tempered_bernoulli(p, temperature):
    """q = p^(1/tau) / (p^(1/tau) + (1 - p)^(1/tau)), i.e. sigmoid(logit(p) / tau).  Shapes: (...) -> (...).

    Written with powers, not logits, so p = 0 or 1 stay exact and nothing overflows.
    """
    a, b = p ** (1.0 / temperature), (1.0 - p) ** (1.0 / temperature)
    return a / (a + b)                                       # one of p, 1 - p is >= 1/2: a + b > 0


def _sample_binary(model, n, length, prompt, temperature, seed):
    D = model.config["D"]
    if length not in (None, D):
        raise ValueError(f"binary samples have length D = {D}, got length = {length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if prompt is None:
        return model.sample(n, seed, temperature=temperature)
    given = _prompt_rows(prompt, n, "D0")
    n_given = given.shape[1]
    if n_given > D or not np.all((given == 0) | (given == 1)):
        raise ValueError(f"a binary prompt holds at most D = {D} bits of 0 / 1")
    x = np.zeros((n, D))
    x[:, :n_given] = given
    if hasattr(model, "complete"):                           # NADE: O(DH) per completion
        return model.complete(x, n_given, seed=seed, temperature=temperature)
    return complete_by_conditionals(model, x, n_given, seed, temperature)


def complete_by_conditionals(model, x, n_given, seed=None, temperature=1.0):
    """Keep x[:, :n_given], sample the rest from any model offering ``conditionals(x)``.

        x_t ~ Bern(tempered(p(x_t = 1 | x_<t)))      for t = n_given .. D-1, one model call per t

    Uniforms are drawn on the host as (D, B), the layout NADE.complete uses.
    Shapes: x (B, D) binary -> (B, D) on the model's device.
    """
    x = to_device(np.asarray(asnumpy(x)), model.device).astype(model.dtype)
    B, D = x.shape
    u = to_device(np.random.default_rng(seed).random((D, B)), model.device)
    for t in range(n_given, D):
        q = tempered_bernoulli(model.conditionals(x)[:, t], temperature)    # p(x_t = 1 | x_<t)
        x[:, t] = u[t] < q                                   # x_t ~ Bern(q)
    return x


def _sample_real(model, n, length, prompt, temperature, seed):
    if length is None:
        raise ValueError("real-valued sequences need a length T (prompt included)")
    if prompt is None:
        return model.sample(n, length, seed, temperature=temperature)
    return continue_ar(model, _prompt_rows(prompt, n, "T0"), length, seed, temperature)


def continue_ar(model, prompt, T, seed=None, temperature=1.0):
    """Continue (n, T0) real prefixes to length T by ancestral sampling from the AR(p) model.

        x_t = mean_t + sqrt(tau var_t) eps_t,   (mean_t, var_t) of p(x_t | x_{t-p..t-1})

    Positions t < p (a prompt shorter than p) use the stationary start's conditionals.
    eps (n, T) is drawn on the host like LinearGaussianAR.sample's.  Returns (n, T).
    """
    rho = model.params["rho"]
    xp = get_xp(rho)
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    n, T0 = prompt.shape
    if T0 > T:
        raise ValueError(f"the prompt ({T0} values) is longer than T = {T}")
    p = rho.shape[0]
    eps = to_device(np.random.default_rng(seed).standard_normal((n, T)).astype(rho.dtype), device_of(rho))
    x = xp.zeros((n, T), dtype=rho.dtype)
    x[:, :T0] = to_device(prompt.astype(rho.dtype), device_of(rho))
    for t in range(T0, T):
        window = x[:, max(0, t - p):t + 1]                   # x_{t-p..t}; the last value is ignored
        mean, var = conditional_moments(model.params, window, "stationary")
        x[:, t] = mean[:, -1] + xp.sqrt(temperature * var[:, -1]) * eps[:, t]
    return x


def sample_text(model, vocab, n, length, prompt_text=None, level=None, temperature=1.0, top_k=None,
                seed=None):
    """n texts: `prompt_text` followed by `length` sampled tokens, decoded.  Returns a list of n str.

    level: "char" (characters joined by nothing) or "word" (joined by spaces); default: char
    when every token of the vocabulary (but <unk>) is one character.
    """
    if level is None:
        level = "char" if all(len(t) == 1 for t in vocab.itos if t != UNK) else "word"
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    prompt = None
    if prompt_text:
        prompt = vocab.encode(prompt_text.split() if level == "word" else prompt_text)
    total = length + (0 if prompt is None else len(prompt))
    ids = sample(model, n, total, prompt, temperature, top_k, seed)
    sep = " " if level == "word" else ""
    return [vocab.decode(ids[:, j], sep=sep) for j in range(n)]


# ----------------------------------------------------------------------------- the exact case: AR(1)

class KStepError(NamedTuple):
    k: np.ndarray                  # (K,) horizons 1..K
    teacher_forced: np.ndarray     # (K,) one-step MSE on real prefixes (the same at every k)
    free_running: np.ndarray       # (K,) MSE of the k-step forecast that feeds its own predictions
    sample_var: np.ndarray         # (K,) variance of free-running samples started at the real x_s
    stationary_var: float          # gamma_0 = sigma^2 / (1 - rho^2) for AR(1): where both end up
    count: int                     # forecasts averaged per horizon


def ar_k_step_error(model, x, max_k, n_paths=8, seed=None):
    """Free-running k-step errors of an AR(p) model on real sequences x, for k = 1..max_k.

    From every start s (its last p real values z_{s-p+1..s}, z = x - mu):

        forecast    z^_{s+k} = sum_i rho_i z^_{s+k-i}   (z^ = z up to s): the model feeds its own
                    predictions;  free_running[k] = mean (z_{s+k} - z^_{s+k})^2 over (b, s)
        samples     z~_{s+k} = sum_i rho_i z~_{s+k-i} + sigma eps:  n_paths free-running paths
                    per start;   sample_var[k] = mean over (b, s) of their variance at s + k
        teacher     e_t = z_t - sum_i rho_i z_{t-i} on real prefixes; teacher_forced = mean e_t^2

    For a correct AR(1) model all three k-curves are sigma^2 (1 - rho^2k) / (1 - rho^2)
    (:func:`ar_k_step_error_closed_form`) while teacher forcing stays at sigma^2.

    Shapes: x (B, T) with T >= p + max_k.  Returns a KStepError of host arrays.
    """
    rho, mu, log_sigma = (model.params[k] for k in ("rho", "mu", "log_sigma"))
    xp = get_xp(rho)
    dev, dtype = device_of(rho), rho.dtype
    x = to_device(x, dev).astype(dtype)
    B, T = x.shape
    p = rho.shape[0]
    S = T - p - max_k + 1                                    # starts s = p-1 .. T-1-max_k
    if max_k < 1 or S < 1:
        raise ValueError(f"need 1 <= max_k <= T - p = {T - p}, got max_k = {max_k}")
    if n_paths < 2:
        raise ValueError(f"a variance needs n_paths >= 2, got {n_paths}")
    rng = np.random.default_rng(seed)
    z = x - mu                                               # centred values
    sigma = xp.exp(log_sigma)
    coef = rho[::-1]                                         # (rho_p..rho_1) meets (z_{s-p+1}..z_s)
    w = xp.stack([z[:, j:j + S] for j in range(p)], axis=-1)         # (B, S, p) real history
    ws = xp.broadcast_to(w, (n_paths,) + w.shape).copy()     # (P, B, S, p) one copy per path
    free, var = np.empty(max_k), np.empty(max_k)
    for k in range(1, max_k + 1):
        target = z[:, p - 1 + k:p - 1 + k + S]               # z_{s+k}
        pred = w @ coef                                      # z^_{s+k} from its own predictions
        free[k - 1] = float(((target - pred) ** 2).mean())
        w = xp.concatenate([w[..., 1:], pred[..., None]], axis=-1)
        eps = to_device(rng.standard_normal(ws.shape[:-1]).astype(dtype), dev)
        draw = ws @ coef + sigma * eps                       # z~_{s+k} ~ p(. | its own path)
        var[k - 1] = float(draw.var(axis=0, ddof=1).mean())
        ws = xp.concatenate([ws[..., 1:], draw[..., None]], axis=-1)
    e = innovations(rho, z)                                  # one-step errors on real prefixes
    tf = float((e ** 2).mean())
    gamma0 = float(asnumpy(autocovariance(rho, log_sigma, 1))[0])
    return KStepError(np.arange(1, max_k + 1), np.full(max_k, tf), free, var, gamma0, B * S)


def ar_k_step_error_closed_form(rho, sigma, max_k):
    """Variance of the k-step forecast error of an AR(p) process, k = 1..max_k (host maths).

        p = 1:   sigma^2 (1 - rho^2k) / (1 - rho^2)
        any p:   sigma^2 sum_{j<k} psi_j^2,   psi_0 = 1,  psi_j = sum_{i=1..min(j,p)} rho_i psi_{j-i}

    (psi are the MA(infinity) weights; for p = 1, psi_j = rho^j and the sum is geometric.)
    Shapes: rho scalar or (p,), sigma scalar -> (max_k,).
    """
    r = np.atleast_1d(np.asarray(asnumpy(rho), dtype=np.float64)).ravel()
    s2 = float(asnumpy(sigma)) ** 2
    k = np.arange(1, max_k + 1)
    if r.size == 1 and abs(r[0]) != 1.0:
        return s2 * (1.0 - r[0] ** (2 * k)) / (1.0 - r[0] ** 2)
    psi = np.zeros(max_k)
    psi[0] = 1.0
    for j in range(1, max_k):
        m = min(j, r.size)
        psi[j] = r[:m] @ psi[j - m:j][::-1]                  # sum_i rho_i psi_{j-i}
    return s2 * np.cumsum(psi ** 2)


# ----------------------------------------------------------------------------- text: per-position NLL

def token_log_probs(model, x, max_elements=1 << 24):
    """log p(x_t | x_<t) of a token model at every position, any length.  (T, B) -> host (T, B).

    A windowed model (order p) sees the last p - 1 tokens, as it does when sampling.  Columns
    are scored in chunks of about `max_elements` logits.
    """
    x = np.asarray(asnumpy(x))
    T, B = x.shape
    p = getattr(model, "context", None)
    step = max(1, max_elements // max(1, T * model.vocab_size))
    out = np.empty((T, B))
    for j in range(0, B, step):
        cols = x[:, j:j + step]
        if p is None or T <= p:
            out[:, j:j + step] = asnumpy(model.log_prob(cols))
            continue
        out[:p, j:j + step] = asnumpy(model.log_prob(cols[:p]))
        for t in range(p, T):                                # a sliding window of p tokens ending at t
            out[t, j:j + step] = asnumpy(model.log_prob(cols[t - p + 1:t + 1]))[-1]
    return out


def random_windows(ids, length, n, seed=None):
    """n windows of `length` consecutive ids from random places of a 1-D stream, time-major (length, n).

    seed: an int or a NumPy Generator.  Windows may overlap; they repeat only when the stream
    has fewer than n places to start.
    """
    ids = np.asarray(asnumpy(ids)).reshape(-1)
    if ids.size <= length:
        raise ValueError(f"need more than length = {length} ids, got {ids.size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    starts = rng.choice(ids.size - length, size=n, replace=ids.size - length < n)
    return ids[starts[None, :] + np.arange(length)[:, None]]


class PositionNLL(NamedTuple):
    t: np.ndarray                    # (L,) positions 1..L
    model_data: np.ndarray           # (L,) teacher forced: -log p_model(x_t | real x_<t)
    reference_data: np.ndarray       # (L,) -log p_ref(x_t | x_<t) of the same real windows
    reference_samples: np.ndarray    # (L,) -log p_ref(w_t | w_<t) of the model's free-running samples
    model_samples: np.ndarray        # (L,) -log p_model(w_t | w_<t): the model's own view of its samples
    reference_data_se: np.ndarray    # (L,) standard errors over the n windows
    reference_samples_se: np.ndarray
    prompt_len: int                  # the first prompt_len tokens of every sample are real
    real: np.ndarray                 # (L, n) the real windows
    samples: np.ndarray              # (L, n) the samples


def position_nll(model, reference, ids, length, n=256, prompt_len=0, temperature=1.0, top_k=None, seed=0):
    """NLL by position t of real text and of the model's own samples (exposure bias, measured).

    Draws n real windows of `length` tokens from the 1-D `ids` (held-out text) and n samples
    of the same length (the first `prompt_len` tokens of each sample are its real window's,
    the rest the model's own).  Scores each position with the model and with `reference`, a
    fixed model of the data (an :class:`~scratchnade.ngram.NGramModel` fitted on the training
    text: it does not share the model's errors).  Under exposure bias the reference NLL of
    the samples rises above the reference NLL of real text as t grows, while the model's
    teacher-forced NLL stays flat.

    Returns a PositionNLL of host arrays (nats per token).
    """
    if not 0 <= prompt_len < length:
        raise ValueError(f"prompt_len must be in [0, length), got {prompt_len}")
    rng = np.random.default_rng(seed)
    real = random_windows(ids, length, n, rng)                            # (L, n)
    samples = sample(model, n, length, real[:prompt_len] if prompt_len else None, temperature, top_k,
                     seed=int(rng.integers(1 << 31)))
    ref_data, ref_samp = -reference.log_prob(real), -reference.log_prob(samples)
    return PositionNLL(np.arange(1, length + 1), -token_log_probs(model, real).mean(axis=1),
                       ref_data.mean(axis=1), ref_samp.mean(axis=1),
                       -token_log_probs(model, samples).mean(axis=1), _stderr(ref_data), _stderr(ref_samp),
                       prompt_len, real, samples)


def _stderr(a):
    """Standard error of the mean of each row.  Shapes: (L, n) -> (L,)."""
    return a.std(axis=1, ddof=1) / np.sqrt(a.shape[1])


# ----------------------------------------------------------------------------- text: drift and repetition

class Curve(NamedTuple):
    t: np.ndarray        # (n_bins,) centre of each bin of positions (1-based)
    value: np.ndarray    # (n_bins,)


def _bins(T, window):
    if not 1 <= window <= T:
        raise ValueError(f"window must be in [1, T = {T}], got {window}")
    starts = np.arange(0, T - window + 1, window)            # whole bins only
    return starts, starts + (window + 1) / 2.0


def drift_by_position(seqs, reference_ids, V, order=1, window=16, metric="tv", smoothing=0.5):
    """Distance between the n-gram statistics of sequences at positions [a, a + window) and the data's.

        p_a(g)  = share of n-gram g among those ending in the bin (all columns pooled)
        q(g)    = (c(g) + smoothing) / (N + smoothing V^order)   from the reference ids
        tv      = 1/2 sum_g |p_a(g) - q(g)|         (in [0, 1])
        kl      = sum_g p_a(g) log(p_a(g) / q(g))   KL(p_a || q)

    Sparse in g: only the n-grams seen in the bin are visited (q's other mass enters tv as
    1 - sum q over them), so word-level bigrams never build a V^2 table.  A finite sample
    has tv > 0 even from the data itself: compare with the same curve of real windows.

    Shapes: seqs (T, B) ids; reference_ids 1-D.  Returns a Curve of host arrays.
    """
    if metric not in ("tv", "kl"):
        raise ValueError(f"metric must be 'tv' or 'kl', got {metric!r}")
    seqs = np.asarray(asnumpy(seqs)).astype(np.int64)
    ref = np.asarray(asnumpy(reference_ids)).reshape(-1, 1).astype(np.int64)
    q_counts = SortedCounts.of(gram_keys(ref, order, V))
    q_total = q_counts.total + smoothing * float(V) ** order
    starts, centres = _bins(seqs.shape[0], window)
    out = np.empty(len(starts))
    for i, a in enumerate(starts):
        lo = max(0, a - order + 1)                           # n-grams ending at t in [a, a + window)
        p = SortedCounts.of(gram_keys(seqs[lo:a + window], order, V))
        p_g = p.counts / p.total
        q_g = (q_counts.lookup(p.keys) + smoothing) / q_total
        if metric == "tv":
            out[i] = 0.5 * (np.abs(p_g - q_g).sum() + max(0.0, 1.0 - q_g.sum()))
        else:
            out[i] = float((p_g * np.log(p_g / q_g)).sum())
    return Curve(centres, out)


def distinct_n(ids, n=2):
    """Distinct-n: unique n-grams / all n-grams of each sequence (1 = no repeats).

    Shapes: ids (T,) -> float, or (T, B) time-major -> (B,).  Needs T >= n.
    """
    x = np.asarray(asnumpy(ids)).astype(np.int64)
    one = x.ndim == 1
    x = x[:, None] if one else x
    if x.shape[0] < n:
        raise ValueError(f"distinct-{n} needs sequences of at least {n} tokens, got {x.shape[0]}")
    keys = np.sort(gram_keys(x, n, int(x.max()) + 1), axis=0)     # (T-n+1, B)
    unique = 1 + (np.diff(keys, axis=0) != 0).sum(axis=0)          # runs of equal keys
    r = unique / keys.shape[0]
    return float(r[0]) if one else r


def distinct_n_by_position(ids, n=2, window=32):
    """Mean over sequences of distinct-n within bins of `window` positions: falls as text repeats.

    Shapes: ids (T, B) -> Curve of (n_bins,) host arrays (1 - value is the repetition rate).
    """
    x = np.asarray(asnumpy(ids)).astype(np.int64)
    starts, centres = _bins(x.shape[0], window)
    return Curve(centres, np.array([distinct_n(x[a:a + window], n).mean() for a in starts]))


# ----------------------------------------------------------------------------- binary images

def completion_pairs(model, x, n_given, n_completions=3, seed=0, temperature=1.0):
    """Real images and K completions of each from its first n_given pixels (e.g. the top half).

    Completion k uses seed + k.  Shapes: x (N, D) binary -> (originals (N, D), completions
    (N, K, D)), host float arrays, ready for :func:`scratchnade.plots.completion_grid`.
    """
    x = np.asarray(asnumpy(x)).astype(np.float64)
    comps = [asnumpy(sample(model, x.shape[0], prompt=x[:, :n_given], temperature=temperature,
                            seed=seed + k)) for k in range(n_completions)]
    return x, np.stack(comps, axis=1).astype(np.float64)
