"""Classic wrong answers to notebook 04's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "nade_forward": [
        ("h_t sees x_t: the running sum updated before use", '''
a = np.broadcast_to(c, (B, H)).copy()
for t in range(D):
    a += x[:, t:t + 1] * W[:, t]
    hs[t] = sigmoid(a)
    logits[:, t] = b[t] + hs[t] @ V[t]
loss = (np.logaddexp(0.0, logits) - x * logits).sum() / B
''', r"h_1 \(hs\[0\]\) differs.*already contains W\[:, t\] x_t"),
        ("c forgotten: a_1 = 0", '''
a = np.zeros((B, H))
for t in range(D):
    hs[t] = sigmoid(a)
    logits[:, t] = b[t] + hs[t] @ V[t]
    a += x[:, t:t + 1] * W[:, t]
loss = (np.logaddexp(0.0, logits) - x * logits).sum() / B
''', r"h_1 \(hs\[0\]\) differs.*a_1 = c"),
        ("unstable softplus log(1 + exp(l))", '''
a = np.broadcast_to(c, (B, H)).copy()
for t in range(D):
    hs[t] = sigmoid(a)
    logits[:, t] = b[t] + hs[t] @ V[t]
    a += x[:, t:t + 1] * W[:, t]
loss = (np.log(1 + np.exp(logits)) - x * logits).sum() / B
''', r"near \+1000 .*np\.logaddexp"),
        ("the sum over the batch, not the mean", '''
a = np.broadcast_to(c, (B, H)).copy()
for t in range(D):
    hs[t] = sigmoid(a)
    logits[:, t] = b[t] + hs[t] @ V[t]
    a += x[:, t:t + 1] * W[:, t]
loss = (np.logaddexp(0.0, logits) - x * logits).sum()
''', r"times too large: the mean over the batch"),
        ("the logit reads a column of V", '''
a = np.broadcast_to(c, (B, H)).copy()
for t in range(D):
    hs[t] = sigmoid(a)
    logits[:, t] = b[t] + hs[t] @ V.T[:, t % V.shape[1]]
    a += x[:, t:t + 1] * W[:, t]
loss = (np.logaddexp(0.0, logits) - x * logits).sum() / B
''', r"the logit of position \d differs"),
    ],
    "nade_backward": [
        ("dW[:, t] includes da_t (off by one)", '''
dl = (sigmoid(logits) - x) / B
da_later = np.zeros_like(hs[0])
for t in range(D - 1, -1, -1):
    dV[t] = dl[:, t] @ hs[t]
    da_later += dl[:, t:t + 1] * V[t] * hs[t] * (1 - hs[t])
    dW[:, t] = x[:, t] @ da_later
db, dc = dl.sum(axis=0), da_later.sum(axis=0)
''', r"dW\[:, t\] also collects da_t"),
        ("no sigmoid derivative", '''
dl = (sigmoid(logits) - x) / B
da_later = np.zeros_like(hs[0])
for t in range(D - 1, -1, -1):
    dV[t] = dl[:, t] @ hs[t]
    dW[:, t] = x[:, t] @ da_later
    da_later += dl[:, t:t + 1] * V[t]
db, dc = dl.sum(axis=0), da_later.sum(axis=0)
''', r"dc misses the sigmoid's derivative"),
        ("no 1/B", '''
dl = sigmoid(logits) - x
da_later = np.zeros_like(hs[0])
for t in range(D - 1, -1, -1):
    dV[t] = dl[:, t] @ hs[t]
    dW[:, t] = x[:, t] @ da_later
    da_later += dl[:, t:t + 1] * V[t] * hs[t] * (1 - hs[t])
db, dc = dl.sum(axis=0), da_later.sum(axis=0)
''', r"B = 9 times too large"),
        ("h(1 - h) computed in the cached hs", '''
dl = (sigmoid(logits) - x) / B
da_later = np.zeros_like(hs[0])
for t in range(D - 1, -1, -1):
    dV[t] = dl[:, t] @ hs[t]
    dW[:, t] = x[:, t] @ da_later
    g = hs[t]
    g *= 1 - g
    da_later += dl[:, t:t + 1] * V[t] * g
db, dc = dl.sum(axis=0), da_later.sum(axis=0)
''', r"nade_backward changed hs"),
        ("db not summed over the batch", '''
dl = (sigmoid(logits) - x) / B
da_later = np.zeros_like(hs[0])
for t in range(D - 1, -1, -1):
    dV[t] = dl[:, t] @ hs[t]
    dW[:, t] = x[:, t] @ da_later
    da_later += dl[:, t:t + 1] * V[t] * hs[t] * (1 - hs[t])
db, dc = dl, da_later.sum(axis=0)
''', r"db should have the shape of b, \(7,\)"),
    ],
}
