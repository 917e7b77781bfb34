"""OpenVLA's action discretisation: 256 uniform bins in [-1, 1] on the last 256 ids of the base vocabulary.

Source: openvla/openvla ``prismatic/vla/action_tokenizer.py`` (encoding) and
``prismatic/extern/hf/modeling_prismatic.py`` ``OpenVLAForActionPrediction.predict_action`` (decoding). The
official encoder goes through the tokenizer's strings (``tokenizer.decode`` of the ids, re-tokenised later);
this one maps actions straight to token ids, which is what that round trip yields for the Llama tokenizer.

With the defaults (``vocab_size=32000``, 256 bins): a normalised action value ``a`` is clipped to [-1, 1],
``d = np.digitize(a, linspace(-1, 1, 256))`` lies in [1, 256] and the token id is ``32000 - d``, i.e. one of
31744..31999 (larger values -> smaller ids). Decoding takes ``i = clip(32000 - id - 1, 0, 254)`` and returns the
centre of bin interval ``i``; ids outside the action range are clipped onto the extreme bins, as official.
"""

from __future__ import annotations

import numpy as np

#: Base vocabulary size of Llama-2 (the action tokens overwrite its last ``n_bins`` ids).
LLAMA2_BASE_VOCAB_SIZE = 32000


class ActionTokenizer:
    """Discretise normalised continuous actions into token ids and back.

    Args:
        n_bins: number of bin edges (256); there are ``n_bins - 1`` intervals with centres ``bin_centers``.
        min_action, max_action: range of normalised actions (values outside are clipped).
        vocab_size: base vocabulary size; the action ids are ``vocab_size - n_bins .. vocab_size - 1``. For an
            OpenVLA model this is ``text_config.vocab_size - pad_to_multiple_of`` = 32064 - 64 = 32000.
    Raises:
        ValueError: ``n_bins < 2``, ``min_action >= max_action`` or ``vocab_size <= n_bins``.
    """

    def __init__(
        self,
        n_bins: int = 256,
        min_action: float = -1.0,
        max_action: float = 1.0,
        vocab_size: int = LLAMA2_BASE_VOCAB_SIZE,
    ) -> None:
        if int(n_bins) < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        if not min_action < max_action:
            raise ValueError(f"min_action ({min_action}) must be < max_action ({max_action})")
        if int(vocab_size) <= int(n_bins):
            raise ValueError(f"vocab_size ({vocab_size}) must exceed n_bins ({n_bins})")
        self.n_bins = int(n_bins)
        self.min_action = float(min_action)
        self.max_action = float(max_action)
        self.vocab_size = int(vocab_size)
        #: float64 [n_bins] bin edges; float64 [n_bins - 1] bin centres.
        self.bins = np.linspace(self.min_action, self.max_action, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def action_token_begin_idx(self) -> int:
        """Official threshold: ids strictly greater than this are action tokens (``vocab_size - n_bins - 1``)."""
        return self.vocab_size - (self.n_bins + 1)

    @property
    def first_action_id(self) -> int:
        """Smallest action token id (31744 for Llama-2)."""
        return self.vocab_size - self.n_bins

    @property
    def last_action_id(self) -> int:
        """Largest action token id (31999 for Llama-2)."""
        return self.vocab_size - 1

    @property
    def bin_width(self) -> float:
        """Width of one bin interval (2 / 255 for the defaults)."""
        return float(self.bins[1] - self.bins[0])

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions float [..., D] (any shape) -> token ids int64 [..., D] in
        ``[first_action_id, last_action_id]``. NaN is rejected.

        Raises:
            ValueError: ``actions`` contains NaN.
        """
        actions = np.asarray(actions, dtype=np.float64)
        if np.isnan(actions).any():
            raise ValueError("actions contain NaN; cannot discretise")
        clipped = np.clip(actions, self.min_action, self.max_action)
        return (self.vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids int [..., D] -> normalised actions float64 [..., D] (bin centres; any id accepted, ids
        outside the action range clip onto the extreme bins as in the official ``predict_action``)."""
        token_ids = np.asarray(token_ids, dtype=np.int64)
        return self.bin_centers[self.bin_indices(token_ids)]

    def bin_indices(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids int [..., D] -> bin-interval index int64 [..., D] = clip(vocab_size - id - 1, 0, n_bins - 2)."""
        token_ids = np.asarray(token_ids, dtype=np.int64)
        return np.clip(self.vocab_size - token_ids - 1, 0, self.bin_centers.shape[0] - 1)

    def is_action_token(self, token_ids: np.ndarray) -> np.ndarray:
        """Boolean mask [...]: which ids are action tokens."""
        token_ids = np.asarray(token_ids)
        return (token_ids >= self.first_action_id) & (token_ids <= self.last_action_id)
