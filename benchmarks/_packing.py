"""Packing shared by benchmarks/pack_uci.py and benchmarks/pack_graphs.py (run them as `python benchmarks/<name>.py`,
which puts this folder on the import path): byte-reproducible ``.npz`` files, and writing or checking them."""
from __future__ import annotations

import hashlib
import io
import pathlib
import sys
import zipfile

import numpy as np


def npz_bytes(arrays: dict) -> bytes:
    """A ``.npz`` (the format of ``numpy.savez_compressed``) with a fixed time stamp: same arrays, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def write_or_check(packed: dict, out: pathlib.Path, check: bool, what: str) -> int:
    """Write each ``packed[name]`` (bytes) to ``out/name.npz``, or with ``check`` compare it with the file there;
    print the SHA-256 table for the loader and a size line (``what`` names the contents). Returns the exit status:
    1 if a check found a difference, else 0."""
    differ = []
    if not check:
        out.mkdir(exist_ok=True)
    for name, blob in packed.items():
        target = out / f"{name}.npz"
        if check:
            if not target.is_file() or target.read_bytes() != blob:
                differ.append(name)
        else:
            target.write_bytes(blob)
        print(f'    "{name}": "{hashlib.sha256(blob).hexdigest()}",')
    print(f"{what}, {sum(map(len, packed.values())) / 1e6:.2f} MB", file=sys.stderr)
    if differ:
        print(f"differ from the packed files: {', '.join(differ)}", file=sys.stderr)
    return 1 if differ else 0
