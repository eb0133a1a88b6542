"""Pack the 45 small UCI data sets and the reference accuracy table into ``ntkcore/data/uci_data/``.

Run by hand only, from the repository root, with the Fernández-Delgado et al. files in a folder ``SOURCE``::

    python benchmarks/pack_uci.py SOURCE            # writes ntkcore/data/uci_data/*.npz, prints the checksums
    python benchmarks/pack_uci.py SOURCE --check    # writes nothing; says whether the packed files match

Neither the tests nor the build need this script or ``SOURCE``: the packed files ship in the package, and their
SHA-256 checksums are written into :mod:`ntkcore.data.uci` (``_SHA256``), which verifies them on every load.

Sources
-------
``SOURCE`` is the content of the ``data.tar.gz`` archive of the preprocessed UCI data sets distributed by
M. Fernández-Delgado, E. Cernadas, S. Barro and D. Amorim, "Do we need hundreds of classifiers to solve real world
classification problems?", JMLR 15:3133–3181, 2014 (the archive that Arora et al., "Harnessing the power of
infinitely wide deep nets on small-data tasks", ICLR 2020, use), restricted to the 45 smallest of Arora et al.'s
90 data sets (10 to 452 examples), one folder ``SOURCE/<name>/`` each, plus ``SOURCE/fd_results.txt``, the
accuracy table of the 179 classifiers of that JMLR paper on its 121 data sets (the authors' ``results.txt``).
The data sets themselves come from the UCI Machine Learning Repository (D. Dua and C. Graff, University of
California, Irvine).

What each packed file holds
---------------------------
``<name>.npz``, one per data set, from the three files of ``SOURCE/<name>/``:

- ``x`` (float64, n × d): the columns ``f1 … fd`` of ``<name>_R.dat`` (tab-separated; a header line whose first
  field is empty, then per row a 1-based row number, the d features, already standardized by Fernández-Delgado
  et al., and the class). Each decimal is parsed with Python's ``float``, so the values are exactly the nearest
  doubles to the text.
- ``y`` (int8, n): the last column ``clase``, integers 0 … C−1.
- ``n_classes`` (int16, scalar): ``n_clases=`` of ``<name>.txt``; checked to equal ``y.max() + 1``.
- ``train``, ``validation`` (int16): lines 1 and 2 of ``conxuntos.dat`` (0-based row indices, order kept).
- ``fold_train`` (int16, 4 × (n − t)), ``fold_test`` (int16, 4 × t): lines 1, 3, 5, 7 and 2, 4, 6, 8 of
  ``conxuntos_kfold.dat`` (order kept); in these files every fold's test part has the same size t.

``fd_results.npz``, from ``fd_results.txt`` (whitespace-separated; a header ``problema``, 179 classifier names,
``min max mean std``; 121 data-set rows; a dashed line; per-classifier ``mean`` and ``std`` rows):

- ``datasets`` (unicode, 121): the first field of the 121 data-set rows, in file order (alphabetical).
- ``classifiers`` (unicode, 179): the header's 179 classifier names, in file order.
- ``accuracy`` (float64, 121 × 179): the accuracies in percent, NaN where the file has ``--``. The trailing
  min/max/mean/std columns and the mean/std rows are derived figures and are not kept; the script checks that the
  min and max columns equal the row-wise min and max of the kept values, and that the mean column agrees with
  the row-wise mean to the file's rounding (0.05).

Every check listed here (row numbers 1 … n, the header, labels 0 … C−1 with every class present, the metadata's
sizes, indices in range, train/validation and each fold's train/test disjoint and covering all rows) fails the
script loudly rather than packing a surprise.

Byte-reproducible output: the ``.npz`` archives are written with a fixed time stamp and a fixed member order, and
deflated at level 9, so the same sources and the same zlib give the same bytes and the same SHA-256.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys

import numpy as np
from _packing import npz_bytes, write_or_check

OUT = pathlib.Path(__file__).resolve().parent.parent / "ntkcore" / "data" / "uci_data"
N_FOLDS = 4
N_CLASSIFIERS = 179


def _indices(line: str, n: int, what: str) -> np.ndarray:
    idx = np.array([int(v) for v in line.split()], dtype=np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
        raise SystemExit(f"{what}: indices out of 0..{n - 1}, empty or repeated")
    return idx


def _partition(a: np.ndarray, b: np.ndarray, n: int, what: str) -> None:
    if np.intersect1d(a, b).size or np.union1d(a, b).size != n:
        raise SystemExit(f"{what}: the two index lines do not partition the {n} rows")


def pack_dataset(folder: pathlib.Path) -> dict:
    """The arrays of one ``<name>.npz`` (module docstring), read and checked from ``folder``."""
    name = folder.name
    lines = (folder / f"{name}_R.dat").read_text().splitlines()
    header = lines[0].split("\t")
    d = len(header) - 2
    if header[0] != "" or header[-1] != "clase" or header[1:-1] != [f"f{i}" for i in range(1, d + 1)]:
        raise SystemExit(f"{name}: unexpected header {header[:3]} ... {header[-2:]}")
    rows = [line.split("\t") for line in lines[1:]]
    if any(len(r) != d + 2 for r in rows):
        raise SystemExit(f"{name}: a row without {d + 2} fields")
    n = len(rows)
    if [int(r[0]) for r in rows] != list(range(1, n + 1)):
        raise SystemExit(f"{name}: row numbers are not 1..{n}")
    x = np.array([[float(v) for v in r[1:-1]] for r in rows], dtype=np.float64)
    y = np.array([int(r[-1]) for r in rows], dtype=np.int64)
    meta = dict(re.findall(r"(\w+)=\s*(\S+)", (folder / f"{name}.txt").read_text()))
    n_classes = int(meta["n_clases"])
    if (int(meta["n_patrons1"]), int(meta["n_entradas"])) != (n, d) or not np.all(np.isfinite(x)):
        raise SystemExit(f"{name}: the metadata's sizes differ from the file, or a feature is not finite")
    if y.min() != 0 or y.max() != n_classes - 1 or np.unique(y).size != n_classes:
        raise SystemExit(f"{name}: classes are not exactly 0..{n_classes - 1}")

    split = (folder / "conxuntos.dat").read_text().splitlines()
    if len(split) != 2:
        raise SystemExit(f"{name}: conxuntos.dat has {len(split)} lines, not 2")
    train, validation = (_indices(line, n, f"{name} conxuntos.dat") for line in split)
    _partition(train, validation, n, f"{name} conxuntos.dat")
    if (train.size, validation.size) != (int(meta["n_patrons_entrena"]), int(meta["n_patrons_valida"])):
        raise SystemExit(f"{name}: train/validation sizes differ from the metadata")

    kfold = (folder / "conxuntos_kfold.dat").read_text().splitlines()
    if len(kfold) != 2 * N_FOLDS:
        raise SystemExit(f"{name}: conxuntos_kfold.dat has {len(kfold)} lines, not {2 * N_FOLDS}")
    folds = [_indices(line, n, f"{name} conxuntos_kfold.dat") for line in kfold]
    for k in range(N_FOLDS):
        _partition(folds[2 * k], folds[2 * k + 1], n, f"{name} fold {k}")
    if len({f.size for f in folds[1::2]}) != 1:
        raise SystemExit(f"{name}: the folds' test parts differ in size")

    small = np.int16  # every index and class fits (n ≤ 452 here)
    return {"x": x, "y": y.astype(np.int8), "n_classes": np.int16(n_classes), "train": train.astype(small),
            "validation": validation.astype(small), "fold_train": np.stack(folds[0::2]).astype(small),
            "fold_test": np.stack(folds[1::2]).astype(small)}


def pack_reference(path: pathlib.Path) -> dict:
    """The arrays of ``fd_results.npz`` (module docstring), read and checked from ``path``."""
    lines = path.read_text().split("\n")
    header = lines[0].split()
    if header[0] != "problema" or header[-4:] != ["min", "max", "mean", "std"] or \
            len(header) != N_CLASSIFIERS + 5:
        raise SystemExit(f"{path}: unexpected header")
    body = []
    for line in lines[1:]:
        if line.startswith("-"):
            break
        body.append(line.split())
    if any(len(r) != N_CLASSIFIERS + 5 for r in body):
        raise SystemExit(f"{path}: a data-set row without {N_CLASSIFIERS + 5} fields")
    datasets = [r[0] for r in body]
    fields = [r[1:N_CLASSIFIERS + 1] for r in body]
    if any(v != "--" and not re.fullmatch(r"\d+(\.\d)?", v) for r in fields for v in r):
        raise SystemExit(f"{path}: an accuracy that is neither '--' nor a decimal with one digit")
    acc = np.array([[np.nan if v == "--" else float(v) for v in r] for r in fields], dtype=np.float64)
    stats = np.array([[float(v) for v in r[N_CLASSIFIERS + 1:]] for r in body])
    if not (np.array_equal(np.nanmin(acc, axis=1), stats[:, 0]) and np.array_equal(np.nanmax(acc, axis=1), stats[:, 1])
            and np.abs(np.nanmean(acc, axis=1) - stats[:, 2]).max() <= 0.05 + 1e-9):
        raise SystemExit(f"{path}: the min/max/mean columns disagree with the accuracies")
    return {"datasets": np.array(datasets), "classifiers": np.array(header[1:N_CLASSIFIERS + 1]), "accuracy": acc}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, help="folder with <name>/ subfolders and fd_results.txt")
    parser.add_argument("--check", action="store_true", help="compare with the packed files, write nothing")
    args = parser.parse_args(argv)
    packed = {folder.name: npz_bytes(pack_dataset(folder))
              for folder in sorted(p for p in args.source.iterdir() if p.is_dir())}
    packed["fd_results"] = npz_bytes(pack_reference(args.source / "fd_results.txt"))
    return write_or_check(packed, OUT, args.check, f"{len(packed) - 1} data sets")


if __name__ == "__main__":
    sys.exit(main())
