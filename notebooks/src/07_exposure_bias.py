# %% [markdown]
# # 7. Exposure bias
#
# An autoregressive model learns $\hat p(x_t \mid x_{<t})$ from **real** prefixes (teacher forcing), then generates by
# iterating $\hat x_t \sim \hat p(\cdot \mid \hat x_{<t})$ on its **own** samples. "The data we condition on to predict has
# the wrong distribution!" (lecture, last slide). Errors compound along the sequence.
#
# We look at it three ways: the exact case of the AR(1) model, where the compounding has a closed form; per-position
# statistics of samples of a character-level RNN against a fixed reference model; and one remedy, **scheduled
# sampling** (Bengio et al., 2015), which during training feeds the model its own draws with probability
# $1 - \epsilon_i$ at training step $i$.

# %%
%matplotlib inline
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets
from scratchnade import sampling
from scratchnade.data import MissingDataError, load_shakespeare_char, window_batches
from scratchnade.data.synthetic import markov_source
from scratchnade.models import LinearGaussianAR, RecurrentNADE
from scratchnade.ngram import NGramModel
from scratchnade.optim import Adam
from scratchnade.plots import k_step_errors, position_curves, position_nll_curves, teacher_forcing_schedules
from scratchnade.train import fit

FAST = os.environ.get("SCRATCHNADE_FAST", "0") not in ("", "0")

# %% [markdown]
# ## The exact case: AR(1) fed its own predictions
#
# With $z_t = x_t - \mu$ and $z_t = \rho z_{t-1} + \sigma \varepsilon_t$, the one-step (teacher-forced) error is $\sigma^2$. The
# $k$-step forecast $\hat z_{s+k} = \rho^k z_s$ feeds on its own predictions, and its error
# $z_{s+k} - \hat z_{s+k} = \sigma \sum_{j<k} \rho^j \varepsilon_{s+k-j}$ has variance
#
# $$\mathbb{E}\big[(z_{s+k} - \hat z_{s+k})^2\big] = \sigma^2 \sum_{j=0}^{k-1} \rho^{2j} = \sigma^2 \frac{1-\rho^{2k}}{1-\rho^2},$$
#
# growing from $\sigma^2$ to the stationary variance $\gamma_0 = \sigma^2/(1-\rho^2)$.
#
# ## Exercise 1
#
# Write `k_step_error(rho, sigma, max_k)` returning that variance for $k = 1, \dots, $ `max_k` as an array.

# %%
def k_step_error(rho, sigma, max_k):
    """sigma^2 (1 - rho^(2k)) / (1 - rho^2) for k = 1..max_k.  -> (max_k,)"""
    # BEGIN SOLUTION the geometric sum, vectorised over k
    k = np.arange(1, max_k + 1)
    return sigma**2 * (1 - rho ** (2 * k)) / (1 - rho**2)
    # END SOLUTION


print(np.round(k_step_error(0.9, 1.0, 10), 3))

# %% [markdown]
# **Check** against `sampling.ar_k_step_error_closed_form`, then measure it on data.

# %%
# Probes: k = 1 alone (the one-step error is sigma^2), sigma = 2 (sigma^2 is not sigma), a negative rho (rho^(2k) is
# not rho^k), then the whole curve.
mine = k_step_error(0.9, 0.5, 30)
assert np.shape(mine) == (30,), f"expected one value per k = 1..30, shape (30,), got shape {np.shape(mine)}"
one = np.asarray(k_step_error(-0.6, 2.0, 1))
assert np.shape(one) == (1,), f"max_k = 1 should give shape (1,), got {np.shape(one)}"
if np.isclose(one[0], 0.0) or np.isclose(one[0], 2.0):
    hint = "it is 0: that is k = 0; k runs 1..max_k" if np.isclose(one[0], 0.0) else "that is sigma, not sigma^2"
    raise AssertionError(f"k = 1 with sigma = 2 gives {one[0]:.4g}, should be sigma^2 = 4: {hint}")
for rho_c in (-0.6, 0.9):
    got, ref_c = np.asarray(k_step_error(rho_c, 2.0, 12)), sampling.ar_k_step_error_closed_form(np.array([rho_c]), 2.0, 12)
    if not np.allclose(got, ref_c):
        k = int(np.argmax(~np.isclose(got, ref_c))) + 1
        raise AssertionError(f"with rho = {rho_c}, k = {k} gives {got[k - 1]:.4g}, should be {ref_c[k - 1]:.4g}: "
                             "sigma^2 (1 - rho^(2k)) / (1 - rho^2), the variance of sigma sum_(j<k) rho^j eps")
ref = sampling.ar_k_step_error_closed_form(np.array([0.9]), 0.5, 30)
assert np.allclose(mine, ref), "differs from sampling.ar_k_step_error_closed_form"
print("k_step_error matches the closed form")

truth = LinearGaussianAR(rho=[0.9], mu=1.0, sigma=0.5, dtype=np.float64)
x = truth.sample(50 if FAST else 500, 200, seed=0)
model = LinearGaussianAR.fit_closed_form(x, p=1, dtype=np.float64)
result = sampling.ar_k_step_error(model, x, max_k=30, seed=0)
rho_hat, sigma_hat = float(model.params["rho"][0]), float(np.exp(model.params["log_sigma"]))
k_step_errors(result, k_step_error(rho_hat, sigma_hat, 30), title="AR(1), rho = 0.9: teacher forced vs free running")

# %% [markdown]
# ## Exposure bias in text
#
# A character-level recurrent NADE trained with teacher forcing on tiny-shakespeare (or, without the data, on a
# random Markov chain). We sample from it and score every position with a **fixed reference**, a trigram model
# fitted on the training text, which does not share the network's mistakes. Under exposure bias the reference NLL
# of the samples climbs above its NLL of real text as the position grows, while the model's own teacher-forced
# NLL stays flat. Fast mode uses a small, briefly trained model, so its curves are noisy and its gap is not the
# point; the full mode trains the model for real.

# %%
try:
    corpus = load_shakespeare_char()
    train_ids, valid_ids, V, vocab = corpus.train, corpus.valid, corpus.vocab_size, corpus.vocab
except MissingDataError:
    chain = markov_source(V=16, n_tokens=120_000, seed=0)
    train_ids, valid_ids, V, vocab = chain.ids[:100_000], chain.ids[100_000:], 16, None
n_train, H, epochs, length, n = (200_000, 64, 1, 96, 64) if FAST else (None, 128, 3, 256, 256)
train_ids = train_ids[:n_train]
reference = NGramModel(order=3).fit(train_ids, V, valid=valid_ids)


def train_rnn(**ss):
    rnn = RecurrentNADE(V, H=H, seed=0, **ss)
    fit(rnn, lambda e: window_batches(train_ids, 64, 32, rng=e), None, Adam(lr=1e-2 if FAST else 3e-3, clip=1.0),
        epochs=epochs, progress=False)
    return rnn


tf_rnn = train_rnn()
if vocab is not None:
    for line in sampling.sample_text(tf_rnn, vocab, 2, 120, prompt_text="ROMEO:", seed=0, temperature=0.8):
        print(repr(line))

# %%
tf_pos = sampling.position_nll(tf_rnn, reference, valid_ids, length, n=n, seed=0)
position_nll_curves(tf_pos, smooth=8, reference="trigram", title="teacher-forced RNN: NLL by position")

# %% [markdown]
# Drift of the samples' bigram statistics from the data's, and repetition (distinct bigrams), by position. A finite
# sample drifts a little even from real text, so the real windows are drawn too.

# %%
drift = {"samples": sampling.drift_by_position(tf_pos.samples, train_ids, V, order=2, window=16),
         "real text": (sampling.drift_by_position(tf_pos.real, train_ids, V, order=2, window=16), "--")}
display(position_curves(drift, "total variation to the data's bigrams"))
distinct = {"samples": sampling.distinct_n_by_position(tf_pos.samples, n=2, window=16),
            "real text": (sampling.distinct_n_by_position(tf_pos.real, n=2, window=16), "--")}
position_curves(distinct, "distinct bigrams within a bin")

# %% [markdown]
# ## Scheduled sampling
#
# At training step $i$ each input token is the real $x_t$ with probability $\epsilon_i$, else the model's own draw
# $\hat w_t \sim \text{softmax}(f_t)$; the target stays the real token. $\epsilon_i$ decays from 1, e.g. as the inverse sigmoid
# $\epsilon_i = k / (k + e^{i/k})$.
#
# ## Exercise 2
#
# Write `inverse_sigmoid(i, k)` for an array of steps `i`.

# %%
def inverse_sigmoid(i, k):
    """eps_i = k / (k + exp(i / k)).  i: array of steps."""
    # BEGIN SOLUTION one line; for huge i / k, exp overflows to inf and eps correctly goes to 0
    return k / (k + np.exp(np.asarray(i, dtype=float) / k))
    # END SOLUTION


print(np.round(inverse_sigmoid(np.array([0, 1000, 3000, 5000]), 500.0), 4))

# %% [markdown]
# **Check** against `sampling.teacher_forcing_schedule`.

# %%
# Probes: step 0 (eps_0 = k / (k + 1)), the whole schedule, then huge steps (exp overflows: eps must be 0, not nan).
steps = np.arange(0, 6000, 50)
got = np.asarray(inverse_sigmoid(steps, 500.0))
assert np.shape(got) == steps.shape, f"one eps per step: expected shape {steps.shape}, got {np.shape(got)}"
first = float(np.asarray(inverse_sigmoid(np.array([0]), 20.0))[0])
if not np.isclose(first, 20 / 21):
    hint = ("it is 1/2: the numerator and the 1 are k, eps_0 = k / (k + 1)" if np.isclose(first, 0.5)
            else "eps_0 = k / (k + e^0) = k / (k + 1)")
    raise AssertionError(f"inverse_sigmoid(0, k = 20) = {first:.4g}, should be 20/21 = {20 / 21:.4g}: {hint}")
ref = sampling.teacher_forcing_schedule("inverse-sigmoid", steps, k=500.0)
if not np.allclose(got, ref):
    hint = ("it grows with i: the exponent is +i / k" if got[-1] > got[0]
            else "eps_i = k / (k + exp(i / k))")
    raise AssertionError(f"differs from teacher_forcing_schedule('inverse-sigmoid', ...) at step {steps[np.argmax(~np.isclose(got, ref))]}: {hint}")
with np.errstate(over="ignore", invalid="ignore"):
    late = np.asarray(inverse_sigmoid(np.array([1e6, 1e9]), 20.0))
assert np.all(late == 0.0), f"for huge steps eps should be 0, got {late}: write k / (k + exp(i / k)), whose exp overflows to inf harmlessly"
print("inverse_sigmoid matches")
teacher_forcing_schedules(3000)

# %% [markdown]
# The same RNN trained with scheduled sampling (inverse sigmoid; $k$ chosen so that $\epsilon$ falls to one half by
# the end of training), and the two compared on the reference NLL of their samples against real text.
# Scheduled sampling is no guaranteed cure: its training objective is not a proper scoring rule (Huszár, 2015), the
# model's teacher-forced NLL on real text usually gets worse, and the reference NLL of its samples can go either way.
# Read the table before concluding.

# %%
n_steps = -(-train_ids.size // (64 * 32)) * epochs          # updates in the whole run
ss_k = float(n_steps)
for _ in range(50):                                          # k / (k + e^(N/k)) = 1/2  <=>  N = k ln k
    ss_k = n_steps / np.log(max(ss_k, np.e))
ss_rnn = train_rnn(scheduled_sampling="inverse-sigmoid", ss_k=ss_k)
ss_pos = sampling.position_nll(ss_rnn, reference, valid_ids, length, n=n, seed=0)
eps_end = sampling.teacher_forcing_schedule("inverse-sigmoid", ss_rnn.train_step, k=ss_k)
print(f"{ss_rnn.train_step} training steps; eps at the end of training: {eps_end:.2f}")
print(f"{'':22s} {'model NLL real':>15s} {'ref NLL samples':>16s} {'ref NLL real':>13s}")
for name, r in (("teacher forcing", tf_pos), ("scheduled sampling", ss_pos)):
    print(f"{name:22s} {r.model_data.mean():>15.3f} {r.reference_samples.mean():>16.3f} {r.reference_data.mean():>13.3f}")
