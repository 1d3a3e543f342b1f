"""Finite-difference gradient checks (cs231n's element-wise check, Chainer's directional check).

A hand-written backward pass is only trusted once it agrees with centred differences:

    df/dx_i  ~=  (f(x + h e_i) - f(x - h e_i)) / (2 h)        error O(h^2)

Checks need float64: in float32 the round-off of f (~1e-7 |f|) divided by 2h swamps the
derivative, so every function here refuses other dtypes -- build the model with
``dtype=numpy.float64``.  Parameters are perturbed in place through their own indexing
(``x[i] = value``), so the arrays may live on any device; the comparison itself is done on
the host in float64 (:func:`scratchnade.backend.asnumpy`).  Every array is restored exactly.

Typical use::

    errors = check_model(model, batch)          # {name: relative error}
    print(format_table(errors))                 # < 1e-7 is right, > 1e-2 is a bug
"""
import numpy as np

from .backend import asnumpy, device_of, to_device

_TINY = 1e-30  # keeps 0 / 0 at 0 when both gradients are exactly zero


def rel_error(a, b, elementwise=False):
    """Relative error between two arrays (or scalars, on any device), as a Python float.

        rel_error(a, b) = max_i |a_i - b_i| / max( max_i (|a_i| + |b_i|), 1e-30 )

    i.e. the largest absolute difference measured against the scale of the whole array,
    so that round-off in entries whose gradient is ~0 does not read as a bug.
    ``elementwise=True`` gives cs231n's stricter per-entry form
    ``max_i |a_i - b_i| / max(|a_i| + |b_i|, 1e-30)``, which flags such entries.

    Shapes: a, b (...) with equal shapes -> float (0.0 for empty arrays; nan if either has nan).
    Rules of thumb in float64: < 1e-7 correct, > 1e-2 wrong.  When *every* entry is tiny
    (all ~1e-10, e.g. fully saturated units) the round-off of the numerical side dominates
    and no relative error is meaningful: look at max |a - b| instead.
    """
    a = np.asarray(asnumpy(a), dtype=np.float64)
    b = np.asarray(asnumpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):                  # inf - inf: report nan, do not warn
        diff = np.abs(a - b)                              # |a - b|
        scale = np.abs(a) + np.abs(b)                     # |a| + |b|
        if elementwise:
            return float(np.max(diff / np.maximum(scale, _TINY)))
        return float(diff.max() / max(scale.max(), _TINY))


def _require_float64(x, name="x"):
    """Raise ValueError unless array `x` is float64 (checks are meaningless in float32)."""
    dtype = getattr(x, "dtype", None)
    if dtype != np.float64:
        raise ValueError(
            f"gradient checks need float64 arrays, but {name} has dtype {dtype}: build the "
            f"model with dtype=numpy.float64 (or cast the parameters with .astype(numpy.float64))")


def numerical_partials(f, x, indices, h=1e-5):
    """Centred differences of scalar f() w.r.t. the entries `indices` of array `x`.

    f takes no argument and reads `x` (e.g. through a params dict); x is modified in
    place, one entry at a time, and restored exactly.

        g_k = (f(x + h e_{i_k}) - f(x - h e_{i_k})) / (2 h)

    The divisor is the step actually taken, fl(x_i + h) - fl(x_i - h), not 2h: for
    |x_i| ~ 1e4 the two differ by ~1e-7 relative, more than the error we look for.

    Shapes: x (...) float64 on any device, indices: list of K index tuples -> (K,) host float64.
    """
    _require_float64(x)
    g = np.empty(len(indices))
    for k, i in enumerate(indices):
        x_i = float(x[i])                                 # exact: x is float64
        x_plus, x_minus = x_i + h, x_i - h                # rounded as x itself will store them
        try:
            x[i] = x_plus
            f_plus = float(f())                           # f(x + h e_i)
            x[i] = x_minus
            f_minus = float(f())                          # f(x - h e_i)
        finally:
            x[i] = x_i                                    # restore
        g[k] = (f_plus - f_minus) / (x_plus - x_minus)    # centred difference over the step taken
    return g


def numerical_grad(f, x, h=1e-5):
    """df/dx by centred differences over every entry of `x` (cs231n's eval_numerical_gradient).

    Costs 2 * x.size calls of f.  x is modified in place and restored exactly.

    Shapes: x (...) float64 on any device -> (...) host NumPy float64.
    """
    indices = list(np.ndindex(*x.shape))
    return numerical_partials(f, x, indices, h).reshape(x.shape)


def _validate(params, grads):
    """Raise ValueError unless grads has exactly the keys of params, with equal shapes."""
    if set(params) != set(grads):
        raise ValueError(f"grads keys {sorted(grads)} do not match params keys {sorted(params)}")
    for name, p in params.items():
        _require_float64(p, f"parameter {name!r}")
        if tuple(grads[name].shape) != tuple(p.shape):
            raise ValueError(f"grads[{name!r}] has shape {grads[name].shape}, "
                             f"parameter has shape {p.shape}")


def _host_copy(grads):
    """Host float64 copies of the gradients, taken before f() can overwrite reused buffers."""
    return {k: np.array(asnumpy(g), dtype=np.float64) for k, g in grads.items()}


def _sample_indices(shape, max_elements, rng):
    """All index tuples of `shape`, or `max_elements` of them drawn without replacement."""
    size = int(np.prod(shape, dtype=np.int64))
    if max_elements is None or size <= max_elements:
        return list(np.ndindex(*shape))
    flat = np.sort(rng.choice(size, size=max_elements, replace=False))
    return list(zip(*np.unravel_index(flat, shape)))


def check_grads(loss_fn, params, grads, h=1e-5, max_elements=None, rng=None):
    """Element-wise check of every parameter's gradient: {name: rel_error(numerical, analytic)}.

    loss_fn() takes no argument and returns the scalar loss computed from the *current*
    arrays of `params` (which are perturbed in place and restored).  With `max_elements`
    only that many randomly chosen entries per parameter are checked (rng: a NumPy
    Generator or seed; default seed 0), for models too big for 2 * size loss calls.

    Shapes: params, grads: dict name -> (...) float64 arrays, same keys and shapes.
    """
    _validate(params, grads)
    rng = np.random.default_rng(0 if rng is None else rng)
    g_host = _host_copy(grads)
    errors = {}
    for name, p in params.items():
        idx = _sample_indices(p.shape, max_elements, rng)
        num = numerical_partials(loss_fn, p, idx, h)              # (K,) numerical
        ana = np.array([g_host[name][i] for i in idx])            # (K,) analytic
        errors[name] = rel_error(num, ana)
    return errors


def check_directional(f, params, grads, rng=None, h=1e-5, n_directions=3):
    """Chainer-style directional check, one parameter at a time: {name: relative error}.

    For each parameter P and each of `n_directions` random unit directions u (drawn on the
    host from `rng`, a NumPy Generator or seed, then moved to P's device), compare

        numerical:  (f(P + h u) - f(P - h u)) / (2 h)
        analytic:   <dP, u> = sum_i dP_i u_i

    Two calls of f per direction instead of two per entry.  The error reported for P is
    rel_error over its `n_directions` pairs.  Parameters are restored exactly.

    Shapes: params, grads: dict name -> (...) float64 arrays, same keys and shapes.
    """
    _validate(params, grads)
    rng = np.random.default_rng(0 if rng is None else rng)
    g_host = _host_copy(grads)
    errors = {}
    for name, p in params.items():
        p0, dev = p.copy(), device_of(p)                          # exact restore point
        p0_host = np.array(asnumpy(p0))
        num, ana = np.zeros(n_directions), np.zeros(n_directions)
        try:
            for k in range(n_directions):
                u = rng.standard_normal(p.shape)
                u /= max(np.linalg.norm(u), _TINY)                # unit direction
                p_plus, p_minus = p0_host + h * u, p0_host - h * u
                p[...] = to_device(p_plus, dev)                   # P + h u
                f_plus = float(f())
                p[...] = to_device(p_minus, dev)                  # P - h u
                f_minus = float(f())
                num[k] = (f_plus - f_minus) / (2.0 * h)           # directional derivative
                step = (p_plus - p_minus) / (2.0 * h)             # u, as rounded in P +- h u
                ana[k] = float(np.dot(g_host[name].ravel(), step.ravel()))   # <dP, u>
        finally:
            p[...] = p0                                           # restore
        errors[name] = rel_error(num, ana)
    return errors


def check_model(model, batch, h=1e-5, max_elements=None, rng=None, n_directions=None):
    """Check a model's hand-written gradients on one batch: {name: relative error}.

    Contract: ``model.params`` is a dict of float64 arrays and
    ``model.loss_and_grads(batch) -> (loss, grads)``.  Random draws the model makes per call
    from its own ``numpy.random.Generator`` attributes (a MADE's mask set, an order-agnostic
    NADE's orderings, dropout masks) are replayed: every call starts from the generators'
    states at entry, so each loss is the same function of the parameters.  With
    ``n_directions=None`` every entry (or `max_elements` random entries) of every parameter is
    checked (:func:`check_grads`); with an int, :func:`check_directional` with that many
    directions per parameter.
    """
    generators = {k: v for k, v in vars(model).items() if isinstance(v, np.random.Generator)}
    states = {k: g.bit_generator.state for k, g in generators.items()}

    def replayed():
        for k, g in generators.items():
            g.bit_generator.state = states[k]
        return model.loss_and_grads(batch)

    _, grads = replayed()
    grads = _host_copy(grads)               # the model may reuse its gradient buffers

    def loss_fn():
        return replayed()[0]

    if n_directions is None:
        return check_grads(loss_fn, model.params, grads, h, max_elements, rng)
    return check_directional(loss_fn, model.params, grads, rng, h, n_directions)


def assert_grads_close(actual, expected, rtol=1e-10, atol=0.0, what="gradient"):
    """Raise AssertionError unless two gradients (or dicts of them) agree.

    Each pair passes when rel_error(actual, expected) <= rtol (the array-scale relative error
    above) OR max |actual - expected| <= atol -- the second side is for gradients that are
    all ~0, where a relative error only measures round-off (e.g. finite differences of a
    saturated unit).  Dicts must have the same keys; the message names the first key that
    fails, with both errors.

    Shapes: actual, expected: arrays (any device) of equal shape, or dicts name -> array.
    """
    if isinstance(actual, dict) or isinstance(expected, dict):
        if not (isinstance(actual, dict) and isinstance(expected, dict)) or set(actual) != set(expected):
            raise AssertionError(f"{what}s have different keys: {sorted(actual)} vs {sorted(expected)}")
        for name in expected:
            assert_grads_close(actual[name], expected[name], rtol, atol, what=f"{what} {name!r}")
        return
    a = np.asarray(asnumpy(actual), dtype=np.float64)
    b = np.asarray(asnumpy(expected), dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected shape {b.shape}")
    err = rel_error(a, b)
    gap = float(np.max(np.abs(a - b))) if a.size else 0.0
    if not (err <= rtol or gap <= atol):                 # nan fails both
        raise AssertionError(f"{what}: relative error {err:.2e} > {rtol:.0e} "
                             f"(max |difference| {gap:.2e} > {atol:.0e})")


def format_table(errors, tol=1e-6):
    """A printable table of {name: relative error}, one row per parameter, ok = error <= tol.

        parameter | rel. error | ok
        ----------+------------+----
        W         |   3.10e-11 | yes
        b         |   5.00e-01 | NO
    """
    width = max([len("parameter")] + [len(str(k)) for k in errors])
    lines = [f"{'parameter':<{width}} | rel. error | ok",
             f"{'-' * width}-+------------+----"]
    for name, err in errors.items():
        ok = "yes" if err <= tol else "NO"                         # nan -> NO
        lines.append(f"{str(name):<{width}} | {err:>10.2e} | {ok}")
    return "\n".join(lines)
