"""Data sets and batching.

- :func:`load_digits`: the embedded 8×8 handwritten digits (1797 images, CC BY 4.0),
  the default data set of the examples; no download.
- :func:`load_mnist`, :func:`read_idx`: MNIST from its idx files (plain or gzipped), or
  memory-mapped (``mmap=True``, :class:`MappedImages`) for data larger than memory.
- :func:`train_test_split`, :func:`standardize`, :func:`normalize`: deterministic splits
  and feature scaling fitted on the training set.
- :func:`batches`: an iterator of mini-batches; :func:`epoch_batches`: one shuffled epoch
  stacked as ``(num_batches, batch_size, ...)`` for ``lax.scan``; :class:`Loader`: one
  shuffled epoch per call, reading only each batch's rows (``fit(data=loader)``);
  :func:`epoch_keys`: the shuffling and model keys of an epoch (shared with ``fit``).

Loaders return NumPy arrays: images NHWC float32 in ``[0, 1]`` and int32 labels.
"""
from funcnet.data.batching import Loader, batches, epoch_batches, epoch_keys
from funcnet.data.digits import load_digits
from funcnet.data.idx import MappedImages, load_mnist, read_idx
from funcnet.data.preprocess import normalize, standardize, train_test_split

__all__ = [
    "Loader",
    "MappedImages",
    "batches",
    "epoch_batches",
    "epoch_keys",
    "load_digits",
    "load_mnist",
    "normalize",
    "read_idx",
    "standardize",
    "train_test_split",
]
