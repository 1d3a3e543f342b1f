"""Classic wrong answers to notebook 02's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "masked_forward": [
        ("the mask includes the diagonal", '''
m = np.tri(D, D)
a = b + x @ (W * m).T
loss = (np.logaddexp(0.0, a) - x * a).sum() / B
''', r"a_0 reads x_0 .*strictly lower"),
        ("the masked matrix is not transposed", '''
m = np.tri(D, D, -1)
a = b + x @ (W * m)
loss = (np.logaddexp(0.0, a) - x * a).sum() / B
''', r"W\[1, 0\] should act on a_1"),
        ("the upper triangle: the future leaks", '''
m = np.tri(D, D, -1).T
a = b + x @ (W * m).T
loss = (np.logaddexp(0.0, a) - x * a).sum() / B
''', r"the future leaks"),
        ("unstable softplus log(1 + exp(a))", '''
m = np.tri(D, D, -1)
a = b + x @ (W * m).T
loss = (np.log(1 + np.exp(a)) - x * a).sum() / B
''', r"near \+1000 .*np\.logaddexp"),
        ("log(sigmoid(a)): underflows", '''
m = np.tri(D, D, -1)
a = b + x @ (W * m).T
q = 1 / (1 + np.exp(-a))
loss = -(x * np.log(q) + (1 - x) * np.log(1 - q)).sum() / B
''', r"near [+-]1000 .*np\.logaddexp"),
        ("the sum over the batch, not the mean", '''
m = np.tri(D, D, -1)
a = b + x @ (W * m).T
loss = (np.logaddexp(0.0, a) - x * a).sum()
''', r"times too large: the mean over the batch"),
        ("masks W in place", '''
W *= np.tri(D, D, -1)
a = b + x @ W.T
loss = (np.logaddexp(0.0, a) - x * a).sum() / B
''', r"changed its input W"),
    ],
    "masked_backward": [
        ("dW not masked", '''
da = (sigmoid(a) - x) / B
db = da.sum(axis=0)
dW = da.T @ x
''', r"zero on and above the diagonal.*diagonal"),
        ("dW transposed", '''
da = (sigmoid(a) - x) / B
db = da.sum(axis=0)
dW = (x.T @ da) * np.tri(D, D, -1)
''', r"dW is transposed"),
        ("no 1/B", '''
da = sigmoid(a) - x
db = da.sum(axis=0)
dW = (da.T @ x) * np.tri(D, D, -1)
''', r"db is B = 12 times too large"),
        ("x - sigmoid(a): the sign", '''
da = (x - sigmoid(a)) / B
db = da.sum(axis=0)
dW = (da.T @ x) * np.tri(D, D, -1)
''', r"db has the wrong sign"),
        ("reuses a's memory for da", '''
a -= x
a[:] = (sigmoid(a + x) - x) / B
db = a.sum(axis=0)
dW = (a.T @ x) * np.tri(D, D, -1)
''', r"changed its input a"),
        ("db not summed over the batch", '''
da = (sigmoid(a) - x) / B
db = da
dW = (da.T @ x) * np.tri(D, D, -1)
''', r"db should have shape \(D,\) = \(5,\)"),
    ],
}
