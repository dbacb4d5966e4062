"""The embedded default data set: 1797 handwritten digits of 8×8 pixels.

Source: the test part of the "Optical Recognition of Handwritten Digits" data set
(optdigits) of the UCI Machine Learning Repository, as shipped by scikit-learn
(``sklearn.datasets.load_digits``). 32×32 bitmaps of digits written by 43 people were
divided into non-overlapping 4×4 blocks and the "on" pixels counted in each, which gives
8×8 images with integer values 0..16.

Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/. Credit: E. Alpaydin and C. Kaynak (1998),
"Optical Recognition of Handwritten Digits", UCI Machine Learning Repository,
https://doi.org/10.24432/C50P49.

The file ``digits.npz`` next to this module holds ``images`` (uint8, ``(1797, 8, 8)``,
values 0..16) and ``labels`` (uint8, ``(1797,)``, values 0..9); it is read with
``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from funcnet import _checks
from funcnet.data._common import to_images

DIGITS_PATH = Path(__file__).with_name("digits.npz")
NUM_DIGITS = 1797
DIGITS_MAX_VALUE = 16


def load_digits(*, flatten: bool = False, normalize: bool = True,
                dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Loads the embedded 8×8 handwritten digits (no download).

    Args:
      flatten: return images as ``(1797, 64)`` rows instead of NHWC ``(1797, 8, 8, 1)``.
      normalize: scale the pixel counts 0..16 to ``[0, 1]`` (divide by 16); otherwise keep
        them as 0..16 in ``dtype``.
      dtype: floating NumPy dtype of the images.

    Returns:
      ``(images, labels)``: images ``(1797, 8, 8, 1)`` (or ``(1797, 64)``) of ``dtype`` and
      labels ``(1797,)`` int32 in ``0..9``, both NumPy arrays, in the file's fixed order.

    Raises:
      TypeError: ``dtype`` is not floating, or ``flatten`` or ``normalize`` is not a bool.
      ValueError: the packaged file is damaged (wrong arrays, shapes or value range).

    References:
      E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
      Learning Repository, 1998, https://doi.org/10.24432/C50P49 (CC BY 4.0).
    """
    flatten = _checks.static_bool("load_digits", "flatten", flatten)
    normalize = _checks.static_bool("load_digits", "normalize", normalize)
    with np.load(DIGITS_PATH, allow_pickle=False) as archive:
        if set(archive.files) != {"images", "labels"}:
            raise ValueError(
                f"load_digits: {DIGITS_PATH} must hold the arrays 'images' and 'labels', "
                f"found {sorted(archive.files)}")
        raw, labels = archive["images"], archive["labels"]
    if (raw.shape != (NUM_DIGITS, 8, 8) or labels.shape != (NUM_DIGITS,)
            or raw.dtype != np.uint8 or labels.dtype != np.uint8
            or raw.max() > DIGITS_MAX_VALUE or labels.max() > 9):
        raise ValueError(
            f"load_digits: {DIGITS_PATH} is damaged: expected uint8 images "
            f"({NUM_DIGITS}, 8, 8) <= {DIGITS_MAX_VALUE} and uint8 labels ({NUM_DIGITS},) "
            f"<= 9, found images {raw.dtype} {raw.shape} and labels {labels.dtype} "
            f"{labels.shape}")
    images = to_images(raw, DIGITS_MAX_VALUE, flatten=flatten, normalize=normalize,
                       dtype=dtype)
    return images, labels.astype(np.int32)
