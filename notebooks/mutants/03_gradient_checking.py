"""Classic wrong answers to notebook 03's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "my_numerical_grad": [
        ("x not restored", '''
for i in np.ndindex(*x.shape):
    old = x[i]
    x[i] = old + h
    f_plus = f()
    x[i] = old - h
    f_minus = f()
    grad[i] = (f_plus - f_minus) / (2 * h)
''', r"did not restore x exactly .*put every x_i back"),
        ("x restored inexactly by arithmetic", '''
for i in np.ndindex(*x.shape):
    x[i] += h
    f_plus = f()
    x[i] -= 2 * h
    f_minus = f()
    x[i] += h
    grad[i] = (f_plus - f_minus) / (2 * h)
''', r"did not restore x exactly .*not x in floating point"),
        ("one-sided difference", '''
f0 = f()
for i in np.ndindex(*x.shape):
    old = x[i]
    x[i] = old + h
    grad[i] = (f() - f0) / h
    x[i] = old
''', r"O\(h\) error: the one-sided"),
        ("divides by h, not 2h", '''
for i in np.ndindex(*x.shape):
    old = x[i]
    x[i] = old + h
    f_plus = f()
    x[i] = old - h
    f_minus = f()
    x[i] = old
    grad[i] = (f_plus - f_minus) / h
''', r"twice the gradient: .*2h"),
        ("perturbs a copy of x", '''
xc = x.copy()
for i in np.ndindex(*x.shape):
    old = xc[i]
    xc[i] = old + h
    f_plus = f()
    xc[i] = old - h
    f_minus = f()
    xc[i] = old
    grad[i] = (f_plus - f_minus) / (2 * h)
''', r"f never changed: perturb the entries of x itself"),
        ("loops over rows only (range(len(x)))", '''
for i in range(len(x)):
    old = x[i].copy()
    x[i] = old + h
    f_plus = f()
    x[i] = old - h
    f_minus = f()
    x[i] = old
    grad[i] = (f_plus - f_minus) / (2 * h)
''', r"every index of a 2-D x"),
    ],
    "tiny_nade_backward_fixed": [
        ("the planted bug left in", '''
B = x.shape[0]
dl = (1 / (1 + np.exp(-l)) - x) / B
dh = dl[:, :, None] * params["V"]
dA = dh * h * (1 - h)
dW = np.einsum("bth,ts,bs->hs", dA, np.tri(*m.shape), x)
return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
''', r"dW still collects dA_t x_t"),
        ("the mask transposed", '''
B = x.shape[0]
dl = (1 / (1 + np.exp(-l)) - x) / B
dh = dl[:, :, None] * params["V"]
dA = dh * h * (1 - h)
dW = np.einsum("bth,ts,bs->hs", dA, m.T, x)
return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
''', r"dW differs from scratchnade.models.nade.backward"),
        ("no 1/B", '''
dl = 1 / (1 + np.exp(-l)) - x
dh = dl[:, :, None] * params["V"]
dA = dh * h * (1 - h)
dW = np.einsum("bth,ts,bs->hs", dA, m, x)
return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
''', r"B = 10 times too large"),
        ("overwrites the cached logits with dl", '''
B = x.shape[0]
dl = l
dl[:] = (1 / (1 + np.exp(-l)) - x) / B
dh = dl[:, :, None] * params["V"]
dA = dh * h * (1 - h)
dW = np.einsum("bth,ts,bs->hs", dA, m, x)
return {"W": dW, "c": dA.sum(axis=(0, 1)), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
''', r"changed its cache \(l\)"),
        ("dc summed over the batch only", '''
B = x.shape[0]
dl = (1 / (1 + np.exp(-l)) - x) / B
dh = dl[:, :, None] * params["V"]
dA = dh * h * (1 - h)
dW = np.einsum("bth,ts,bs->hs", dA, m, x)
return {"W": dW, "c": dA.sum(axis=0), "V": np.einsum("bt,bth->th", dl, h), "b": dl.sum(axis=0)}
''', r"dc should have the shape of c, \(4,\)"),
    ],
}
