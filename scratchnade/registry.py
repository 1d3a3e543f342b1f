"""What the command line can train: one table row per model and per data set.

A model row says where the class lives, which kind of data it models, and which run-config
keys become which constructor arguments::

    name             class            data     run-config key -> constructor argument
    nade             NADE             binary   hidden -> H
    fvsbn            FVSBN            binary   form
    gaussian-ar      LinearGaussianAR real     order -> p, start
    softmax-fvsbn    SoftmaxFVSBN     tokens   order -> p, encoding, embed_dim, dropout
    sequence-nade    SequenceNADE     tokens   order -> p, hidden -> H, tied, dropout
    deep-nade        DeepNADE         tokens   order -> p, hidden -> H, layers, dropout
    rnn              RecurrentNADE    tokens   hidden -> H, tied, carry_state, dropout,
                                               scheduled_sampling, ss_k, ss_c, ss_min
    made             MADE             binary   hidden -> H, layers, activation, direct, masks,
                                               shuffle_order
    orderless-nade   OrderlessNADE    binary   hidden -> H, layers, activation
    transformer      Transformer      tokens   context, d_model, layers, heads, tied, dropout
                                               (the windows, order p, default to context)

Sizes fixed by the data (D, vocab_size) come from the data set; seed, dtype and device are
passed to every class that takes them.  A row whose module is missing (or fails to import)
is skipped: the command line works for the models that exist.

Data kinds and their batches: binary (B, D) in {0, 1}; real (B, T) floats; tokens: 1-D id
arrays cut into time-major (p, B) windows.  Without ``--data`` a model trains on the
synthetic source of its kind, whose exact entropy is known.
"""
import importlib
import inspect
from dataclasses import dataclass, field

import numpy as np

from .data import synthetic
from .data.text import Vocabulary

KINDS = ("binary", "real", "tokens")
UNITS = {"binary": "example", "real": "sequence", "tokens": "token"}
KIND_DEFAULTS = {  # run-config defaults by data kind (a model row's defaults come after these)
    "binary": {"batch_size": 100, "eval_batch_size": 500},
    "real": {"batch_size": 50, "eval_batch_size": 500},
    "tokens": {"batch_size": 32, "eval_batch_size": 64},
}


class ModelUnavailable(ImportError):
    """A registered model whose module is not there (or does not import)."""


class DataError(ValueError):
    """A data set that cannot be loaded as asked (a bad file, a checksum mismatch, a bad size)."""


# ----------------------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelSpec:
    """One model the command line knows (see the module docstring)."""
    name: str
    module: str                     # scratchnade.models.<module>
    cls: str                        # class name in that module
    kind: str                       # data kind: "binary", "real" or "tokens"
    options: dict                   # run-config key -> constructor keyword
    defaults: dict = field(default_factory=dict)    # run-config defaults for this model
    variants: tuple = ({},)         # constructor keywords checked by `gradcheck`

    def load(self):
        """The model class; ModelUnavailable if its module is missing or broken."""
        try:
            return getattr(importlib.import_module(f"scratchnade.models.{self.module}"), self.cls)
        except (ImportError, AttributeError) as err:
            raise ModelUnavailable(f"model {self.name!r} ({self.cls}) is not available: {err}") from err


MODELS = {s.name: s for s in (
    ModelSpec("nade", "nade", "NADE", "binary", {"hidden": "H", "init_scale": "init_scale"}),
    ModelSpec("fvsbn", "fvsbn", "FVSBN", "binary", {"form": "form", "init_scale": "init_scale"},
              variants=({"form": "matrix"}, {"form": "vector"})),
    ModelSpec("gaussian-ar", "gaussian_ar", "LinearGaussianAR", "real", {"order": "p", "start": "start"},
              defaults={"order": 1, "lr": 0.01},
              variants=({"start": "stationary"}, {"start": "conditional"})),
    ModelSpec("softmax-fvsbn", "softmax_fvsbn", "SoftmaxFVSBN", "tokens",
              {"order": "p", "encoding": "encoding", "embed_dim": "embed_dim", "dropout": "dropout",
               "init_scale": "init_scale"}, defaults={"order": 8},
              variants=({"encoding": "onehot"}, {"encoding": "embedding"})),
    ModelSpec("sequence-nade", "sequence_nade", "SequenceNADE", "tokens",
              {"order": "p", "hidden": "H", "tied": "tied", "dropout": "dropout", "init_scale": "init_scale"},
              defaults={"order": 8}, variants=({"tied": False}, {"tied": True})),
    ModelSpec("deep-nade", "deep_nade", "DeepNADE", "tokens",
              {"order": "p", "hidden": "H", "layers": "layers", "dropout": "dropout",
               "init_scale": "init_scale"},
              defaults={"order": 8}, variants=({"layers": 1}, {"layers": 3})),
    ModelSpec("rnn", "recurrent_nade", "RecurrentNADE", "tokens",
              {"hidden": "H", "tied": "tied", "carry_state": "carry_state", "dropout": "dropout",
               "init_scale": "init_scale", "scheduled_sampling": "scheduled_sampling", "ss_k": "ss_k",
               "ss_c": "ss_c", "ss_min": "ss_min"},
              defaults={"order": 35}, variants=({"tied": False}, {"tied": True})),
    ModelSpec("made", "made", "MADE", "binary",
              {"hidden": "H", "layers": "layers", "activation": "activation", "direct": "direct", "masks": "masks",
               "shuffle_order": "shuffle_order", "init_scale": "init_scale"},
              variants=({"layers": 1}, {"layers": 2, "direct": True, "masks": 3, "shuffle_order": True},
                        {"activation": "sigmoid"})),
    ModelSpec("orderless-nade", "orderless_nade", "OrderlessNADE", "binary",
              {"hidden": "H", "layers": "layers", "activation": "activation", "init_scale": "init_scale"},
              variants=({"layers": 1}, {"layers": 2}, {"activation": "sigmoid"})),
    ModelSpec("transformer", "transformer", "Transformer", "tokens",
              {"context": "context", "d_model": "d_model", "layers": "layers", "heads": "heads", "tied": "tied",
               "dropout": "dropout", "init_scale": "init_scale"},
              variants=({"tied": False, "layers": 1}, {"tied": True, "layers": 2, "heads": 1})),
)}
ALIASES = {"orderless": "orderless-nade", "order-agnostic-nade": "orderless-nade", "recurrent-nade": "rnn", "rnade": "rnn", "linear-gaussian-ar": "gaussian-ar", "ar": "gaussian-ar",
           "fvsbn-softmax": "softmax-fvsbn"}


def model_spec(name):
    """The row of model `name` (aliases allowed); ValueError listing the known names."""
    spec = MODELS.get(ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return spec


def model_defaults(spec):
    """{run-config key: the value the model uses when the option is not given} for row `spec`.

    The row's own defaults (order, lr) first, then the defaults of the class's constructor for
    the keys it maps (hidden -> H: 500 for NADE, ...).  A key whose constructor default is None
    is left out.  {} when the model's module does not import.
    """
    out = dict(spec.defaults)
    try:
        params = inspect.signature(spec.load().__init__).parameters
    except ModelUnavailable:
        return out
    for key, arg in spec.options.items():
        if key not in out and arg in params and params[arg].default not in (None, inspect.Parameter.empty):
            out[key] = params[arg].default
    return out


def defaults_by_model(key):
    """'500 for nade; 256 for sequence-nade, deep-nade, rnn': the per-model default of one option."""
    groups = {}
    for spec in MODELS.values():
        value = model_defaults(spec).get(key)
        if value is not None:
            text = f"{value:g}" if isinstance(value, float) else str(value)
            groups.setdefault(text, []).append(spec.name)
    return "; ".join(f"{text} for {', '.join(names)}" for text, names in groups.items())


def teacher_forcing_eps(cfg, step):
    """Scheduled sampling: the probability eps_i of feeding the real token at global training step i
    under run config `cfg` (None when the run uses no scheduled sampling).

    The epoch line and history can show eps_i of an epoch's last step, i = state.step - 1.
    """
    kind = cfg.get("scheduled_sampling")
    if kind is None:
        return None
    from .scheduled_sampling import teacher_forcing_schedule
    return teacher_forcing_schedule(kind, max(0, int(step)), cfg.get("ss_k"), cfg.get("ss_c"),
                                    cfg.get("ss_min") or 0.0)


def spec_of_class(class_name):
    """The row whose class is called `class_name` (as saved in a checkpoint), or None."""
    return next((s for s in MODELS.values() if s.cls == class_name), None)


def available_models():
    """Names of the models whose module imports."""
    names = []
    for spec in MODELS.values():
        try:
            spec.load()
        except ModelUnavailable:
            continue
        names.append(spec.name)
    return names


def _accepted(cls, kwargs):
    """The entries of `kwargs` that cls's constructor takes."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def build_model(spec, cfg, data, device=None):
    """A fresh model of row `spec` for `data`, its options taken from run config `cfg` (a dict).

    Options left at None keep the class's own default.  ValueError from the class (a bad
    size or option) is passed on.
    """
    cls = spec.load()
    kwargs = {arg: cfg[key] for key, arg in spec.options.items() if cfg.get(key) is not None}
    if spec.name == "softmax-fvsbn" and "encoding" not in kwargs and "embed_dim" in kwargs:
        kwargs["encoding"] = "embedding"                        # --embed-dim alone means embeddings
    if data.kind == "tokens":
        kwargs["vocab_size"] = len(data.vocab)
    elif data.kind == "binary":
        kwargs["D"] = data.dim
    common = {"seed": cfg.get("seed"), "dtype": cfg.get("dtype"), "device": device}
    return cls(**kwargs, **_accepted(cls, {k: v for k, v in common.items() if v is not None}))


def model_from_config(class_name, config, device=None):
    """Rebuild a model from a checkpoint's class name and ``model.config`` (then load params)."""
    spec = spec_of_class(class_name)
    if spec is None:
        raise ValueError(f"unknown model class {class_name!r}")
    cls = spec.load()
    kwargs = _accepted(cls, dict(config))
    if device is not None and "device" in inspect.signature(cls.__init__).parameters:
        kwargs["device"] = device
    return spec, cls(**kwargs)


# ----------------------------------------------------------------------------- data

@dataclass
class Data:
    """One data set, on the host: splits, and what the command line needs to know about it.

    binary: (N, D) uint8;  real: (N, T) float64;  tokens: (T,) int64 ids with a vocabulary.
    ``entropy`` is the true entropy per unit of a synthetic source (None for real data);
    ``truth`` the MarkovSource of a synthetic token stream (its entropy depends on the layout).
    """
    name: str
    kind: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: Vocabulary = None
    level: str = None               # "word" or "char" (tokens only)
    entropy: float = None
    truth: object = None
    image_shape: tuple = None       # (h, w) of one binary image, for sample grids

    @property
    def unit(self):
        return UNITS[self.kind]

    @property
    def dim(self):
        """D of binary vectors, T of real sequences."""
        return int(self.train.shape[1])

    def split(self, name):
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {name!r}")
        return getattr(self, name)

    def true_entropy(self, split="test", mode="chunked", p=None, batch_size=None):
        """True NLL per unit of the source for this evaluation (None for real data).

        A Markov stream scored in windows of p (chunked) has ceil(N / p) tokens without
        history; a sliding window (p >= 2) only the first token; `batch_size` streams with
        a carried state (mode "stream") one per stream, over the B * (N // B) tokens scored.
        """
        if self.truth is None or self.kind != "tokens":
            return self.entropy
        N = int(self.split(split).size)
        if mode == "stream":
            return self.truth.expected_nll(N - N % batch_size, batch_size)
        n_starts = N if p is None or p < 2 else (-(-N // p) if mode == "chunked" else 1)
        return self.truth.expected_nll(N, n_starts)

    def decode(self, ids):
        """Text of token ids: words joined by spaces, characters by nothing."""
        return self.vocab.decode(ids, sep=" " if self.level == "word" else "")

    def encode_text(self, text):
        """Ids of a prompt string (split on spaces at word level, characters at char level)."""
        return self.vocab.encode(text.split() if self.level == "word" else text)


def _eval_size(n_train):
    return max(500, n_train // 5)


SYNTHETIC_N_TRAIN = {"synthetic-fvsbn": 10000, "synthetic-markov": 100000, "synthetic-ar": 2000}


def _synthetic_fvsbn(cfg):
    n = cfg.get("n_train") or SYNTHETIC_N_TRAIN["synthetic-fvsbn"]
    src = synthetic.fvsbn_source(D=cfg.get("dim") or 10, n_train=n, n_valid=_eval_size(n),
                                 n_test=_eval_size(n), seed=cfg.get("data_seed", 0))
    side = int(round(src.D ** 0.5))
    return Data("synthetic-fvsbn", "binary", src.train, src.valid, src.test, entropy=src.entropy,
                image_shape=(side, side) if side * side == src.D else (1, src.D))


def _synthetic_markov(cfg):
    n, V = cfg.get("n_train") or SYNTHETIC_N_TRAIN["synthetic-markov"], cfg.get("vocab") or 16
    m = _eval_size(n)
    src = synthetic.markov_source(V, n + 2 * m, seed=cfg.get("data_seed", 0))
    letters = V <= 26                                               # readable samples: "abcab..."
    vocab = Vocabulary([chr(ord("a") + i) for i in range(V)] if letters else [f"s{i}" for i in range(V)])
    ids = src.ids
    return Data("synthetic-markov", "tokens", ids[:n], ids[n:n + m], ids[n + m:], vocab=vocab,
                level="char" if letters else "word", entropy=src.entropy, truth=src)


def _synthetic_ar(cfg):
    n = cfg.get("n_train") or SYNTHETIC_N_TRAIN["synthetic-ar"]
    m = max(2000, n // 5)                                   # per-sequence NLLs vary a lot: a big test set
    src = synthetic.gaussian_ar_source(T=cfg.get("seq_len") or 50, n_train=n, n_valid=m, n_test=m,
                                       seed=cfg.get("data_seed", 0))
    return Data("synthetic-ar", "real", src.train, src.valid, src.test, entropy=src.entropy)


def _binarized_mnist(cfg):
    from .data.binary import load_binarized_mnist
    d = load_binarized_mnist(cfg.get("data_dir"), download=bool(cfg.get("download")))
    return Data("binarized-mnist", "binary", d["train"], d["valid"], d["test"], image_shape=(28, 28))


def _corpus(name, corpus):
    def load(cfg):
        from .data.text import load_corpus
        c = load_corpus(corpus, cfg.get("data_dir"), download=bool(cfg.get("download")))
        return Data(name, "tokens", c.train, c.valid, c.test, vocab=c.vocab, level=c.level)
    return load


@dataclass(frozen=True)
class DataSpec:
    name: str
    kind: str
    load: object                    # run config -> Data
    synthetic: bool = False


DATASETS = {s.name: s for s in (
    DataSpec("synthetic-fvsbn", "binary", _synthetic_fvsbn, True),
    DataSpec("synthetic-markov", "tokens", _synthetic_markov, True),
    DataSpec("synthetic-ar", "real", _synthetic_ar, True),
    DataSpec("binarized-mnist", "binary", _binarized_mnist),
    DataSpec("wikitext-2", "tokens", _corpus("wikitext-2", "wikitext-2")),
    DataSpec("ptb", "tokens", _corpus("ptb", "ptb")),
    DataSpec("shakespeare-char", "tokens", _corpus("shakespeare-char", "tinyshakespeare")),
)}
DATA_ALIASES = {"mnist": "binarized-mnist", "wikitext2": "wikitext-2", "shakespeare": "shakespeare-char",
                "tinyshakespeare": "shakespeare-char", "markov": "synthetic-markov",
                "synthetic-tokens": "synthetic-markov"}
DEFAULT_DATA = {"binary": "synthetic-fvsbn", "tokens": "synthetic-markov", "real": "synthetic-ar"}


def data_spec(name, kind=None):
    """The row of data set `name` (None: the synthetic source of `kind`); ValueError if unknown."""
    if name is None or name == "synthetic":
        name = DEFAULT_DATA[kind]
    spec = DATASETS.get(DATA_ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    return spec


def load_data(cfg):
    """The Data of run config `cfg` (its "data" key must name a row of DATASETS).

    A ValueError of a loader (an unreadable or corrupt file, a checksum mismatch, a size the
    source refuses) comes back as DataError naming the data set; MissingDataError and other
    OSErrors pass through.
    """
    spec = data_spec(cfg["data"])
    try:
        return spec.load(cfg)
    except DataError:
        raise
    except ValueError as err:
        raise DataError(f"cannot load {spec.name}: {err}") from err


# ----------------------------------------------------------------------------- gradient-check cases

def gradcheck_case(spec, variant, rng, device=None):
    """A float64 model of row `spec` at small random sizes, with random parameters, and a batch.

    Sizes: D in 3..6 bits, V in 3..6 tokens, p in 2..4, H in 2..4, B in 2..4; a transformer:
    context = T in 2..5, 2 heads (unless the variant says) of 2 or 3 features, d_model >= 4.
    Dropout stays off, so the loss is deterministic.  Returns (model, batch) for gradcheck.check_model.
    """
    cls = spec.load()
    B, H = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    kw = {"H": H, "seed": int(rng.integers(1 << 31)), "dtype": np.float64, "device": device, **variant}
    if spec.kind == "binary":
        kw["D"] = D = int(rng.integers(3, 7))
        batch = (rng.random((B, D)) < 0.5).astype(np.float64)
    elif spec.kind == "tokens":
        V, p = int(rng.integers(3, 7)), int(rng.integers(2, 5))
        kw.update(vocab_size=V, p=p)
        if variant.get("encoding") == "embedding":
            kw["embed_dim"] = int(rng.integers(2, 5))
        params = inspect.signature(cls.__init__).parameters
        T = p if "p" in params else int(rng.integers(2, 6))
        if "d_model" in params:                                     # transformer: small, T positions
            heads = variant.get("heads", 2)
            d_model = max(4, heads * int(rng.integers(2, 4)))       # >= 4: at d = 3 the queries' gradients
            kw.update(context=T, heads=heads, d_model=d_model)      # are ~1e-5, near the check's round-off
        batch = rng.integers(0, V, size=(T, B))
    else:                                                           # AR(p): a stationary rho
        p = int(rng.integers(1, 4))
        kw.update(p=p, rho=rng.uniform(-0.6, 0.6, p) / p,                # sum |rho| < 0.6: stationary
                  mu=float(rng.normal()), sigma=float(rng.uniform(0.5, 2)))
        batch = kw["mu"] + rng.standard_normal((B, p + int(rng.integers(2, 6))))
    model = cls(**_accepted(cls, kw))
    if spec.kind != "real":                                         # off the zero biases (and ReLU kinks)
        model.load_state_dict({k: rng.normal(0.0, 0.5, size=v.shape) for k, v in model.params.items()})
    return model, batch
