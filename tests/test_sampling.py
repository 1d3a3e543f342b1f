"""Sampling and exposure bias: samplers against exact probabilities, the AR closed form, scheduled
sampling (exact at eps = 1, gradient-checked for a fixed draw), the n-gram reference, drift and
distinct-n on hand-made inputs, and the exposure-bias command."""
import itertools
import json

import numpy as np
import pytest

from scratchnade import sampling
from scratchnade.backend import asnumpy
from scratchnade.cli import main
from scratchnade.data.text import Vocabulary
from scratchnade.gradcheck import check_grads
from scratchnade.models import FVSBN, NADE, LinearGaussianAR, RecurrentNADE, SoftmaxFVSBN, Transformer
from scratchnade.models.recurrent_nade import forward, scheduled_inputs
from scratchnade.scheduled_sampling import teacher_forcing_schedule
from scratchnade.ngram import NGramModel
from scratchnade.optim import Adam
from scratchnade.train import fit

F64 = np.float64


def randomised(model, seed=0, scale=0.8):
    """Every parameter drawn at random (biases too), so the conditionals are far from uniform."""
    rng = np.random.default_rng(seed + 100)
    model.load_state_dict({k: rng.normal(0.0, scale, v.shape) for k, v in model.params.items()})
    return model


def softmax(f, tau=1.0):
    g = f / tau
    e = np.exp(g - g.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def assert_frequencies(counts, probs, z=5.0):
    """Empirical frequencies within z binomial standard errors of probs (and both sum to 1)."""
    n = counts.sum()
    freq = counts / n
    assert probs.sum() == pytest.approx(1.0)
    bound = z * np.sqrt(probs * (1 - probs) / n) + 2.0 / n
    assert np.all(np.abs(freq - probs) <= bound), np.c_[freq, probs, bound]


def token_counts(ids, V):
    """Counts of every sequence (columns of ids, (T, n)) indexed in itertools.product order."""
    T = ids.shape[0]
    code = (ids * (V ** np.arange(T - 1, -1, -1))[:, None]).sum(axis=0)
    return np.bincount(code, minlength=V ** T)


# ----------------------------------------------------------------------------- token samplers

TOKEN_MODELS = [lambda: RecurrentNADE(3, H=4, dtype=F64, seed=1),
                lambda: SoftmaxFVSBN(3, p=2, dtype=F64, seed=1),
                lambda: Transformer(3, context=2, d_model=4, layers=1, heads=2, dtype=F64, seed=1)]


@pytest.mark.parametrize("make", TOKEN_MODELS, ids=["rnn", "softmax-fvsbn", "transformer"])
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_token_frequencies_are_the_tempered_conditionals(make, tau):
    """q(w_1, w_2) = q(w_1) q(w_2 | w_1) with q(. | h) proportional to p(. | h)^(1/tau)."""
    m = randomised(make())
    V, n = 3, 20000
    seqs = np.array(list(itertools.product(range(V), repeat=2))).T        # (2, 9) every sequence
    logp = asnumpy(m.log_prob(seqs))                                      # (2, 9) log p(w_t | w_<t)
    with m.eval_mode():
        f = asnumpy(m.logits(seqs))                                       # (2, 9, V)
    p_cond = softmax(f)                                                   # p(. | w_<t) for each t, seq
    assert np.allclose(p_cond[np.arange(2)[:, None], np.arange(9)[None], seqs], np.exp(logp))
    q = p_cond ** (1 / tau)
    q /= q.sum(axis=-1, keepdims=True)                                    # tempered conditionals
    q_joint = q[0, np.arange(9), seqs[0]] * q[1, np.arange(9), seqs[1]]
    ids = sampling.sample(m, n, 2, temperature=tau, seed=3)
    assert ids.shape == (2, n)
    assert_frequencies(token_counts(ids, V), q_joint)
    if tau == 1.0:
        assert np.allclose(q_joint, np.exp(logp.sum(axis=0)))             # plain sampling: exp(log_prob)


def test_a_prompt_is_kept_and_continued_from_the_conditional():
    m = randomised(RecurrentNADE(4, H=3, dtype=F64, seed=2))
    ids = sampling.sample(m, 20000, 3, prompt=np.array([2, 1]), seed=0)
    assert np.all(ids[:2] == np.array([[2], [1]]))
    with m.eval_mode():
        p = softmax(asnumpy(m.logits(np.array([[2], [1], [0]])))[2, 0])     # p(w_3 | 2, 1)
    assert_frequencies(np.bincount(ids[2], minlength=4), p)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_never_leaves_the_k_most_likely_tokens(k):
    m = randomised(RecurrentNADE(6, H=5, dtype=F64, seed=3), scale=1.0)
    ids = sampling.sample(m, 400, 6, top_k=k, temperature=1.5, seed=k)
    with m.eval_mode():
        f = asnumpy(m.logits(ids))                                        # (T, n, V) given each prefix
    rank = (f > np.take_along_axis(f, ids[..., None], axis=2)).sum(axis=2)  # tokens more likely than w_t
    assert rank.max() < k
    assert len(np.unique(ids[0])) == k                                    # all k of them do occur
    with pytest.raises(ValueError, match="top_k"):
        sampling.sample(m, 2, 3, top_k=7)


def test_sample_text_decodes_prompt_and_continuation():
    m = RecurrentNADE(5, H=4, seed=0)
    vocab = Vocabulary(list("abcde"))
    texts = sampling.sample_text(m, vocab, 3, 10, "ab", seed=0)
    assert len(texts) == 3 and all(t.startswith("ab") and len(t) == 12 for t in texts)
    assert texts == sampling.sample_text(m, vocab, 3, 10, "ab", seed=0)  # seeded
    words = sampling.sample_text(m, Vocabulary(["the", "cat", "sat", "on", "mat"]), 2, 4, "the cat", seed=1)
    assert all(len(w.split()) == 6 and w.startswith("the cat ") for w in words)


# ----------------------------------------------------------------------------- binary samplers

def all_bits(D):
    return np.array(list(itertools.product([0, 1], repeat=D)), dtype=F64)


BINARY_MODELS = [lambda: NADE(3, H=3, dtype=F64, seed=0), lambda: FVSBN(3, dtype=F64, seed=0)]


@pytest.mark.parametrize("make", BINARY_MODELS, ids=["nade", "fvsbn"])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_binary_frequencies_and_completions_match_the_tempered_model(make, tau):
    m = randomised(make(), scale=1.5)
    x = all_bits(3)                                                       # in product order
    p1 = asnumpy(m.conditionals(x))                                       # p(x_t = 1 | x_<t), (8, 3)
    q1 = p1 ** (1 / tau) / (p1 ** (1 / tau) + (1 - p1) ** (1 / tau))
    q = np.prod(np.where(x == 1, q1, 1 - q1), axis=1)                     # tempered joint
    if tau == 1.0:
        assert np.allclose(q, np.exp(asnumpy(m.log_prob(x))))
    code = lambda s: (asnumpy(s) @ [4, 2, 1]).astype(int)                 # noqa: E731
    s = sampling.sample(m, 20000, temperature=tau, seed=1)
    assert_frequencies(np.bincount(code(s), minlength=8), q)
    c = sampling.sample(m, 20000, prompt=np.array([1.0]), temperature=tau, seed=2)   # x_1 = 1 given
    assert np.all(asnumpy(c)[:, 0] == 1)
    assert_frequencies(np.bincount(code(c) - 4, minlength=4), q[4:] / q[4:].sum())


def test_top_k_is_refused_for_bernoulli_and_gaussian_models():
    with pytest.raises(ValueError, match="meaningless"):
        sampling.sample(NADE(4, H=2), 2, top_k=1)
    with pytest.raises(ValueError, match="meaningless"):
        sampling.sample(LinearGaussianAR(1, rho=[0.5]), 2, 5, top_k=1)


def test_completion_pairs_keep_the_given_pixels():
    m = NADE(8, H=4, seed=0)
    x = (np.random.default_rng(0).random((5, 8)) < 0.5).astype(F64)
    orig, comps = sampling.completion_pairs(m, x, 4, n_completions=3, seed=0)
    assert orig.shape == (5, 8) and comps.shape == (5, 3, 8)
    assert np.array_equal(comps[:, :, :4], np.repeat(x[:, None, :4], 3, axis=1))
    assert not np.array_equal(comps[:, 0], comps[:, 1])                  # different seeds per completion


# ----------------------------------------------------------------------------- real-valued: the AR(1) case

def test_ar_prompt_continuation_has_the_conditional_moments():
    m = LinearGaussianAR(2, rho=[0.5, -0.3], mu=1.0, sigma=0.5, dtype=F64)
    prompt = np.array([2.0, 0.0, 3.0])
    for tau in (1.0, 0.25):
        x = asnumpy(sampling.sample(m, 20000, 4, prompt=prompt, temperature=tau, seed=0))
        assert np.all(x[:, :3] == prompt)
        mean, var = (asnumpy(a)[0, 3] for a in m.conditional_moments(np.r_[prompt, 0.0][None]))
        assert x[:, 3].mean() == pytest.approx(mean, abs=5 * np.sqrt(tau * var / 20000))
        assert x[:, 3].var() == pytest.approx(tau * var, rel=0.05)


def test_ar_k_step_error_matches_the_closed_form():
    rho, sigma = 0.8, 0.7
    x = asnumpy(LinearGaussianAR(1, rho=[rho], mu=0.5, sigma=sigma, dtype=F64).sample(3000, 30, 0))
    m = LinearGaussianAR.fit_closed_form(x, dtype=F64)
    r = sampling.ar_k_step_error(m, x, 12, n_paths=4, seed=1)
    cf = sampling.ar_k_step_error_closed_form(float(asnumpy(m.params["rho"])[0]),
                                              float(np.exp(asnumpy(m.params["log_sigma"]))), 12)
    truth = sampling.ar_k_step_error_closed_form(rho, sigma, 12)
    assert np.allclose(r.free_running, cf, rtol=0.06)          # ~ 2 / sqrt(effective count) at large k
    assert np.allclose(r.sample_var, cf, rtol=0.04)
    assert np.allclose(cf, truth, rtol=0.05)
    assert r.teacher_forced[0] == pytest.approx(cf[0], rel=1e-6)  # the MLE's sigma^2 is the one-step MSE
    assert np.all(np.diff(cf) > 0) and cf[-1] < r.stationary_var
    assert r.stationary_var == pytest.approx(sigma ** 2 / (1 - rho ** 2), rel=0.05)
    assert r.free_running[-1] > 2.5 * r.teacher_forced[0]       # the mismatch, visible


def test_closed_form_general_p_reduces_to_ar1():
    a = sampling.ar_k_step_error_closed_form(0.9, 0.5, 50)
    b = sampling.ar_k_step_error_closed_form(np.array([0.9, 0.0, 0.0]), 0.5, 50)
    assert np.allclose(a, b)
    assert a[0] == pytest.approx(0.25) and a[-1] == pytest.approx(0.25 / (1 - 0.81), rel=1e-3)


# ----------------------------------------------------------------------------- scheduled sampling

def twin_models(**kw):
    return [RecurrentNADE(7, H=5, seed=4, **kw) for _ in range(2)]


@pytest.mark.parametrize("kw", [{}, {"tied": True, "dropout": 0.3}, {"carry_state": True}])
def test_teacher_forcing_one_is_plain_training_bit_for_bit(kw):
    plain, scheduled = twin_models(**kw)[0], RecurrentNADE(7, H=5, seed=4, scheduled_sampling="linear",
                                                           ss_k=1.0, ss_c=0.0, **kw)   # eps = 1 forever
    x = np.random.default_rng(0).integers(0, 7, (6, 5))
    l0, g0 = plain.loss_and_grads(x)
    g0 = {k: v.copy() for k, v in g0.items()}
    l1, g1 = scheduled.loss_and_grads(x, teacher_forcing=1.0)
    assert l0 == l1 and all(np.array_equal(g0[k], g1[k]) for k in g0)
    batches = [np.random.default_rng(i).integers(0, 7, (6, 5)) for i in range(4)]
    for m in (plain, scheduled):
        fit(m, batches, None, Adam(lr=0.01), epochs=2, progress=False)
    assert scheduled.train_step == 2 * 4 + 1
    assert all(np.array_equal(plain.params[k], scheduled.params[k]) for k in plain.params)


def test_scheduled_sampling_changes_training_and_replays_from_the_rng():
    m, ref = twin_models()
    x = np.random.default_rng(1).integers(0, 7, (8, 6))
    state = m._rng.bit_generator.state
    loss, grads = m.loss_and_grads(x, teacher_forcing=0.3)
    rng = np.random.default_rng()
    rng.bit_generator.state = state                                       # replay the coins and draws
    keep, u = rng.random((8, 6)) < 0.3, rng.random((8, 6))
    fed = scheduled_inputs(ref.params, x, keep, u)
    assert np.array_equal(fed[keep], x[keep]) and not np.array_equal(fed, x)
    loss_fed, grads_fed = ref.loss_and_grads(x, fed=fed)
    assert loss == loss_fed and all(np.array_equal(grads[k], grads_fed[k]) for k in grads)
    assert loss != ref.loss(x)                                            # feeding draws changed the loss


def test_fed_draws_come_from_the_models_own_conditional():
    m = randomised(RecurrentNADE(4, H=3, dtype=F64, seed=5))
    n = 20000
    x = np.zeros((2, n), dtype=np.int64)
    rng = np.random.default_rng(0)
    fed = scheduled_inputs(m.params, x, np.zeros((2, n), bool), rng.random((2, n)))   # eps = 0
    with m.eval_mode():
        f = asnumpy(m.logits(np.zeros((1, 1), dtype=np.int64)))[0, 0]     # f_1 = b + W_o W_init
    assert_frequencies(np.bincount(fed[0], minlength=4), softmax(f))
    with m.eval_mode():                                                  # w^_2 given the fed w^_1 = 2
        f2 = asnumpy(m.logits(np.array([[2], [0]])))[1, 0]
    assert_frequencies(np.bincount(fed[1][fed[0] == 2], minlength=4), softmax(f2))


@pytest.mark.parametrize("tied", [False, True])
def test_gradients_for_a_fixed_draw_of_fed_tokens(tied):
    rng = np.random.default_rng(7)
    m = randomised(RecurrentNADE(5, H=4, tied=tied, dtype=F64, seed=7))
    x, fed = rng.integers(0, 5, (5, 3)), rng.integers(0, 5, (5, 3))
    loss, grads = m.loss_and_grads(x, fed=fed)
    grads = {k: np.array(v) for k, v in grads.items()}
    errors = check_grads(lambda: m.loss_and_grads(x, fed=fed)[0], m.params, grads)
    assert max(errors.values()) < 1e-6, errors
    assert loss == pytest.approx(float(forward(m.params, x, fed=fed)[0]))
    assert not np.allclose(grads["W_h"], m.loss_and_grads(x)[1]["W_h"])   # fed really enters BPTT


def test_teacher_forcing_schedules():
    assert teacher_forcing_schedule("linear", 5, k=1.0, c=0.1) == pytest.approx(0.5)
    assert teacher_forcing_schedule("linear", 50, k=1.0, c=0.1, eps_min=0.2) == 0.2
    assert teacher_forcing_schedule("exponential", 3, k=0.5) == pytest.approx(0.125)
    assert teacher_forcing_schedule("inverse-sigmoid", 100, k=10) == pytest.approx(10 / (10 + np.exp(10)))
    assert teacher_forcing_schedule("inverse-sigmoid", 10 ** 9, k=10, eps_min=0.05) == 0.05   # no overflow
    i = np.arange(0, 20000, 50)
    for kind in ("linear", "exponential", "inverse-sigmoid"):
        eps = teacher_forcing_schedule(kind, i)
        assert eps.shape == i.shape and np.all(np.diff(eps) <= 0) and 0 <= eps.min() and eps.max() <= 1
        assert eps[0] > 0.99 and eps[-1] < 0.01
    for bad in [("cosine", 1), ("exponential", 1, 1.5), ("inverse-sigmoid", 1, 0.5), ("linear", -1)]:
        with pytest.raises(ValueError):
            teacher_forcing_schedule(*bad)
    with pytest.raises(ValueError, match="only applies to the linear"):
        teacher_forcing_schedule("exponential", 1, c=0.1)


# ----------------------------------------------------------------------------- the n-gram reference

@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_normalises_and_counts_by_hand(order):
    ids = np.random.default_rng(order).integers(0, 6, 300)
    m = NGramModel(order, alpha=0.7).fit(ids, 7)                           # id 6 never seen
    for h in ([], [3], [5, 2], [1, 6, 6, 0]):
        p = m.next_token_probs(np.array(h, dtype=np.int64))
        assert p.shape == (7,) and p.sum() == pytest.approx(1.0) and np.all(p > 0)
    if order == 2:                                                        # p_2 = (c(hw) + a p_1(w)) / (c(h) + a)
        c1, N = np.bincount(ids, minlength=7), ids.size
        p1 = (c1 + 0.7 / 7) / (N + 0.7)
        pairs = ids[:-1] * 7 + ids[1:]
        c_hw = (pairs == 3 * 7 + 4).sum()
        c_h = (ids[:-1] == 3).sum()
        assert m.next_token_probs(np.array([3]))[4] == pytest.approx((c_hw + 0.7 * p1[4]) / (c_h + 0.7))
        x = ids[:12].reshape(6, 2)
        lp = m.log_prob(x)
        assert lp[0, 1] == pytest.approx(np.log(p1[x[0, 1]]))             # no history: the unigram level


def test_ngram_alpha_is_chosen_on_validation_and_a_good_order_wins():
    ids = np.tile([0, 1, 2, 3], 200)                                      # a deterministic cycle
    tri = NGramModel(3).fit(ids, 4, valid=ids[:40])
    assert tri.alpha == 0.01 and tri.nll(ids[:40]) < 0.2
    assert NGramModel(1).fit(ids, 4).nll(ids[:40]) == pytest.approx(np.log(4), rel=1e-3)


# ----------------------------------------------------------------------------- drift and distinct-n

def test_distinct_n_by_hand():
    assert sampling.distinct_n(np.array([0, 1, 0, 1]), 2) == pytest.approx(2 / 3)
    assert sampling.distinct_n(np.array([5, 5, 5, 5]), 1) == pytest.approx(1 / 4)
    cols = np.array([[0, 1, 2, 3], [0, 0, 0, 0]]).T                      # (T, B) time-major
    assert np.allclose(sampling.distinct_n(cols, 1), [1.0, 0.25])
    seq = np.r_[np.arange(8), np.zeros(8, dtype=int)][:, None]            # fresh, then a loop
    c = sampling.distinct_n_by_position(seq, 1, window=8)
    assert np.allclose(c.value, [1.0, 1 / 8]) and np.allclose(c.t, [4.5, 12.5])


def test_drift_by_hand():
    ref = np.tile([0, 1], 50)                                             # half 0, half 1; bigrams 01, 10
    same = np.tile([[0, 1], [1, 0]], (4, 1))                              # (8, 2): every bin half 0, half 1
    assert np.allclose(sampling.drift_by_position(same, ref, 3, 1, window=4, smoothing=0).value, 0)
    tv2 = 0.5 * (abs(0.5 - 50 / 99) + abs(0.5 - 49 / 99))                 # ref: 50 "01" and 49 "10" of 99
    assert np.allclose(sampling.drift_by_position(same, ref, 3, 2, window=4, smoothing=0).value, tv2)
    assert np.allclose(sampling.drift_by_position(same, ref, 3, 1, window=4, metric="kl", smoothing=0).value, 0)
    other = np.full((8, 2), 2)                                            # only the unseen token
    assert np.allclose(sampling.drift_by_position(other, ref, 3, 1, window=4, smoothing=0).value, 1)
    stuck = np.zeros((8, 2), dtype=int)                                   # unigram half right, bigram 00 never seen
    assert np.allclose(sampling.drift_by_position(stuck, ref, 3, 1, window=8, smoothing=0).value, 0.5)
    assert np.allclose(sampling.drift_by_position(stuck, ref, 3, 2, window=8, smoothing=0).value, 1)
    kl = sampling.drift_by_position(stuck, ref, 3, 1, window=8, metric="kl", smoothing=0.5).value
    assert kl[0] == pytest.approx(np.log(1 / ((50 + 0.5) / (100 + 1.5))))


def test_position_nll_shapes_prompt_and_scores():
    ids = np.random.default_rng(0).integers(0, 5, 3000)
    m = RecurrentNADE(5, H=4, seed=0)
    ref = NGramModel(2).fit(ids, 5)
    r = sampling.position_nll(m, ref, ids, 12, n=30, prompt_len=4, seed=1)
    assert r.samples.shape == r.real.shape == (12, 30) and r.t.tolist() == list(range(1, 13))
    assert np.array_equal(r.samples[:4], r.real[:4])
    assert np.allclose(r.model_data, -asnumpy(m.log_prob(r.real)).mean(axis=1))
    assert np.allclose(r.reference_samples, -ref.log_prob(r.samples).mean(axis=1))
    assert np.allclose(r.reference_data[:4], r.reference_samples[:4])
    windowed = SoftmaxFVSBN(5, p=3, seed=0)                               # longer than its order p
    lp = sampling.token_log_probs(windowed, r.real)
    assert np.allclose(lp[5], asnumpy(windowed.log_prob(r.real[3:6]))[-1])


# ----------------------------------------------------------------------------- devices

def _outputs_on(dev):
    """Samples of every kind, a scheduled-sampling step and the AR diagnostic, computed on `dev`."""
    x = np.random.default_rng(0).integers(0, 7, (6, 5))
    rnn = RecurrentNADE(7, H=5, seed=4, device=dev, dtype=F64)
    nade, fv = NADE(6, H=3, seed=0, device=dev, dtype=F64), FVSBN(6, seed=0, device=dev, dtype=F64)
    ar = LinearGaussianAR(2, rho=[0.5, 0.2], device=dev, dtype=F64)
    loss, grads = rnn.loss_and_grads(x, teacher_forcing=0.5)
    out = [sampling.sample(rnn, 4, 9, prompt=np.array([1, 2]), temperature=0.7, top_k=3, seed=1),
           asnumpy(sampling.sample(nade, 3, prompt=np.array([1.0, 0.0]), seed=2)),
           asnumpy(sampling.sample(fv, 3, prompt=np.array([1.0, 0.0]), temperature=0.5, seed=2)),
           asnumpy(sampling.sample(ar, 3, 6, prompt=np.array([0.3]), seed=3)),
           loss, asnumpy(grads["W_x"])]
    return out + list(sampling.ar_k_step_error(ar, asnumpy(ar.sample(20, 10, 0)), 4, seed=0)[1:4])


def test_the_fake_device_gives_the_cpu_samples_and_scheduled_sampling(fake_device):
    for a, b in zip(_outputs_on("cpu"), _outputs_on(fake_device)):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_the_gpu_gives_the_cpu_samples_and_scheduled_sampling():
    for a, b in zip(_outputs_on("cpu"), _outputs_on("gpu")):
        assert np.allclose(a, b, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the command line

RNN = ["--model", "rnn", "--hidden", "6", "--order", "6", "--vocab", "5", "--n-train", "2000",
       "--batch-size", "16", "--lr", "0.01", "--no-plot"]


def test_scheduled_sampling_flag_trains_and_resumes_exactly(tmp_path):
    ss = ["--scheduled-sampling", "exponential", "--ss-k", "0.99", "--ss-min", "0.2"]
    assert main(["train", *RNN, *ss, "--epochs", "2", "--run-dir", str(tmp_path / "a")]) == 0
    assert main(["train", *RNN, *ss, "--epochs", "1", "--run-dir", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert main(["train", *RNN, "--epochs", "2", "--run-dir", str(tmp_path / "plain")]) == 0
    a, b, plain = (np.load(tmp_path / d / "last.npz") for d in ("a", "b", "plain"))
    params = [k for k in a.files if k != "meta.json"]
    assert all(np.array_equal(a[k], b[k]) for k in params)                 # the schedule clock resumed
    assert not np.array_equal(a["param/W_h"], plain["param/W_h"])
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["scheduled_sampling"] == "exponential" and cfg["ss_min"] == 0.2


@pytest.mark.parametrize("argv", [["--model", "rnn", "--ss-k", "2"],
                                  ["--model", "nade", "--scheduled-sampling", "linear"],
                                  ["--model", "rnn", "--scheduled-sampling", "exponential", "--ss-c", "0.1"]])
def test_scheduled_sampling_flag_errors(tmp_path, capsys, argv):
    assert main(["train", *argv, "--epochs", "1", "--run-dir", str(tmp_path / "r"), "--no-plot"]) == 2
    assert "error" in capsys.readouterr().err


def test_exposure_bias_command_writes_figures_for_every_kind(tmp_path, capsys):
    runs = {"tokens": RNN, "binary": ["--model", "nade", "--hidden", "4", "--dim", "16", "--n-train", "300"],
            "real": ["--model", "gaussian-ar", "--n-train", "200", "--seq-len", "30"]}
    files = {"tokens": ["position_nll.png", "drift.png"], "binary": ["completions.png"],
             "real": ["k_step_error.png"]}
    for kind, args in runs.items():
        run = tmp_path / kind
        assert main(["train", *args, "--epochs", "1", "--run-dir", str(run), "--no-plot"]) == 0
        assert main(["exposure-bias", str(run), "-n", "24", "--length", "30", "--prompt-len", "5"][
                    :None if kind == "tokens" else 6]) == 0
        for name in files[kind] + ["summary.json"]:
            assert (run / "exposure-bias" / name).stat().st_size > 0, name
        summary = json.loads((run / "exposure-bias" / "summary.json").read_text())
        assert summary["kind"] == kind
    s = json.loads((tmp_path / "real" / "exposure-bias" / "summary.json").read_text())
    assert np.allclose(s["free_running"], s["closed_form"], rtol=0.3)
    assert s["free_running"][-1] > s["teacher_forced"]
