"""Text corpora: counts on the real data, the vocabulary, tokenisation, batching, perplexity."""
import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scratchnade.backend import asnumpy, device_of, get_xp, to_device
from scratchnade.data.download import ChecksumError, DataFileError, MissingDataError
from scratchnade.data import text as tx
from scratchnade.data.text import (EOS, UNK, Vocabulary, check_ids, chunk, load_ptb,
                                   load_shakespeare_char, load_wikitext2, sliding_windows,
                                   stream_batches, tokenize_words, window_batches)
from scratchnade.evaluate import perplexity

# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def wikitext(data_dir):
    t0 = time.perf_counter()
    corpus = load_wikitext2(data_dir)
    corpus.seconds = time.perf_counter() - t0
    return corpus


@pytest.fixture(scope="module")
def ptb(data_dir):
    return load_ptb(data_dir)


@pytest.fixture(scope="module")
def shakespeare(data_dir):
    return load_shakespeare_char(data_dir)


def test_wikitext2_counts_and_vocabulary(wikitext, data_dir):
    c = wikitext
    assert (c.name, c.level, c.vocab_size) == ("wikitext-2", "word", 33278)
    assert (c.train.size, c.valid.size, c.test.size) == (2088628, 217646, 245569)
    assert all(a.dtype == np.int64 and a.ndim == 1 for a in (c.train, c.valid, c.test))
    assert c.vocab.stoi[EOS] == 0 and c.train[0] == 0          # the first line is blank
    assert c.decode(c.train[1:6]) == "= Valkyria Chronicles III ="
    assert int((c.train == 0).sum()) == 36718                   # one <eos> per line
    assert int((c.train == c.vocab.unk_id).sum()) == 54625
    assert max(a.max() for a in (c.train, c.valid, c.test)) < c.vocab_size


def test_wikitext2_loads_fast(wikitext):
    assert wikitext.seconds < 30.0       # about 0.9 s on an idle 2-core machine: guards against a 30x regression


def test_ptb_counts(ptb):
    assert (ptb.train.size, ptb.valid.size, ptb.test.size) == (929589, 73760, 82430)
    assert ptb.vocab_size == 10000 and UNK in ptb.vocab
    assert int((ptb.test == ptb.vocab.unk_id).sum()) == 4794


def test_shakespeare_chars_and_split(shakespeare, data_dir):
    c = shakespeare
    assert (c.level, c.vocab_size) == ("char", 65) and UNK not in c.vocab
    assert c.vocab.itos[:2] == ["\n", " "]                      # sorted order
    assert (c.train.size, c.valid.size, c.test.size) == (1003854, 55769, 55771)
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == text
    assert c.decode(c.train[:14]) == "First Citizen:"


def test_load_corpus_by_name(data_dir):
    assert tx.load_corpus("shakespeare", data_dir).name == "tinyshakespeare"
    with pytest.raises(ValueError, match="unknown corpus"):
        tx.load_corpus("enwik8", data_dir)


def test_modified_file_fails_verification(data_dir, tmp_path):
    folder = tmp_path / "tinyshakespeare"
    folder.mkdir()
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    (folder / "input.txt").write_text(text.replace("Citizen", "Citoyen"), encoding="utf-8")
    with pytest.raises(ChecksumError, match="verify=False"):
        load_shakespeare_char(tmp_path)
    assert load_shakespeare_char(tmp_path, verify=False).decode(np.arange(3)) == "\n !"


def test_download_from_url_checks_sha(data_dir, tmp_path, monkeypatch):
    src = data_dir / "tinyshakespeare" / "input.txt"
    good = tx.Source("input.txt", src.as_uri(), tx.CORPORA["tinyshakespeare"][1]["all"].sha256)
    bad = tx.Source(good.filename, good.url, "0" * 64)
    monkeypatch.setitem(tx.CORPORA, "tinyshakespeare", ("char", {"all": bad}))
    with pytest.raises(ChecksumError):
        load_shakespeare_char(tmp_path, download=True, progress=False)
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "tinyshakespeare"])   # nothing half-written
    monkeypatch.setitem(tx.CORPORA, "tinyshakespeare", ("char", {"all": good}))
    c = load_shakespeare_char(tmp_path, download=True, progress=False)
    assert c.vocab_size == 65
    assert (tmp_path / "tinyshakespeare" / "input.txt").read_bytes() == src.read_bytes()


# ----------------------------------------------------------------------------- missing / bad files

def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_wikitext2(tmp_path)
    msg = str(err.value)
    assert "wiki.train.tokens" in msg and str(tmp_path / "wikitext-2") in msg
    assert "SCRATCHNADE_DATA" in msg and "download=True" in msg
    assert "raw.githubusercontent.com/pytorch/examples" in msg
    with pytest.raises(FileNotFoundError, match="ptb.train.txt"):   # MissingDataError is one
        load_ptb(tmp_path)


def _fake_ptb(folder, train=" a b c \n b c d \n", valid=" a z \n", test=" d \n"):
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text)


def test_env_variable_points_at_the_data(tmp_path, monkeypatch):
    _fake_ptb(tmp_path / "ptb")
    monkeypatch.setenv("SCRATCHNADE_DATA", str(tmp_path))
    c = load_ptb(verify=False)
    assert c.vocab.itos == ["a", "b", "c", EOS, "d", UNK]       # first occurrence, <unk> appended
    assert c.valid.tolist() == [0, 5, 3]                        # unseen 'z' -> <unk>
    assert c.decode(c.train) == "a b c <eos> b c d <eos>"


def test_empty_file_is_an_error(tmp_path):
    _fake_ptb(tmp_path / "ptb", test="")
    with pytest.raises(ValueError, match="empty"):
        load_ptb(tmp_path, verify=False)
    with pytest.raises(ValueError, match="test split has no tokens"):
        tx.make_corpus("x", "word", {"train": "a\n", "valid": "a\n", "test": ""})


def test_own_corpus_files(tmp_path):
    paths = []
    for name, text in (("tr", "ab\nba\n"), ("va", "ab\n"), ("te", "ac\n")):
        paths.append(tmp_path / name)
        paths[-1].write_text(text)
    c = tx.load_text_corpus(*paths, level="char")
    assert c.vocab.itos == ["\n", "a", "b", UNK]                 # 'c' unseen in train -> <unk> added
    assert c.test.tolist() == [1, 3, 0]
    with pytest.raises(FileNotFoundError):
        tx.load_text_corpus(tmp_path / "nope", *paths[1:])


@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("prefix", [b"ab\nba\n", b"ab cd\n" * 40_000])   # the bad byte in the first / a later read
def test_text_that_is_not_utf8_names_the_file_byte_and_line(tmp_path, level, prefix):
    good = [tmp_path / "tr.txt", tmp_path / "te.txt"]
    for path in good:
        path.write_bytes(b"ab\nba\n")
    bad = tmp_path / "va.txt"
    bad.write_bytes(prefix + "caf\u00e9\n".encode("latin-1"))        # a Latin-1 e-acute: 0xe9
    offset, line = len(prefix) + 3, prefix.count(b"\n") + 1
    with pytest.raises(DataFileError) as err:
        tx.load_text_corpus(good[0], bad, good[1], level=level)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert msg.startswith(f"{bad} is not UTF-8 text: byte {offset:,} (line {line}) is b'\\xe9'")


@pytest.mark.parametrize("load, folder, name", [
    (load_ptb, "ptb", "ptb.test.txt"),
    (load_wikitext2, "wikitext-2", "wiki.train.tokens"),
    (load_shakespeare_char, "tinyshakespeare", "input.txt"),
])
def test_corpus_files_that_are_not_utf8_name_the_file(tmp_path, load, folder, name):
    """The published files are sha256-checked first; a modified copy (verify=False) is decoded."""
    files = {"ptb": ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"],
             "wikitext-2": ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"],
             "tinyshakespeare": ["input.txt"]}[folder]
    (tmp_path / folder).mkdir()
    for f in files:
        (tmp_path / folder / f).write_bytes(b"a b c\n" * 50)
    (tmp_path / folder / name).write_bytes(b"a b\n\xff\xfe c\n")
    with pytest.raises(DataFileError, match=f"{name} is not UTF-8 text: byte 4 \\(line 2\\) is b'\\\\xff'"):
        load(tmp_path, verify=False)


# ----------------------------------------------------------------------------- tokenisation

def test_tokenize_words_every_line_gets_eos():
    assert tokenize_words(" a b \n \n c\n") == ["a", "b", EOS, EOS, "c", EOS]
    assert tokenize_words("a\r\nb") == ["a", EOS, "b", EOS]         # last line without newline
    assert tokenize_words("") == []
    assert tx.tokenize_chars("a\nb") == ["a", "\n", "b"]


# ----------------------------------------------------------------------------- vocabulary

def test_vocabulary_encode_decode_unk():
    v = Vocabulary.build("the cat sat on the mat".split())
    assert v.itos == ["the", "cat", "sat", "on", "mat", UNK] and len(v) == 6
    ids = v.encode("the dog sat".split())
    assert ids.dtype == np.int64 and ids.tolist() == [0, v.unk_id, 2]
    assert v.decode(ids) == ["the", UNK, "sat"] and v.decode(ids, sep=" ") == "the <unk> sat"
    assert v.decode(to_device(np.array([[1, 4]]), "cpu"), sep="|") == "cat|mat"
    assert v.encode([]).shape == (0,)


def test_vocabulary_without_unk_refuses_unseen_tokens():
    v = Vocabulary.build("hello", order="sorted", unk=False)
    assert v.itos == ["e", "h", "l", "o"] and v.unk_id is None
    assert v.encode("hole").tolist() == [1, 3, 2, 0]
    with pytest.raises(ValueError, match="'x' is not in the vocabulary"):
        v.encode("ox")
    with pytest.raises(ValueError, match="out of range"):
        v.decode([0, 4])
    with pytest.raises(ValueError, match="out of range"):
        v.decode([-1])
    with pytest.raises(ValueError, match="order"):
        Vocabulary.build("ab", order="random")


def test_vocabulary_save_load_and_list_round_trip(tmp_path):
    v = Vocabulary.build(["é", "a", EOS, "\n", "a"])
    path = v.save(tmp_path / "sub" / "vocab.json")
    w = Vocabulary.load(path)
    assert w == v and w.itos == ["é", "a", EOS, "\n", UNK]
    assert Vocabulary.from_list(json.loads(json.dumps(v.to_list()))) == v
    assert list(tmp_path.rglob("*.part")) == []


@pytest.mark.parametrize("content, match", [
    (b"{not json", "not a valid vocabulary"),
    (b'{"format": "other", "tokens": ["a"]}', "not a scratchnade.Vocabulary"),
    (b'{"format": "scratchnade.Vocabulary", "tokens": "ab"}', "list of str"),
    (b'{"format": "scratchnade.Vocabulary", "tokens": ["a", "a"]}', "more than once"),
    (b'{"format": "scratchnade.Vocabulary", "tokens": []}', "at least one"),
    (b'{"format": "scratchnade.Vocabulary", "tokens": ["a", 3]}', "strings"),
    (b"\xff\xfe", "not a valid vocabulary"),
])
def test_corrupt_vocabulary_file(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        Vocabulary.load(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- batching

@pytest.mark.parametrize("bad, match", [
    (np.array([], dtype=np.int64), "empty"),
    (np.zeros((2, 3), dtype=np.int64), "1-D"),
    (np.array([0.0, 1.0]), "integers"),
    (np.array([0, -1, 2]), "token id -1 is out of range"),
])
def test_batching_rejects_bad_ids(bad, match):
    for make in (lambda: chunk(bad, 1), lambda: window_batches(bad, 1, 1),
                 lambda: stream_batches(bad, 1, 1), lambda: sliding_windows(bad, 1, 1)):
        with pytest.raises(ValueError, match=match):
            make()


def test_batching_rejects_bad_sizes():
    ids = np.arange(10)
    with pytest.raises(ValueError, match=r"id 9 is out of range \[0, 9\)"):
        chunk(ids, 2, vocab_size=9)
    for p in (0, -3, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            chunk(ids, p)
    for make in (chunk, lambda i, p: window_batches(i, p, 2), lambda i, p: sliding_windows(i, p, 2),
                 lambda i, p: stream_batches(i, p, 1)):
        with pytest.raises(ValueError, match="longer than the corpus"):
            make(ids, 11)
    with pytest.raises(ValueError, match="batch_size"):
        window_batches(ids, 2, 0)
    with pytest.raises(ValueError, match="at least that many tokens"):
        stream_batches(ids, 1, 11)
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(ids, 3, 2, stride=4)


def test_chunk_drops_the_remainder():
    x = chunk(np.arange(11), 3)
    assert x.shape == (3, 3) and x.dtype == np.int64
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert chunk(np.arange(3), 3).shape == (1, 3)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 60), p=st.integers(1, 8), B=st.integers(1, 7), seed=st.integers(0, 9),
       drop_last=st.booleans())
def test_window_batches_cover_every_segment_once(T, p, B, seed, drop_last):
    p = min(p, T)
    ids = np.arange(T) * 7 % 101                                # values unique when T <= 101
    batches = list(window_batches(ids, p, B, rng=seed, drop_last=drop_last))
    n = T // p
    assert all(b.shape[0] == p and b.dtype == np.int64 for b in batches)
    assert [b.shape[1] for b in batches] == [B] * (n // B) + ([] if drop_last or n % B == 0 else [n % B])
    cols = np.concatenate([b.T for b in batches]) if batches else np.zeros((0, p), np.int64)
    segments = chunk(ids, p)
    if not drop_last:                                           # each segment exactly once
        assert sorted(map(tuple, cols.tolist())) == sorted(map(tuple, segments.tolist()))
    else:
        assert len(set(map(tuple, cols.tolist()))) == len(cols) == n - n % B
    again = list(window_batches(ids, p, B, rng=seed, drop_last=drop_last))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_window_batches_order_and_shuffle():
    ids = np.arange(20)
    plain = list(window_batches(ids, 4, 2, shuffle=False))
    assert plain[0].tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]] and plain[-1].shape == (4, 1)
    shuffled = np.concatenate([b.T for b in window_batches(ids, 4, 5, rng=1)])
    assert shuffled.tolist() != chunk(ids, 4).tolist()          # this seed does reorder
    assert plain[0].flags.c_contiguous


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 80), p=st.integers(1, 9), B=st.integers(1, 6), drop_last=st.booleans())
def test_stream_batches_continue_each_column(T, p, B, drop_last):
    p, B = min(p, T), min(B, T)
    ids = np.arange(T) + 3
    batches = list(stream_batches(ids, p, B, drop_last=drop_last))
    L = T // B
    assert all(b.shape[1] == B and b.shape[0] <= p for b in batches)
    assert all(b.shape[0] == p for b in batches[:-1])
    rows = np.concatenate(batches) if batches else np.zeros((0, B), np.int64)
    assert rows.shape[0] == (L - L % p if drop_last else L)
    for j in range(B):                                          # column j: one contiguous stream
        np.testing.assert_array_equal(rows[:, j], ids[j * L:j * L + rows.shape[0]])


def _brute_force_scores(ids, p):
    """(token, history) for every token i: the tokens ids[max(0, i - p + 1) : i]."""
    return [(int(ids[i]), tuple(ids[max(0, i - p + 1):i].tolist())) for i in range(len(ids))]


def _scored(batches):
    """(token, history inside its window) for every masked position, in batch order."""
    out = []
    for x, mask in batches:
        x, mask = asnumpy(x), asnumpy(mask)
        for b in range(x.shape[1]):
            for r in np.flatnonzero(mask[:, b]):
                out.append((int(x[r, b]), tuple(x[:r, b].tolist())))
    return out


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 50), p=st.integers(1, 9), B=st.integers(1, 6), seed=st.integers(0, 99))
def test_sliding_windows_score_every_token_once_with_full_history(T, p, B, seed):
    p = min(p, T)
    ids = np.random.default_rng(seed).integers(0, 5, size=T)
    batches = list(sliding_windows(ids, p, B))
    assert all(x.shape[0] == p and m.shape == x.shape and m.dtype == bool for x, m in batches)
    assert _scored(batches) == _brute_force_scores(ids, p)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 50), p=st.integers(1, 9), stride=st.integers(1, 9), B=st.integers(1, 4))
def test_sliding_windows_with_stride(T, p, stride, B):
    p = min(p, T)
    stride = min(stride, p)
    ids = np.arange(T)                                          # token = position
    scored = _scored(sliding_windows(ids, p, B, stride=stride))
    assert [tok for tok, _ in scored] == list(range(T))         # each token once, in order
    for i, hist in scored:
        assert hist == tuple(range(i - len(hist), i))           # a true suffix of the history
        assert min(i, p - stride) <= len(hist) <= min(i, p - 1)


def test_batches_on_the_fake_device(fake_device):
    ids = np.arange(12)
    for x in window_batches(ids, 3, 2, device=fake_device):
        assert device_of(x) == fake_device
    x, mask = next(sliding_windows(ids, 3, 2, device=fake_device))
    assert device_of(x) == device_of(mask) == fake_device
    assert device_of(next(stream_batches(ids, 3, 2, device=fake_device))) == fake_device
    assert device_of(chunk(ids, 3, device=fake_device)) == fake_device
    assert check_ids(to_device(ids, fake_device)).tolist() == ids.tolist()   # host copy


# ----------------------------------------------------------------------------- perplexity

class Bigram:
    """Stand-in order-p model: log p(x_1) = a[x_1], log p(x_t | x_<t) = A[x_(t-1), x_t]."""

    def __init__(self, V, p, seed=0, device="cpu"):
        rng = np.random.default_rng(seed)
        f0, F = rng.normal(size=V), rng.normal(size=(V, V))
        self.a = f0 - np.log(np.exp(f0).sum())                   # (V,) log-probabilities
        self.A = F - np.log(np.exp(F).sum(1, keepdims=True))     # (V, V) rows normalised
        self.vocab_size, self.context, self.device = V, p, device
        self.a_dev, self.A_dev = to_device(self.a, device), to_device(self.A, device)

    def log_prob(self, x):
        xp = get_xp(x)
        assert x.ndim == 2 and x.shape[0] <= self.context and device_of(x) == self.device
        return xp.concatenate([self.a_dev[x[:1]], self.A_dev[x[:-1], x[1:]]])   # (T, B)


class HistorySum:
    """Stand-in whose log p(x_t | x_<t) depends on the whole history: -(1 + t/10 + sum x_<t / 100)."""
    context = None

    def log_prob(self, x):
        xp = get_xp(x)
        x = x.astype(xp.float64)
        before = xp.cumsum(x, axis=0) - x                        # sum of x_<t per column
        t = xp.arange(x.shape[0], dtype=xp.float64)[:, None]
        return -(1.0 + t / 10 + before / 100 + x / 1000)


def _hand_bigram(model, ids, first):
    """Sum of log p, with token i predicted from the bias when first(i), else from the bigram."""
    return sum(model.a[ids[i]] if first(i) else model.A[ids[i - 1], ids[i]] for i in range(len(ids)))


@pytest.mark.parametrize("T, p, B", [(23, 5, 2), (20, 5, 3), (7, 7, 4), (9, 1, 2), (31, 2, 64)])
def test_perplexity_of_a_bigram_by_hand(T, p, B):
    model = Bigram(V=6, p=p)
    ids = np.random.default_rng(T).integers(0, 6, size=T)
    chunked = perplexity(model, ids, batch_size=B, mode="chunked")
    sliding = perplexity(model, ids, batch_size=B, mode="sliding")
    assert chunked["tokens"] == sliding["tokens"] == T and chunked["p"] == p
    hand_chunked = _hand_bigram(model, ids, lambda i: i % p == 0)    # each segment restarts
    hand_sliding = _hand_bigram(model, ids, lambda i: i == 0 or p == 1)
    assert chunked["nll"] == pytest.approx(-hand_chunked / T, rel=1e-12)
    assert sliding["nll"] == pytest.approx(-hand_sliding / T, rel=1e-12)
    assert sliding["ppl"] == pytest.approx(math.exp(-hand_sliding / T))
    assert sliding["bits"] == pytest.approx(-hand_sliding / T / math.log(2))


@pytest.mark.parametrize("p, stride", [(4, 1), (4, 3), (5, 5), (1, 1)])
def test_perplexity_uses_the_right_history(p, stride):
    ids = np.random.default_rng(p).integers(0, 50, size=37)

    def lp(i, start):                                            # token i scored after ids[start:i]
        hist = ids[start:i]
        return -(1 + len(hist) / 10 + hist.sum() / 100 + ids[i] / 1000)
    hand_chunked = sum(lp(i, i - i % p) for i in range(len(ids)))
    got = perplexity(HistorySum(), ids, p=p, batch_size=3, mode="chunked")
    assert got["nll"] == pytest.approx(-hand_chunked / len(ids), rel=1e-12)
    if stride == 1:
        hand = sum(lp(i, max(0, i - p + 1)) for i in range(len(ids)))
        got = perplexity(HistorySum(), ids, p=p, batch_size=3, mode="sliding")
        assert got["nll"] == pytest.approx(-hand / len(ids), rel=1e-12)
    got = perplexity(HistorySum(), ids, p=p, batch_size=3, mode="sliding", stride=stride)
    assert got["tokens"] == len(ids) and got["stride"] == stride


def test_perplexity_on_the_fake_device(fake_device):
    ids = np.random.default_rng(1).integers(0, 6, size=40)
    for mode in ("chunked", "sliding"):
        cpu = perplexity(Bigram(6, 4), ids, batch_size=3, mode=mode)
        fake = perplexity(Bigram(6, 4, device=fake_device), ids, batch_size=3, mode=mode)
        assert fake["nll"] == pytest.approx(cpu["nll"], rel=1e-12)


def test_perplexity_argument_errors():
    ids = np.arange(6) % 3
    with pytest.raises(ValueError, match="mode"):
        perplexity(Bigram(3, 2), ids, mode="strided")
    with pytest.raises(ValueError, match="pass the window length"):
        perplexity(HistorySum(), ids)
    with pytest.raises(ValueError, match="longer than the model's order"):
        perplexity(Bigram(3, 2), ids, p=3)
    with pytest.raises(ValueError, match=r"out of range \[0, 3\)"):
        perplexity(Bigram(3, 2), np.arange(6))
    with pytest.raises(ValueError, match="longer than the corpus"):
        perplexity(Bigram(3, 8), ids)
