"""Classic wrong answers to notebook 05's exercises: {function: [(description, code, message regex)]}."""

MUTANTS = {
    "my_nesterov_update": [
        ("v rebound, not updated in place", '''
v = momentum * v + dw
w -= lr * (dw + momentum * v)
''', r"velocity differs.*v did not change"),
        ("classical momentum", '''
v *= momentum
v += dw
w -= lr * v
''', r"weights differ.*classical momentum"),
        ("w rebound, not updated in place", '''
v *= momentum
v += dw
w = w - lr * (dw + momentum * v)
''', r"weights differ.*w did not change"),
        ("the step before the velocity update (classical momentum again)", '''
w -= lr * (dw + momentum * v)
v *= momentum
v += dw
''', r"weights differ.*classical momentum"),
        ("lr inside the velocity (another NAG form)", '''
v *= momentum
v -= lr * dw
w += momentum * v - lr * dw
''', r"velocity differs.*v <- momentum \* v \+ dw"),
        ("reuses the caller's gradient as a buffer", '''
v *= momentum
v += dw
dw += momentum * v
w -= lr * dw
''', r"changed the gradient dw"),
    ],
    "my_adam_update": [
        ("no bias correction", '''
m *= beta1
m += (1 - beta1) * dw
v *= beta2
v += (1 - beta2) * dw * dw
w -= lr * m / (np.sqrt(v) + eps)
''', r"w differs .*no bias correction"),
        ("eps inside the square root", '''
m *= beta1
m += (1 - beta1) * dw
v *= beta2
v += (1 - beta2) * dw * dw
w -= lr * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t) + eps)
''', r"eps is inside the square root"),
        ("bias correction applied to m and v in place", '''
m *= beta1
m += (1 - beta1) * dw
v *= beta2
v += (1 - beta2) * dw * dw
m /= 1 - beta1**t
v /= 1 - beta2**t
w -= lr * m / (np.sqrt(v) + eps)
''', r"m was bias-corrected in place"),
        ("the second moment of dw, not dw^2", '''
m *= beta1
m += (1 - beta1) * dw
v *= beta2
v += (1 - beta2) * np.abs(dw)
w -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
''', r"v differs.*dw\^2"),
        ("moments rebound, not in place", '''
m = beta1 * m + (1 - beta1) * dw
v = beta2 * v + (1 - beta2) * dw * dw
w -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
''', r"m did not change"),
        ("bias correction with t - 1", '''
m *= beta1
m += (1 - beta1) * dw
v *= beta2
v += (1 - beta2) * dw * dw
w -= lr * (m / (1 - beta1**(t - 1))) / (np.sqrt(v / (1 - beta2**(t - 1))) + eps)
''', r"uses t - 1"),
    ],
}
