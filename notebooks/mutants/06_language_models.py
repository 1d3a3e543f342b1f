"""Classic wrong answers to notebook 06's exercises: {function: [(description, code, message regex)]}."""

_REC = '''
hs[0] = W_init
for t in range(1, T + 1):
    hs[t] = sigmoid(c + hs[t - 1] @ W_h.T + W_x[:, x[t - 1]].T)
'''

MUTANTS = {
    "rnn_forward": [
        ("softmax without the max shift", _REC + '''
f = hs[:T] @ W_o.T + b
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).mean()
''', r"near \+1000 .*subtract the max"),
        ("f_t reads h_t", _REC + '''
f = hs[1:] @ W_o.T + b
f -= f.max(axis=-1, keepdims=True)
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).mean()
''', r"f_t reads h_\(t-1\), i\.e\. hs\[:T\]"),
        ("h_0 = 0", '''
hs[0] = 0.0
for t in range(1, T + 1):
    hs[t] = sigmoid(c + hs[t - 1] @ W_h.T + W_x[:, x[t - 1]].T)
f = hs[:T] @ W_o.T + b
f -= f.max(axis=-1, keepdims=True)
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).mean()
''', r"h_0 = W_init"),
        ("W_h h_{t-1} transposed", '''
hs[0] = W_init
for t in range(1, T + 1):
    hs[t] = sigmoid(c + hs[t - 1] @ W_h + W_x[:, x[t - 1]].T)
f = hs[:T] @ W_o.T + b
f -= f.max(axis=-1, keepdims=True)
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).mean()
''', r"recurrent term W_h h_\(t-1\)"),
        ("h_t reads the next token", '''
hs[0] = W_init
for t in range(1, T + 1):
    hs[t] = sigmoid(c + hs[t - 1] @ W_h.T + W_x[:, x[t % T]].T)
f = hs[:T] @ W_o.T + b
f -= f.max(axis=-1, keepdims=True)
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).mean()
''', r"with W_h = 0 your h_t differ"),
        ("mean per sequence, not per token", _REC + '''
f = hs[:T] @ W_o.T + b
f -= f.max(axis=-1, keepdims=True)
probs = np.exp(f)
probs /= probs.sum(axis=-1, keepdims=True)
loss = -np.log(np.take_along_axis(probs, x[..., None], -1)).sum() / B
''', r"times too large: the mean per token"),
    ],
    "rnn_backward": [
        ("fancy-index += instead of np.add.at", '''
df = probs.copy()
np.put_along_axis(df, x[..., None], np.take_along_axis(df, x[..., None], -1) - 1.0, -1)
df /= T * B
db = df.sum(axis=(0, 1))
dW_o = np.einsum("tbv,tbh->vh", df, hs[:T])
dh = df @ W_o
dW_h, dc, dW_x = np.zeros_like(W_h), np.zeros_like(params["c"]), np.zeros_like(params["W_x"])
for t in range(T - 1, 0, -1):
    da = dh[t] * hs[t] * (1 - hs[t])
    dh[t - 1] += da @ W_h
    dW_h += da.T @ hs[t - 1]
    dc += da.sum(axis=0)
    dW_x[:, x[t - 1]] += da.T
grads = {"W_init": dh[0].sum(axis=0), "W_h": dW_h, "W_x": dW_x, "c": dc, "W_o": dW_o, "b": db}
''', r"only in columns .*repeat within a time step.*np\.add\.at"),
        ("df = probs: the cache overwritten", '''
df = probs
np.put_along_axis(df, x[..., None], np.take_along_axis(df, x[..., None], -1) - 1.0, -1)
df /= T * B
db = df.sum(axis=(0, 1))
dW_o = np.einsum("tbv,tbh->vh", df, hs[:T])
dh = df @ W_o
dW_h, dc, dW_x = np.zeros_like(W_h), np.zeros_like(params["c"]), np.zeros_like(params["W_x"])
for t in range(T - 1, 0, -1):
    da = dh[t] * hs[t] * (1 - hs[t])
    dh[t - 1] += da @ W_h
    dW_h += da.T @ hs[t - 1]
    dc += da.sum(axis=0)
    np.add.at(dW_x.T, x[t - 1], da)
grads = {"W_init": dh[0].sum(axis=0), "W_h": dW_h, "W_x": dW_x, "c": dc, "W_o": dW_o, "b": db}
''', r"changed the cached probs"),
        ("the loop goes down to t = 0 (through h_0)", '''
df = probs.copy()
np.put_along_axis(df, x[..., None], np.take_along_axis(df, x[..., None], -1) - 1.0, -1)
df /= T * B
db = df.sum(axis=(0, 1))
dW_o = np.einsum("tbv,tbh->vh", df, hs[:T])
dh = np.concatenate([df @ W_o, np.zeros((1, B, W_h.shape[0]))])
dW_h, dc, dW_x = np.zeros_like(W_h), np.zeros_like(params["c"]), np.zeros_like(params["W_x"])
for t in range(T - 1, -1, -1):
    da = dh[t] * hs[t] * (1 - hs[t])
    if t > 0:
        dh[t - 1] += da @ W_h
        dW_h += da.T @ hs[t - 1]
        np.add.at(dW_x.T, x[t - 1], da)
    dc += da.sum(axis=0)
grads = {"W_init": dh[0].sum(axis=0), "W_h": dW_h, "W_x": dW_x, "c": dc, "W_o": dW_o, "b": db}
''', r"dc differs .*t = T-1 \.\. 1"),
        ("no 1/(T B)", '''
df = probs.copy()
np.put_along_axis(df, x[..., None], np.take_along_axis(df, x[..., None], -1) - 1.0, -1)
db = df.sum(axis=(0, 1))
dW_o = np.einsum("tbv,tbh->vh", df, hs[:T])
dh = df @ W_o
dW_h, dc, dW_x = np.zeros_like(W_h), np.zeros_like(params["c"]), np.zeros_like(params["W_x"])
for t in range(T - 1, 0, -1):
    da = dh[t] * hs[t] * (1 - hs[t])
    dh[t - 1] += da @ W_h
    dW_h += da.T @ hs[t - 1]
    dc += da.sum(axis=0)
    np.add.at(dW_x.T, x[t - 1], da)
grads = {"W_init": dh[0].sum(axis=0), "W_h": dW_h, "W_x": dW_x, "c": dc, "W_o": dW_o, "b": db}
''', r"T B = 24 times too large"),
        ("dW_init not summed over the batch", '''
df = probs.copy()
np.put_along_axis(df, x[..., None], np.take_along_axis(df, x[..., None], -1) - 1.0, -1)
df /= T * B
db = df.sum(axis=(0, 1))
dW_o = np.einsum("tbv,tbh->vh", df, hs[:T])
dh = df @ W_o
dW_h, dc, dW_x = np.zeros_like(W_h), np.zeros_like(params["c"]), np.zeros_like(params["W_x"])
for t in range(T - 1, 0, -1):
    da = dh[t] * hs[t] * (1 - hs[t])
    dh[t - 1] += da @ W_h
    dW_h += da.T @ hs[t - 1]
    dc += da.sum(axis=0)
    np.add.at(dW_x.T, x[t - 1], da)
grads = {"W_init": dh[0], "W_h": dW_h, "W_x": dW_x, "c": dc, "W_o": dW_o, "b": db}
''', r"dW_init should have the shape of W_init, \(5,\)"),
    ],
}
