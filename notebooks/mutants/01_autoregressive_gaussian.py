"""Classic wrong answers to notebook 01's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "ar1_log_prob": [
        ("no start term", '''
mean = mu + rho * (x[:, :-1] - mu)
return gauss_logpdf(x[:, 1:], mean, sigma**2).sum(axis=1)
''', r"start term .*missing"),
        ("start term with the conditional variance", '''
start = gauss_logpdf(x[:, 0], mu, sigma**2)
mean = mu + rho * (x[:, :-1] - mu)
return start + gauss_logpdf(x[:, 1:], mean, sigma**2).sum(axis=1)
''', r"start term .*conditional variance sigma\^2"),
        ("conditional mean rho x_{t-1}, mu forgotten", '''
start = gauss_logpdf(x[:, 0], mu, sigma**2 / (1 - rho**2))
return start + gauss_logpdf(x[:, 1:], rho * x[:, :-1], sigma**2).sum(axis=1)
''', r"term log p\(x_2 \| x_1\).*not rho x_\{t-1\}"),
        ("sums the conditional terms over the whole batch", '''
start = gauss_logpdf(x[:, 0], mu, sigma**2 / (1 - rho**2))
mean = mu + rho * (x[:, :-1] - mu)
return start + gauss_logpdf(x[:, 1:], mean, sigma**2).sum()
''', r"term log p\(x_2 \| x_1\).*within the row"),
        ("centres x in place", '''
x -= mu
start = gauss_logpdf(x[:, 0], 0.0, sigma**2 / (1 - rho**2))
return start + gauss_logpdf(x[:, 1:], rho * x[:, :-1], sigma**2).sum(axis=1)
''', r"changed its input x"),
    ],
    "ols_fit": [
        ("mu = c", '''
y = x[:, 1:].reshape(-1)
X = np.stack([np.ones_like(y), x[:, :-1].reshape(-1)], axis=1)
(c, rho), *_ = np.linalg.lstsq(X, y, rcond=None)
e = y - X @ np.array([c, rho])
return float(rho), float(c), float(np.sqrt(np.mean(e**2)))
''', r"mu: .*intercept c"),
        ("sigma returned as a variance", '''
y = x[:, 1:].reshape(-1)
X = np.stack([np.ones_like(y), x[:, :-1].reshape(-1)], axis=1)
(c, rho), *_ = np.linalg.lstsq(X, y, rcond=None)
e = y - X @ np.array([c, rho])
return float(rho), float(c / (1 - rho)), float(np.mean(e**2))
''', r"sigma: .*variance"),
        ("no intercept column", '''
y, xp = x[:, 1:].reshape(-1), x[:, :-1].reshape(-1)
rho = xp @ y / (xp @ xp)
e = y - rho * xp
return float(rho), float(np.mean(x)), float(np.sqrt(np.mean(e**2)))
''', r"rho: .*without an intercept"),
        ("unbiased variance (N - 2)", '''
y = x[:, 1:].reshape(-1)
X = np.stack([np.ones_like(y), x[:, :-1].reshape(-1)], axis=1)
(c, rho), *_ = np.linalg.lstsq(X, y, rcond=None)
e = y - X @ np.array([c, rho])
return float(rho), float(c / (1 - rho)), float(np.sqrt(np.sum(e**2) / (y.size - 2)))
''', r"sigma: .*divides .* by N"),
        ("pairs x_t with x_{t-1} across rows (transposed flattening)", '''
y = x[:, 1:].T.reshape(-1)
X = np.stack([np.ones_like(y), x[:, :-1].reshape(-1)], axis=1)
(c, rho), *_ = np.linalg.lstsq(X, y, rcond=None)
e = y - X @ np.array([c, rho])
return float(rho), float(c / (1 - rho)), float(np.sqrt(np.mean(e**2)))
''', r"rho: .*pair each x_t"),
    ],
}
