"""Data: downloads and the cache directory, binarized MNIST, synthetic sources, text corpora."""
from .binary import download_binarized_mnist, load_binarized_mnist, minibatches
from .download import MissingDataError, data_dir
from .synthetic import all_binary_vectors, exact_entropy, fvsbn_source, random_fvsbn, sample_dataset
from .text import (Corpus, Vocabulary, chunk, load_corpus, load_ptb, load_shakespeare_char, load_text_corpus,
                   load_wikitext2, sliding_windows, stream_batches, window_batches)
