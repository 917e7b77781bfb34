"""Ianvs TXT dataset indexes, read the way Ianvs reads them.

What Ianvs does with ``testenv.dataset.train_index`` / ``test_index`` (kubeedge/ianvs
``core/testenvmanager/dataset/dataset.py`` and Sedna's ``TxtDataParse``):

1. ``_process_txt_index_file``: if the first word of any line is not an absolute path, every
   space-separated word of every line is rewritten as ``abspath(join(dirname(index_file), word))``.
2. ``TxtDataParse.parse``: each non-empty line is split on whitespace; ``x`` gets the first word,
   ``y`` the second (or ``0`` when the line has one word); both become numpy arrays of str.

The single-task paradigm then calls ``basemodel.train(train_data)`` with the whole parsed object
(``.x``, ``.y``), ``basemodel.predict(test_data.x)`` and each metric with ``(test_data.y, prediction)``.

In this example the index files name things, not files: each line of the train index is an RLDS
dataset name and its task suite (``libero_spatial_no_noops libero_spatial``), each line of the test
index a LIBERO task suite. Because of step 1 they reach the basemodel as absolute paths whose base
name is the entry; :func:`vlamix.core.index.index_names` gives the entries back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class IndexFileError(ValueError):
    """A dataset index file cannot be read the way Ianvs reads it."""


@dataclass
class IndexData:
    """Stand-in for Sedna's ``TxtDataParse`` result.

    Attributes:
        x: str array [N], first word of each line (absolute path after Ianvs's rewrite).
        y: array [N], second word of each line, or ``0`` where a line has one word.
        data_type: "train", "inference" or "eval overall" (what Ianvs passes).
    """

    x: np.ndarray
    y: np.ndarray
    data_type: str

    def num_examples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        return self.num_examples()


def read_index_lines(path: str) -> list[list[str]]:
    """Words of each line of a TXT index after Ianvs's relative-to-absolute rewrite.

    Raises:
        IndexFileError: the file is missing, empty, has a blank line (Ianvs would turn it into the
            index folder's own path, a bogus entry) or words separated by anything but one space.
    """
    if not os.path.isfile(path):
        raise IndexFileError(f"dataset index {path!r} not found (relative to {os.getcwd()})")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if not lines:
        raise IndexFileError(f"dataset index {path!r} is empty")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise IndexFileError(f"dataset index {path!r} line {number} is blank; Ianvs would read it as an entry")
        if "\t" in line or "  " in line.strip():
            raise IndexFileError(f"dataset index {path!r} line {number}: separate words with single spaces (Ianvs splits on ' ')")
    rows = [line.strip().split(" ") for line in lines]
    if any(not os.path.isabs(words[0]) for words in rows):
        root = os.path.dirname(path)
        rows = [[os.path.abspath(os.path.join(root, word)) for word in words] for words in rows]
    return rows


def load_index(path: str, data_type: str) -> IndexData:
    """Parse a TXT index as Ianvs + Sedna do (see the module docstring)."""
    x, y = [], []
    for words in read_index_lines(path):
        x.append(words[0])
        y.append(words[1] if len(words) > 1 else 0)
    return IndexData(x=np.array(x), y=np.array(y), data_type=data_type)
