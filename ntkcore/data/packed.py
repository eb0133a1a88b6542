"""The data files shipped inside the package (``uci_data/``, ``graphs_data/``): compressed ``.npz`` files whose
SHA-256 is checked before they are read, for :mod:`ntkcore.data.uci` and :mod:`ntkcore.data.graphs`."""
from __future__ import annotations

import hashlib
import io

import numpy as np


def read_packed(folder, key: str, sha256: dict) -> dict:
    """The arrays of ``folder / f"{key}.npz"``, after checking that its SHA-256 is ``sha256[key]``.

    Raises
    ------
    RuntimeError
        If the file is missing (an install without its package data) or its SHA-256 differs (corrupted); the
        message names the file and says to reinstall ntkcore.
    """
    path = folder / f"{key}.npz"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise RuntimeError(f"the packed data file {path} is missing; reinstall ntkcore (an install without its "
                           "package data)") from None
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256[key]:
        raise RuntimeError(f"the packed data file {path} is corrupted: its SHA-256 is {got}, expected "
                           f"{sha256[key]}; reinstall ntkcore")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
