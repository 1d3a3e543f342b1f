"""Classic wrong answers to notebook 08's exercises: {function: [(description, code, message regex)]}."""

_DRAWS = '''
m = [m0]
for _ in range(layers):
    lo = min(int(m[-1].min()), D - 1)
    m.append(rng.integers(lo, D, size=H))
'''
_MASKS = '''
masks = {f"M{l}": (m[l][:, None] >= m[l - 1][None, :]).astype(np.float64) for l in range(1, layers + 1)}
masks["MV"] = (m0[:, None] > m[layers][None, :]).astype(np.float64)
'''
_M0 = '''
m0 = np.empty(D, dtype=np.int64)
m0[order] = np.arange(1, D + 1)
'''

MUTANTS = {
    "build_masks": [
        (">= at the output: x_d reaches p(x_d)", _M0 + _DRAWS + '''
masks = {f"M{l}": (m[l][:, None] >= m[l - 1][None, :]).astype(np.float64) for l in range(1, layers + 1)}
masks["MV"] = (m0[:, None] >= m[layers][None, :]).astype(np.float64)
''', r"reads its own input .*MV must be strict"),
        ("> at the hidden layers", _M0 + _DRAWS + '''
masks = {f"M{l}": (m[l][:, None] > m[l - 1][None, :]).astype(np.float64) for l in range(1, layers + 1)}
masks["MV"] = (m0[:, None] > m[layers][None, :]).astype(np.float64)
''', r"M1 differs .*use >=, not >"),
        ("forgets the ordering", '''
m0 = np.arange(1, D + 1)
''' + _DRAWS + _MASKS, r"m_0 .*forgot the ordering"),
        ("m_0 = order + 1 (the inverse permutation)", '''
m0 = np.asarray(order) + 1
''' + _DRAWS + _MASKS, r"m_0 .*inverse permutation"),
        ("hidden numbers always drawn from 1", _M0 + '''
m = [m0]
for _ in range(layers):
    m.append(rng.integers(1, D, size=H))
''' + _MASKS, r"m_2 = .* differs from the package's draw .*lo = min of m_1"),
        ("hidden numbers drawn up to D (one too many)", _M0 + '''
m = [m0]
for _ in range(layers):
    lo = min(int(m[-1].min()), D - 1)
    m.append(rng.integers(lo, D + 1, size=H))
''' + _MASKS, r"m_1 = .* differs from the package's draw"),
        ("masks transposed: (inputs, units)", _M0 + _DRAWS + '''
masks = {f"M{l}": (m[l - 1][:, None] <= m[l][None, :]).astype(np.float64) for l in range(1, layers + 1)}
masks["MV"] = (m[layers][:, None] < m0[None, :]).astype(np.float64)
''', r"M1 should have shape \(H, D\) = \(5, 8\)"),
        ("sorts the caller's order in place", '''
m0 = np.empty(D, dtype=np.int64)
m0[order] = np.arange(1, D + 1)
order.sort()
''' + _DRAWS + _MASKS, r"changed its input order"),
    ],
    "mixture_log_prob": [
        ("mean of the log-probabilities (geometric mean)", '''
logp = log_probs.mean(axis=0)
''', r"geometric mean"),
        ("logsumexp without - log K", '''
top = log_probs.max(axis=0)
logp = top + np.log(np.exp(log_probs - top).sum(axis=0))
''', r"log K = 1\.6094 too large"),
        ("naive log(mean(exp)): underflows near -1000", '''
logp = np.log(np.mean(np.exp(log_probs), axis=0))
''', r"near -1000 .*underflows"),
        ("one max over the whole array", '''
top = log_probs.max()
logp = top + np.log(np.exp(log_probs - top).sum(axis=0)) - np.log(K)
''', r"-3 and -1500 .*its own max"),
        ("reduces over the wrong axis", '''
top = log_probs.max(axis=1, keepdims=True)
logp = (top + np.log(np.exp(log_probs - top).sum(axis=1, keepdims=True)) - np.log(K))[:, 0]
''', r"shape \(N,\) = \(7,\)"),
        ("subtracts the max in place", '''
top = log_probs.max(axis=0)
log_probs -= top
logp = top + np.log(np.exp(log_probs).sum(axis=0)) - np.log(K)
''', r"changed its input"),
        ("the best member alone", '''
logp = log_probs.max(axis=0)
''', r"best member alone"),
    ],
    "ensemble_log_prob": [
        ("per-pixel average of the members' conditionals (pytorch-made's 79.3)", '''
pbar = sum(model.conditionals(x, member=k) for k in range(K)) / K
logp = np.log(np.where(x > 0.5, pbar, 1.0 - pbar)).sum(axis=1)
''', r"K = 3: your ensemble's probabilities sum to 0\.\d+ .*per-pixel average .*not a likelihood"),
        ("mean of the members' log-probabilities (geometric mean)", '''
logp = np.mean([model.log_prob(x, member=k) for k in range(K)], axis=0)
''', r"sum to 0\.\d+ .*geometric mean"),
        ("logsumexp without - log K", '''
logp = logsumexp(np.stack([model.log_prob(x, member=k) for k in range(K)]), axis=0)
''', r"sum to 3\.0+ .*subtract log K"),
        ("naive log(mean(exp)): underflows near -1000", '''
logp = np.log(np.mean(np.exp(np.stack([model.log_prob(x, member=k) for k in range(K)])), axis=0))
''', r"shifted by \+1000 .*underflows"),
        ("only member 0", '''
logp = model.log_prob(x, member=0)
''', r"K = 3: log p_ens\(x\) is below the members' mean .*Jensen"),
        ("the product of the members (sum of log-probabilities)", '''
logp = np.sum([model.log_prob(x, member=k) for k in range(K)], axis=0)
''', r"K = 3: your ensemble's probabilities sum to 0\.\d+ .*the mixture \(1/K\) sum_k p_k\(x\) of normalised members sums to 1"),
    ],
}
