"""Softmax FVSBN: gradients, the lecture's definition, both encodings, normalisation,
autoregressive property, sampling, errors, the strict fake device, fitting."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from scratchnade.backend import asnumpy, device_of, to_device
from scratchnade.functional import dropout_mask
from scratchnade.gradcheck import assert_grads_close, check_grads, check_model, numerical_grad
from scratchnade.models import softmax_fvsbn as S
from scratchnade.models.softmax_fvsbn import SoftmaxFVSBN
from scratchnade.optim import Adam
from tiers import assert_reference_matches_finite_differences, assert_tiers_agree, on

ENCODINGS = S.ENCODINGS


def random_model(d, p, encoding, K=3, scale=1.0, seed=0, dtype=np.float64, **kw):
    """A model with every parameter (b included) ~ N(0, scale^2), so nothing is trivially 0."""
    m = SoftmaxFVSBN(d, p=p, encoding=encoding, embed_dim=K if encoding == "embedding" else None,
                     dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    m.load_state_dict({k: scale * rng.standard_normal(v.shape) for k, v in m.params.items()})
    return m


def all_windows(d, T):
    """Every sequence of T ids in [0, d), as columns: (T, d^T)."""
    return np.array(list(itertools.product(range(d), repeat=T)), dtype=np.int64).T.reshape(T, -1)


def one_hot_loop_logits(params, w, mask=None):
    """The lecture's definition, literally: x_s = onehot(w_s) (built here), f_t = b_t + sum_{s<t} P_s x_s.

    Shapes: params {b (p, d), P (p, d, d)}, w (T, B), mask (T, B) or None -> (T, B, d).
    """
    b, P = params["b"], params["P"]
    T, B = w.shape
    d = b.shape[1]
    f = np.zeros((T, B, d))
    for j in range(B):
        for t in range(T):
            f_t = b[t].copy()
            for s in range(t):
                x_s = np.zeros(d)
                x_s[w[s, j]] = 1.0 if mask is None else mask[s, j]   # one-hot (dropped out)
                f_t += P[s] @ x_s                                    # P_s x_s
            f[t, j] = f_t
    return f


@st.composite
def problems(draw):
    """(encoding, params, w, mask): float64 params in [-2, 2], small sizes, mask or None."""
    encoding = draw(st.sampled_from(ENCODINGS), label="encoding")
    d = draw(st.integers(1, 7), label="d")
    p = draw(st.integers(1, 5), label="p")
    T = draw(st.integers(1, p), label="T")
    B = draw(st.integers(1, 3), label="B")
    K = draw(st.integers(1, 5), label="K")
    value = st.floats(-2.0, 2.0, allow_nan=False)
    params = {"b": draw(arrays(np.float64, (p, d), elements=value), label="b"),
              "P": draw(arrays(np.float64, (p, d, d if encoding == "onehot" else K), elements=value),
                        label="P")}
    if encoding == "embedding":
        params["E"] = draw(arrays(np.float64, (d, K), elements=value), label="E")
    w = draw(arrays(np.int64, (T, B), elements=st.integers(0, d - 1)), label="w")
    mask = None
    if draw(st.booleans(), label="dropout"):
        q = draw(st.sampled_from([0.3, 0.5]), label="q")
        mask = dropout_mask(S.mask_shape(params, w), q, np.random.default_rng(draw(st.integers(0, 99))),
                            params["P"])
    return encoding, params, w, mask


# ----------------------------------------------------------------------------- gradients

@settings(max_examples=60, deadline=None)
@given(problems())
def test_gradients_match_finite_differences(problem):
    encoding, params, w, mask = problem
    _, cache = S.forward(params, w, mask)
    grads = S.backward(1.0, cache)
    assert set(grads) == set(params)

    def loss_fn():
        return S.forward(params, w, mask)[0]

    for name, x in params.items():
        num = numerical_grad(loss_fn, x)                   # centred differences, float64
        # where the whole gradient is round-off sized (e.g. E ~ 1e-5 makes dP ~ 1e-6) the
        # numerical side's error (~1e-11) dominates: accept a tiny absolute gap there
        assert_grads_close(grads[name], num, rtol=1e-6, atol=1e-9, what=f"{encoding} {name}")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_check_model_with_repeated_ids_and_fixed_dropout_mask(encoding):
    m = random_model(4, 4, encoding, dropout=0.5)
    w = np.array([[0, 0, 0], [2, 2, 0], [2, 2, 2], [1, 3, 1]])   # repeats within and across positions
    with m.eval_mode():                                           # dropout off
        assert max(check_model(m, w).values()) < 1e-7
    mask = dropout_mask(S.mask_shape(m.params, w), 0.5, np.random.default_rng(1), m.params["P"])
    _, g = m.loss_and_grads(w, mask=mask)
    g = {k: v.copy() for k, v in g.items()}
    errors = check_grads(lambda: m.loss_and_grads(w, mask=mask)[0], m.params, g)
    assert max(errors.values()) < 1e-7, errors


def test_unused_weights_get_exactly_zero_gradient():
    m = random_model(5, 4, "embedding")
    w = np.array([[1, 2], [3, 3]])                  # T = 2 < p: only P_1 and rows E[1], E[2] are used
    _, g = m.loss_and_grads(w)
    assert np.all(g["P"][1:] == 0) and np.any(g["P"][0] != 0)
    assert np.all(g["E"][[0, 3, 4]] == 0) and np.all(np.any(g["E"][[1, 2]] != 0, axis=1))
    assert np.all(g["b"][2:] == 0)


# ----------------------------------------------------------------------------- two tiers: reference = fast

@pytest.mark.parametrize("device", ["cpu", "fake"])
@settings(max_examples=25, deadline=None)
@given(problem=problems(), dloss=st.floats(0.1, 2.0, allow_nan=False))
def test_fast_pair_equals_the_reference(device, problem, dloss):
    """forward/backward give reference_forward/backward's loss and every gradient (float64)."""
    _, params, w, mask = problem
    params, w, mask = on(device, params, w, mask)
    assert_tiers_agree(S, params, w, mask, dlosses=(dloss,))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reference_matches_finite_differences(encoding):
    m = random_model(4, 4, encoding)
    w = np.array([[0, 0, 0], [2, 2, 0], [2, 2, 2], [1, 3, 1]])   # repeated ids in a position
    mask = dropout_mask(S.mask_shape(m.params, w), 0.5, np.random.default_rng(8), m.params["P"])
    assert_reference_matches_finite_differences(S, m.params, w, mask)
    loss = S.reference_forward(m.params, w, mask)[0]
    assert float(loss) == pytest.approx(m.loss_and_grads(w, mask=mask)[0], rel=1e-12)


# ----------------------------------------------------------------------------- the lecture's definition

@settings(max_examples=25, deadline=None)
@given(problems().filter(lambda pr: pr[0] == "onehot"))
def test_onehot_equals_loop_with_explicit_one_hot_vectors(problem):
    _, params, w, mask = problem
    f = S.logits(params, w, mask)
    np.testing.assert_allclose(f, one_hot_loop_logits(params, w, mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dropout", [False, True])
def test_embedding_with_identity_E_is_the_onehot_model(dropout):
    d, p = 5, 4
    hot = random_model(d, p, "onehot")
    emb = SoftmaxFVSBN(d, p=p, encoding="embedding", embed_dim=d, dtype=np.float64)
    emb.load_state_dict({"b": hot.params["b"], "P": hot.params["P"], "E": np.eye(d)})
    w = np.random.default_rng(2).integers(0, d, (p, 6))
    mask_hot = mask_emb = None
    if dropout:                                     # a dropped token = a dropped one-hot vector
        mask_hot = dropout_mask((p, 6), 0.5, np.random.default_rng(3), hot.params["P"])
        mask_emb = np.repeat(mask_hot[:, :, None], d, axis=2)
    np.testing.assert_allclose(S.logits(emb.params, w, mask_emb), S.logits(hot.params, w, mask_hot),
                               rtol=1e-12, atol=1e-12)
    loss_h, g_h = hot.loss_and_grads(w, mask=mask_hot)
    loss_e, g_e = emb.loss_and_grads(w, mask=mask_emb)
    assert loss_h == pytest.approx(loss_e, rel=1e-12)
    for k in ("b", "P"):
        np.testing.assert_allclose(g_e[k], g_h[k], rtol=1e-10, atol=1e-14)


def test_first_token_is_categorical_of_b1():
    """b_1 plays the lecture's P_{0,0}: p(w_1) = softmax(b_1), whatever P is."""
    for encoding in ENCODINGS:
        m = random_model(4, 3, encoding)
        w = all_windows(4, 1)
        lp = m.log_prob(w)[0]
        b1 = m.params["b"][0]
        np.testing.assert_allclose(lp, b1 - np.log(np.exp(b1).sum()), rtol=1e-12)


# ----------------------------------------------------------------------------- probability

@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("T", [2, 3])
def test_normalisation_over_all_sequences(encoding, T):
    m = random_model(3, 3, encoding, scale=1.5)
    w = all_windows(3, T)                            # all 3^T windows (T = p or a prefix)
    total = np.exp(m.log_prob(w).sum(axis=0)).sum()
    assert abs(total - 1.0) < 1e-10


@settings(max_examples=30, deadline=None)
@given(problems(), st.data())
def test_autoregressive_property(problem, data):
    """f_1 .. f_t do not move when w_t .. w_T (0-based w[t:]) are redrawn, for every t."""
    encoding, params, w, mask = problem
    T, B = w.shape
    d = params["b"].shape[1]
    f = S.logits(params, w, mask)
    for t in range(T):
        w2 = w.copy()
        w2[t:] = data.draw(arrays(np.int64, (T - t, B), elements=st.integers(0, d - 1)), label="tail")
        np.testing.assert_array_equal(S.logits(params, w2, mask)[:t + 1], f[:t + 1])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_logits_change_with_the_previous_token(encoding):
    """f_t depends on w_{t-1} (the slide's s < t, not s < t - 1): catches an index slip."""
    d, p = 4, 5
    m = random_model(d, p, encoding)
    w = np.random.default_rng(4).integers(0, d, (p, 1))
    f = asnumpy(m.logits(w))
    for t in range(1, p):
        w2 = w.copy()
        w2[t - 1] = (w[t - 1] + 1) % d
        f2 = asnumpy(m.logits(w2))
        assert np.abs(f2[t] - f[t]).max() > 1e-6, t
        np.testing.assert_array_equal(f2[:t], f[:t])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sampling_frequencies_match_probabilities(encoding):
    d, p, n = 3, 2, 30000
    m = random_model(d, p, encoding, scale=1.0)
    exact = np.exp(m.log_prob(all_windows(d, p)).sum(axis=0))          # (9,) in product order
    s = m.sample(n, p, seed=5)
    assert s.shape == (p, n) and s.min() >= 0 and s.max() < d
    freq = np.bincount(s[0] * d + s[1], minlength=d * d) / n
    assert 0.5 * np.abs(freq - exact).sum() < 0.02


def test_sample_longer_than_p_and_prompt():
    m = random_model(4, 3, "onehot")
    s = m.sample(5, 10, seed=0, prompt=[1, 2])
    assert s.shape == (10, 5) and np.all(s[:2] == [[1], [2]]) and s.max() < 4
    np.testing.assert_array_equal(s, m.sample(5, 10, seed=0, prompt=[1, 2]))


# ----------------------------------------------------------------------------- class behaviour

def test_dropout_only_in_training_and_reproducible():
    m = random_model(6, 4, "embedding", dropout=0.5, seed=3)
    w = np.random.default_rng(0).integers(0, 6, (4, 8))
    clean = S.logits(m.params, w)
    assert not np.allclose(m.logits(w), clean)                 # training: masks drawn
    with m.eval_mode():
        np.testing.assert_array_equal(m.logits(w), clean)
    lp1, lp2 = m.log_prob(w), m.log_prob(w)                     # log_prob is always eval
    np.testing.assert_array_equal(lp1, lp2)
    a, b = random_model(6, 4, "onehot", dropout=0.5, seed=3), random_model(6, 4, "onehot", dropout=0.5, seed=3)
    assert a.loss_and_grads(w)[0] == b.loss_and_grads(w)[0]    # same seed, same mask stream


def test_buffers_reused_and_results_match_pure_functions():
    m = random_model(5, 4, "embedding")
    rng = np.random.default_rng(6)
    for shape in [(4, 3), (4, 3), (2, 3), (4, 5)]:              # same, shorter, larger batches
        w = rng.integers(0, 5, shape)
        loss, g = m.loss_and_grads(w)
        ref_loss, cache = S.forward(m.params, w)
        ref = S.backward(1.0, cache)
        assert loss == pytest.approx(float(ref_loss), rel=1e-12)
        for k in ref:
            np.testing.assert_allclose(g[k], ref[k], rtol=1e-12, atol=1e-15)


def test_initialisation():
    m = SoftmaxFVSBN(50, p=3, encoding="embedding", embed_dim=40, seed=1, init_scale=0.05)
    assert m.context == 3 and m.vocab_size == 50 and m.params["P"].shape == (3, 50, 40)
    assert m.params["E"].shape == (50, 40) and m.params["P"].dtype == np.float32
    assert np.all(m.params["b"] == 0)
    assert abs(m.params["P"].std() - 0.05) < 0.005 and abs(m.params["E"].std() - 1.0) < 0.1
    m64 = SoftmaxFVSBN(50, p=3, encoding="embedding", embed_dim=40, seed=1, init_scale=0.05,
                       dtype=np.float64)
    for k in m.params:                                          # one seed, one model, any dtype
        np.testing.assert_array_equal(m.params[k], m64.params[k].astype(np.float32))
    hot = SoftmaxFVSBN(7, p=2)
    assert set(hot.params) == {"b", "P"} and hot.params["P"].shape == (2, 7, 7)
    assert hot.config["encoding"] == "onehot" and hot.num_parameters() == 2 * 7 + 2 * 49


def test_errors():
    m = random_model(4, 3, "onehot")
    with pytest.raises(ValueError, match="out of range"):
        m.log_prob(np.array([[0], [4]]))
    with pytest.raises(ValueError, match="out of range"):
        m.loss_and_grads(np.array([[0], [-1]]))
    with pytest.raises(ValueError, match="time-major"):
        m.loss_and_grads(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="longer than"):
        m.log_prob(np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        m.log_prob(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mask"):
        m.loss_and_grads(np.zeros((2, 2), dtype=np.int64), mask=np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match="1 <= T"):
        S.forward(m.params, np.zeros((0, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="encoding='embedding'"):
        SoftmaxFVSBN(33278, p=8)                                 # p d^2 ~ 8.9e9 entries
    with pytest.raises(ValueError, match="encoding"):
        SoftmaxFVSBN(5, encoding="word2vec")
    with pytest.raises(ValueError, match="embed_dim"):
        SoftmaxFVSBN(5, encoding="onehot", embed_dim=3)
    with pytest.raises(ValueError, match="dropout"):
        SoftmaxFVSBN(5, dropout=1.0)


# ----------------------------------------------------------------------------- devices

@pytest.mark.parametrize("encoding", ENCODINGS)
def test_runs_on_strict_fake_device(fake_device, encoding):
    w = np.random.default_rng(7).integers(0, 5, (3, 4))
    cpu = random_model(5, 3, encoding, dropout=0.3)
    dev = random_model(5, 3, encoding, dropout=0.3).to(fake_device)
    assert device_of(dev.params["P"]) == fake_device
    wd = to_device(w, fake_device)
    for _ in range(2):                                          # second call reuses the buffers
        loss_c, g_c = cpu.loss_and_grads(w)                     # same seed: same dropout masks
        loss_d, g_d = dev.loss_and_grads(wd)
        assert loss_d == pytest.approx(loss_c, rel=1e-12)
        for k in g_c:
            assert device_of(g_d[k]) == fake_device
            np.testing.assert_allclose(asnumpy(g_d[k]), g_c[k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(asnumpy(dev.log_prob(wd)), cpu.log_prob(w), rtol=1e-12)
    np.testing.assert_array_equal(dev.sample(6, 5, seed=1), cpu.sample(6, 5, seed=1))


# ----------------------------------------------------------------------------- fitting

def test_adam_fits_data_from_a_teacher():
    """A student trained on the teacher's samples reaches (close to) the teacher's entropy."""
    d, p = 3, 3
    teacher = random_model(d, p, "onehot", scale=1.5, seed=11)
    windows = all_windows(d, p)
    prob = np.exp(teacher.log_prob(windows).sum(axis=0))
    entropy = -(prob * np.log(prob)).sum() / p                  # nats per token
    data = teacher.sample(4000, p, seed=12)
    for encoding in ENCODINGS:
        student = SoftmaxFVSBN(d, p=p, encoding=encoding, embed_dim=4 if encoding == "embedding" else None,
                               dtype=np.float64, seed=0)
        opt = Adam(lr=0.05)
        for step in range(300):
            batch = data[:, (step * 200) % 4000:(step * 200) % 4000 + 200]
            _, g = student.loss_and_grads(batch)
            opt.step(student.params, g)
        cross = -(prob * student.log_prob(windows).sum(axis=0)).sum() / p   # exact cross-entropy
        assert entropy <= cross < entropy + 0.02, (encoding, entropy, cross)
