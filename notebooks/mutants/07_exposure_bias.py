"""Classic wrong answers to notebook 07's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "k_step_error": [
        ("k starts at 0", '''
k = np.arange(max_k)
return sigma**2 * (1 - rho ** (2 * k)) / (1 - rho**2)
''', r"k = 1 .*k = 0; k runs 1\.\.max_k"),
        ("sigma, not sigma^2", '''
k = np.arange(1, max_k + 1)
return sigma * (1 - rho ** (2 * k)) / (1 - rho**2)
''', r"that is sigma, not sigma\^2"),
        ("rho^k, not rho^(2k)", '''
k = np.arange(1, max_k + 1)
return sigma**2 * (1 - rho**k) / (1 - rho**2)
''', r"with rho = -0\.6, k = 1 gives"),
        ("operator precedence: rho**2*k", '''
k = np.arange(1, max_k + 1)
return sigma**2 * (1 - rho**2 * k) / (1 - rho**2)
''', r"with rho = -0\.6, k = 2 gives"),
    ],
    "inverse_sigmoid": [
        ("the sign of the exponent", '''
return k / (k + np.exp(-np.asarray(i, dtype=float) / k))
''', r"grows with i"),
        ("1 / (1 + exp(i/k)): k forgotten", '''
return 1 / (1 + np.exp(np.asarray(i, dtype=float) / k))
''', r"it is 1/2"),
        ("1 - e / (k + e): nan for huge steps", '''
e = np.exp(np.asarray(i, dtype=float) / k)
return 1 - e / (k + e)
''', r"for huge steps eps should be 0"),
        ("i * k instead of i / k", '''
return k / (k + np.exp(np.asarray(i, dtype=float) * k / 1e6))
''', r"differs from teacher_forcing_schedule"),
    ],
}
