"""Every op's backward against centred differences (float64), extreme logits included.

The loss checked is a random projection f(x) = sum(dy * op(x)), whose gradient is
op_backward(dy, ...).  Finite differences use h = 1e-4: with logits of 1e4 the loss is
~1e4 and its float64 round-off (~1e-12) divided by 2h must stay far below the 1e-7 bar;
the truncation error h^2 f'''/6 ~ 1e-9 is harmless.  Relative error is measured against
the largest gradient entry, so every drawn input keeps one moderate "anchor" entry:
with every logit saturated all gradients are ~0 and there is nothing to measure.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from scratchnade import functional as F
from scratchnade.gradcheck import assert_grads_close, numerical_grad

H = 1e-4          # finite-difference step (see module docstring)
TOL = 1e-7        # relative error accepted for a correct backward
EXTREME = 1e4     # "infinite" logits

moderate = st.floats(-20, 20, allow_nan=False)
logit = st.one_of(st.sampled_from([-EXTREME, EXTREME]), moderate)
upstream = st.tuples(st.floats(0.1, 2.0), st.sampled_from([-1.0, 1.0])).map(lambda m_s: m_s[0] * m_s[1])
small_shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5)
slow = settings(max_examples=25, deadline=None)


def draw_logits(data, shape, elements=logit, anchor=st.floats(-2, 2), label="x"):
    """Float64 logits of `shape` (extremes included) whose first entry is moderate."""
    x = data.draw(hnp.arrays(np.float64, shape, elements=elements), label=label)
    x.flat[0] = data.draw(anchor, label=f"{label} anchor")
    return x


def assert_backward(f, x, analytic):
    """Centred differences of scalar f() w.r.t. x agree with `analytic` to TOL relative to the
    gradient's scale, or, where the gradient itself is tiny, to within the differences' own
    error (~1e-9 |f| at H = 1e-4: round-off eps |f| / H plus truncation H^2 |f'''| / 6).
    Example: a constant upstream gradient into log_softmax, whose true gradient is exactly 0.
    """
    numerical = numerical_grad(f, x, h=H)
    assert_grads_close(analytic, numerical, rtol=TOL, atol=1e-9 * max(1.0, abs(float(f()))))


# ----------------------------------------------------------------------------- pointwise

POINTWISE = {  # name: (forward, backward, backward takes the output y rather than x)
    "sigmoid": (F.sigmoid, F.sigmoid_backward, True),
    "softplus": (F.softplus, F.softplus_backward, False),
    "log_sigmoid": (F.log_sigmoid, F.log_sigmoid_backward, False),
}


@pytest.mark.parametrize("name", sorted(POINTWISE))
@slow
@given(data=st.data())
def test_pointwise_backward(name, data):
    fwd, bwd, takes_output = POINTWISE[name]
    shape = data.draw(small_shapes, label="shape")
    x = draw_logits(data, shape)
    dy = data.draw(hnp.arrays(np.float64, shape, elements=upstream), label="dy")
    analytic = bwd(dy, fwd(x) if takes_output else x)
    assert_backward(lambda: (dy * fwd(x)).sum(), x, analytic)


@slow
@given(data=st.data())
def test_relu_backward(data):
    shape = data.draw(small_shapes, label="shape")
    away_from_kink = logit.map(lambda v: v if abs(v) > 1e-2 else 0.5)   # relu has a kink at 0
    x = draw_logits(data, shape, elements=away_from_kink, anchor=st.floats(0.5, 2))
    dy = data.draw(hnp.arrays(np.float64, shape, elements=upstream), label="dy")
    assert_backward(lambda: (dy * F.relu(x)).sum(), x, F.relu_backward(dy, x))


# ----------------------------------------------------------------------------- softmax

@slow
@given(data=st.data(), axis=st.sampled_from([0, -1]))
def test_log_softmax_backward(data, axis):
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), label="shape")
    x = draw_logits(data, shape)
    dlogp = data.draw(hnp.arrays(np.float64, shape, elements=upstream), label="dlogp")
    logp = F.log_softmax(x, axis=axis)
    assert_backward(lambda: (dlogp * F.log_softmax(x, axis=axis)).sum(), x,
                    F.log_softmax_backward(dlogp, logp, axis=axis))


@slow
@given(data=st.data())
def test_logsumexp_gradient_is_softmax(data):
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), label="shape")
    x = draw_logits(data, shape)
    dz = data.draw(hnp.arrays(np.float64, shape[:1], elements=upstream), label="dz")
    softmax = np.exp(F.log_softmax(x))
    assert_backward(lambda: (dz * F.logsumexp(x)).sum(), x, dz[:, None] * softmax)


def draw_ce_inputs(data, with_mask):
    """Logits (N, V) with a moderate first row, targets (N,), mask (N,) with mask[0] = 1."""
    n = data.draw(st.integers(1, 5), label="N")
    v = data.draw(st.integers(2, 6), label="V")
    x = data.draw(hnp.arrays(np.float64, (n, v), elements=logit), label="logits")
    x[0] = data.draw(hnp.arrays(np.float64, v, elements=st.floats(-2, 2)), label="row 0")
    targets = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, v - 1)), label="targets")
    mask = None
    if with_mask:
        mask = data.draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])), label="mask")
        mask[0] = 1.0
    return x, targets, mask


@pytest.mark.parametrize("with_mask", [False, True])
@slow
@given(data=st.data(), dloss=st.floats(0.5, 2.0))
def test_softmax_cross_entropy_backward(with_mask, data, dloss):
    x, targets, mask = draw_ce_inputs(data, with_mask)
    _, cache = F.softmax_cross_entropy(x, targets, mask)
    analytic = F.softmax_cross_entropy_backward(dloss, cache)
    assert_backward(lambda: dloss * F.softmax_cross_entropy(x, targets, mask)[0], x, analytic)


@pytest.mark.parametrize("shape", [(300, 4000), (5, 7)])        # ~1 MB blocks several times over; one block
@pytest.mark.parametrize("with_mask", [False, True])
def test_the_column_sum_of_dlogits_is_the_bias_gradient(shape, with_mask):
    rng = np.random.default_rng(6)
    x, targets = rng.normal(0, 3, shape), rng.integers(0, shape[1], shape[0])
    mask = (rng.random(shape[0]) < 0.7).astype(float) if with_mask else None
    _, cache = F.softmax_cross_entropy(x, targets, mask)
    d, db = F.softmax_cross_entropy_backward(0.8, cache, column_sum=True)
    np.testing.assert_array_equal(d, F.softmax_cross_entropy_backward(0.8, cache))
    np.testing.assert_allclose(db, d.sum(axis=0), rtol=1e-12, atol=1e-15)
    if shape[1] < 10:      # it is d loss / d b for logits x + b, one bias shared by every row
        b = np.zeros(shape[1])
        assert_backward(lambda: 0.8 * F.softmax_cross_entropy(x + b, targets, mask)[0], b, db)


@pytest.mark.parametrize("shape", [(300, 4000), (5, 7)])        # several ~1 MB blocks; one block
def test_a_bias_added_in_the_softmax_pass_gives_the_same_bits(shape):
    rng = np.random.default_rng(7)
    x, targets = rng.normal(0, 3, shape), rng.integers(0, shape[1], shape[0])
    b = rng.normal(0, 2, shape[1])
    loss, cache = F.softmax_cross_entropy(x + b, targets)
    buf = x.copy()
    loss_b, cache_b = F.softmax_cross_entropy(buf, targets, inplace=True, bias=b)
    assert float(loss_b) == float(loss)                       # the target logit carries b[y] too
    np.testing.assert_array_equal(cache_b.probs, cache.probs)
    loss_c, cache_c = F.softmax_cross_entropy(x, targets, bias=b)       # not in place: x kept
    np.testing.assert_array_equal(cache_c.probs, cache.probs)
    assert not np.shares_memory(cache_c.probs, x)


@pytest.mark.parametrize("shape", [(300, 4000), (5, 7), (0, 4)])
@pytest.mark.parametrize("dloss", [1.0, 0.8])
def test_grad_factors_are_the_backward_without_a_pass(shape, dloss):
    """s D is dlogits and db its column sum, from the forward's column sums."""
    rng = np.random.default_rng(8)
    x, targets = rng.normal(0, 3, shape), rng.integers(0, shape[1], shape[0])
    _, cache = F.softmax_cross_entropy(x, targets)
    dx, db = F.softmax_cross_entropy_backward(dloss, cache, column_sum=True)
    _, cache_f = F.softmax_cross_entropy(x.copy(), targets, inplace=True, column_sum=True)
    np.testing.assert_allclose(cache_f.prob_sum, cache.probs.sum(axis=0), rtol=1e-12, atol=1e-12)
    D, s, db_f = F.softmax_cross_entropy_grad_factors(dloss, cache_f)
    assert D is cache_f.probs                                 # D written over the probabilities
    np.testing.assert_allclose(s * D, dx, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db_f, db, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(300, 4000), (5, 7)])
def test_logits_in_bits_give_the_same_softmax_and_loss_in_nats(shape):
    """bits=True: logits and bias scaled by log2(e) give softmax(f) (via exp2) and the loss in nats."""
    rng = np.random.default_rng(9)
    x, targets = rng.normal(0, 3, shape), rng.integers(0, shape[1], shape[0])
    x[0, 0] = 80.0                                            # a large logit: the shift must hold in bits too
    b = rng.normal(0, 2, shape[1])
    loss, cache = F.softmax_cross_entropy(x, targets, bias=b, column_sum=True)
    loss2, cache2 = F.softmax_cross_entropy(F.LOG2E * x, targets, bias=F.LOG2E * b, column_sum=True, bits=True)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-13)
    np.testing.assert_allclose(cache2.probs, cache.probs, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(cache2.prob_sum, cache.prob_sum, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(cache.probs.sum(axis=1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("N, K, V", [(300, 5, 4000), (7, 3, 6)])
@pytest.mark.parametrize("dloss", [1.0, 0.7])
def test_the_linear_softmax_layer_is_the_matmul_then_the_softmax_cross_entropy(N, K, V, dloss):
    """linear_softmax_cross_entropy (logits in bits, bias in the pass, factored backward) against the
    plain composition: f = h W^T + b, softmax_cross_entropy, dlogits -> (dlogits W, dlogits^T h, sum)."""
    rng = np.random.default_rng(10)
    h, W, b = rng.normal(0, 1, (N, K)), rng.normal(0, 1, (V, K)), rng.normal(0, 1, V)
    y = rng.integers(0, V, N)
    loss, cache = F.softmax_cross_entropy(h @ W.T + b, y)
    df = F.softmax_cross_entropy_backward(dloss, cache)
    buf = np.empty((N, V))
    loss2, cache2 = F.linear_softmax_cross_entropy(h, W, b, y, out=buf)
    assert cache2.probs is buf
    assert float(loss2) == pytest.approx(float(loss), rel=1e-13)
    dW_buf = np.empty((V, K))
    dh, dW, db = F.linear_softmax_cross_entropy_backward(dloss, cache2, h, W, dW=dW_buf)
    assert dW is dW_buf
    np.testing.assert_allclose(dh, df @ W, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(dW, df.T @ h, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(db, df.sum(axis=0), rtol=1e-10, atol=1e-15)
    if V < 10:                                                # and the loss's own centred differences
        for a, g in ((h, dh), (W, dW), (b, db)):
            assert_backward(lambda: dloss * F.linear_softmax_cross_entropy(h, W, b, y)[0], a, g)


def test_grad_factors_and_bias_refuse_what_they_cannot_do():
    x, t = np.zeros((3, 4)), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="column_sum=True"):
        F.softmax_cross_entropy_grad_factors(1.0, F.softmax_cross_entropy(x, t)[1])
    with pytest.raises(ValueError, match=r"column_sum=True is for unmasked rows"):
        F.softmax_cross_entropy(x, t, mask=np.ones(3), column_sum=True)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(3,\)"):
        F.softmax_cross_entropy(x, t, bias=np.zeros(3))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_softmax_cross_entropy_inplace_matches(data):
    x, targets, mask = draw_ce_inputs(data, with_mask=True)
    loss, cache = F.softmax_cross_entropy(x, targets, mask)
    dx = F.softmax_cross_entropy_backward(1.0, cache)
    buf = x.copy()
    loss_ip, cache_ip = F.softmax_cross_entropy(buf, targets, mask, inplace=True)
    dx_ip = F.softmax_cross_entropy_backward(1.0, cache_ip, out=cache_ip.probs)
    assert dx_ip is buf                                       # no (N, V) temporary kept
    assert float(loss_ip) == float(loss)
    np.testing.assert_array_equal(dx_ip, dx)


def test_softmax_cross_entropy_values_and_masks():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -1.0, 0.5]])
    t = np.array([2, 0, 1])
    nll = -(x[np.arange(3), t] - np.log(np.exp(x).sum(axis=1)))           # direct formula
    loss, _ = F.softmax_cross_entropy(x, t)
    assert float(loss) == pytest.approx(nll.mean(), rel=1e-12)
    loss, _ = F.softmax_cross_entropy(x, t, mask=np.array([1.0, 0.0, 1.0]))
    assert float(loss) == pytest.approx((nll[0] + nll[2]) / 2, rel=1e-12)
    loss_b, _ = F.softmax_cross_entropy(x, t, mask=np.array([True, False, True]))
    assert float(loss_b) == float(loss)                                    # bool mask works too
    np.testing.assert_allclose(F.token_log_prob(x, t), -nll, rtol=1e-12)


def test_softmax_cross_entropy_rejects_bad_targets_and_shapes():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"id 4, out of range \[0, 4\)"):
        F.softmax_cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="id -1"):
        F.softmax_cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="integer"):
        F.softmax_cross_entropy(x, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(N, V\).*\(N,\)"):
        F.softmax_cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        F.softmax_cross_entropy(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match="mask must have shape"):
        F.softmax_cross_entropy(x, np.array([0, 1, 2]), mask=np.ones(2))


# ----------------------------------------------------------------------------- Bernoulli

@slow
@given(data=st.data())
def test_bernoulli_nll_backward(data):
    shape = data.draw(small_shapes, label="shape")
    a = draw_logits(data, shape, label="logits")
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])), label="x")
    dnll = data.draw(hnp.arrays(np.float64, shape, elements=upstream), label="dnll")
    assert_backward(lambda: (dnll * F.bernoulli_nll(a, x)).sum(), a, F.bernoulli_nll_backward(dnll, a, x))


def test_bernoulli_nll_values():
    a, x = np.array([0.0, 2.0, -3.0, EXTREME, -EXTREME]), np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-a[:3]))
    expected = -(x[:3] * np.log(p) + (1 - x[:3]) * np.log(1 - p))
    np.testing.assert_allclose(F.bernoulli_nll(a, x)[:3], expected, rtol=1e-12)
    np.testing.assert_array_equal(F.bernoulli_nll(a, x)[3:], [EXTREME, EXTREME])   # -log(~0) is finite
    with pytest.raises(ValueError, match="binary"):
        F.check_binary(np.array([0.0, 0.5]))


# ----------------------------------------------------------------------------- no inf / nan

def test_ops_stay_finite_at_extreme_logits():
    """Logits of +-1e4 (ties and all-extreme rows included): finite values and gradients.
    setup.cfg turns every overflow / invalid RuntimeWarning into a failure as well."""
    x = np.array([[EXTREME, -EXTREME, 0.0], [EXTREME, EXTREME, -EXTREME], [-EXTREME, -EXTREME, -EXTREME]])
    t = np.array([1, 2, 0])
    dy = np.ones_like(x)
    outputs = [F.sigmoid(x), F.softplus(x), F.log_sigmoid(x), F.logsumexp(x), F.log_softmax(x),
               F.token_log_prob(x, t), F.bernoulli_nll(x, (x > 0) * 1.0), F.bernoulli_nll(x, (x < 0) * 1.0)]
    outputs += [F.sigmoid_backward(dy, F.sigmoid(x)), F.softplus_backward(dy, x),
                F.log_sigmoid_backward(dy, x), F.log_softmax_backward(dy, F.log_softmax(x)),
                F.bernoulli_nll_backward(dy, x, (x < 0) * 1.0)]
    loss, cache = F.softmax_cross_entropy(x, t)
    outputs += [loss, F.softmax_cross_entropy_backward(1.0, cache)]
    for out in outputs:
        assert np.all(np.isfinite(out))
    assert float(loss) == pytest.approx((2 * EXTREME + (2 * EXTREME + np.log(2)) + np.log(3)) / 3)


# ----------------------------------------------------------------------------- embeddings

@slow
@given(data=st.data())
def test_embedding_backward_with_repeated_ids(data):
    V = data.draw(st.integers(1, 4), label="V")                 # few rows: ids repeat
    K = data.draw(st.integers(1, 3), label="K")
    ids_shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5), label="ids shape")
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, V - 1)), label="ids")
    E = data.draw(hnp.arrays(np.float64, (V, K), elements=st.floats(-3, 3)), label="E")
    dy = data.draw(hnp.arrays(np.float64, ids_shape + (K,), elements=upstream), label="dy")
    y = F.embedding(E, ids)
    assert y.shape == ids_shape + (K,)
    assert_backward(lambda: (dy * F.embedding(E, ids)).sum(), E, F.embedding_backward(dy, ids, V))


def test_embedding_backward_equals_loop_and_accumulates_into_out():
    rng = np.random.default_rng(0)
    ids = np.array([[3, 1, 3], [3, 0, 1]])                      # (T, B), id 3 three times, 2 never
    dy = rng.standard_normal((2, 3, 4))
    expected = np.zeros((5, 4))
    for t in range(2):
        for b in range(3):
            expected[ids[t, b]] += dy[t, b]                     # the loop it replaces
    np.testing.assert_allclose(F.embedding_backward(dy, ids, 5), expected, rtol=1e-14)
    out = np.ones((5, 4))
    assert F.embedding_backward(dy, ids, out=out) is out
    np.testing.assert_allclose(out, expected + 1.0, rtol=1e-14)  # added into, not overwritten
    outT = np.zeros((4, 5)).T                                    # a transposed view works too
    F.embedding_backward(dy, ids, out=outT)
    np.testing.assert_allclose(outT, expected, rtol=1e-14)


# ----------------------------------------------------------------------------- dropout

@slow
@given(data=st.data(), p=st.floats(0.05, 0.9))
def test_dropout_backward_with_fixed_mask(data, p):
    shape = data.draw(small_shapes, label="shape")
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)), label="x")
    dy = data.draw(hnp.arrays(np.float64, shape, elements=upstream), label="dy")
    mask = F.dropout_mask(shape, p, np.random.default_rng(data.draw(st.integers(0, 99))), x)
    assert set(np.unique(mask)) <= {0.0, 1.0 / (1.0 - p)}
    y, same = F.dropout(x, p, mask=mask)
    assert same is mask
    np.testing.assert_array_equal(y, x * mask)
    assert_backward(lambda: (dy * F.dropout(x, p, mask=mask)[0]).sum(), x, F.dropout_backward(dy, mask))


def test_dropout_is_reproducible_and_preserves_the_mean():
    x = np.ones((200, 500))
    for p in (0.1, 0.5, 0.8):
        y, mask = F.dropout(x, p, np.random.default_rng(1))
        y2, _ = F.dropout(x, p, np.random.default_rng(1))
        np.testing.assert_array_equal(y, y2)                       # same seed, same mask
        assert abs(y.mean() - 1.0) < 0.03                          # inverted dropout: E[y] = x
        assert abs((mask == 0).mean() - p) < 0.01                  # drop rate p
    y, mask = F.dropout(x, 0.0)
    assert y is x and mask is None and F.dropout_backward(x, None) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(x, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mask shape"):
        F.dropout(x, 0.5, mask=np.ones((2, 2)))
