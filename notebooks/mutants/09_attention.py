"""Classic wrong answers to notebook 09's exercises: {function: [(description, code, message regex)]}."""


def _forward(mask="s = s + np.triu(np.full((T, T), -np.inf), k=1)", scale="/ np.sqrt(dh)",
             shift="s = s - s.max(axis=-1, keepdims=True)", context='np.einsum("btr,rbi->tbi", p, v)'):
    """The solution of exercise 1 with one of its lines replaced."""
    return f'''
s = np.einsum("tbi,rbi->btr", q, k) {scale}
{mask}
{shift}
p = np.exp(s)
p = p / p.sum(axis=-1, keepdims=True)
c = {context}
'''


def _backward(dv='np.einsum("btr,tbi->rbi", p, dc)', ds="p * (dp - (p * dp).sum(axis=-1, keepdims=True))",
              scale="ds = ds / np.sqrt(dh)", dq='np.einsum("btr,rbi->tbi", ds, k)', dk='np.einsum("btr,tbi->rbi", ds, q)'):
    """The solution of exercise 2 with one of its lines replaced."""
    return f'''
dv = {dv}
dp = np.einsum("tbi,rbi->btr", dc, v)
ds = {ds}
{scale}
dq = {dq}
dk = {dk}
'''


MUTANTS = {
    "attention_forward": [
        ("no causal mask", _forward(mask=""), r"attends to the future"),
        ("the mask hides the diagonal too (r >= t)", _forward(mask="s = s + np.triu(np.full((T, T), -np.inf), k=0)"),
         r"must attend to itself"),
        ("the mask is off by one (r = t + 1 visible)", _forward(mask="s = s + np.triu(np.full((T, T), -np.inf), k=2)"),
         r"off by one"),
        ("softmax without the max shift", _forward(shift=""), r"near \+1000.*subtract the row max"),
        ("scores divided by d_h, not sqrt(d_h)", _forward(scale="/ dh"), r"divided by d_h = 4; divide by sqrt\(d_h\) = 2"),
        ("scores not scaled", _forward(scale=""), r"not scaled"),
        ("c sums over the queries (p transposed)", _forward(context='np.einsum("brt,rbi->tbi", p, v)'),
         r"attends to the future"),
        ("q scaled in place: the caller's q changes", '''
q /= np.sqrt(dh)
s = np.einsum("tbi,rbi->btr", q, k)
s = s + np.triu(np.full((T, T), -np.inf), k=1)
s = s - s.max(axis=-1, keepdims=True)
p = np.exp(s)
p = p / p.sum(axis=-1, keepdims=True)
c = np.einsum("btr,rbi->tbi", p, v)
''', r"changed its input q"),
    ],
    "attention_backward": [
        ("softmax backward without the subtraction term", _backward(ds="p * dp"), r"missing the - sum_r' p_\(t,r'\)"),
        ("dq and dk swapped", _backward(dq='np.einsum("btr,tbi->rbi", ds, q)', dk='np.einsum("btr,rbi->tbi", ds, k)'),
         r"dq and dk are swapped"),
        ("dv with p transposed", _backward(dv='np.einsum("brt,tbi->rbi", p, dc)'), r"p transposed"),
        ("no 1/sqrt(d_h)", _backward(scale=""), r"sqrt\(d_h\) = 2 times too large"),
        ("ds computed in the cache's p", '''
dv = np.einsum("btr,tbi->rbi", p, dc)
dp = np.einsum("tbi,rbi->btr", dc, v)
ds = p
ds *= dp - (p * dp).sum(axis=-1, keepdims=True)
ds = ds / np.sqrt(dh)
dq = np.einsum("btr,rbi->tbi", ds, k)
dk = np.einsum("btr,tbi->rbi", ds, q)
''', r"changed the cached p"),
    ],
}
