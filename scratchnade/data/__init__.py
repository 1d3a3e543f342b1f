"""Data: downloads and the cache directory, binarized MNIST, synthetic sources, text corpora."""
from .binary import download_binarized_mnist, load_binarized_mnist, minibatches
from .download import MissingDataError, data_dir
from .synthetic import all_binary_vectors, exact_entropy, fvsbn_source, random_fvsbn, sample_dataset
