"""Write the demo data set (a CSV with a header row) to stdout or a file.

Synthetic, with real signal: three classes whose centres differ in a few of the eight features,
plus noise and two useless columns, so a small MLP clearly beats chance (1/3) and model choice
matters. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def make(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=rows)
    x = rng.normal(size=(rows, 8))
    x[:, 0] += np.where(y == 0, 1.5, -0.5)
    x[:, 1] += np.where(y == 1, 1.5, -0.5)
    x[:, 2] += 0.8 * np.sin(3 * x[:, 3]) + np.where(y == 2, 1.0, 0.0)
    x[:, 4] = x[:, 0] * x[:, 1] + 0.3 * rng.normal(size=rows)  # an interaction a linear model misses
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    x, y = make(args.rows, args.seed)
    if args.out != "-" and os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)  # as `make demo` does for examples/data
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    with out:
        out.write(",".join([f"f{i}" for i in range(1, 9)] + ["label"]) + "\n")
        for row, label in zip(x, y):
            out.write(",".join(f"{v:.6f}" for v in row) + f",{label}\n")


if __name__ == "__main__":
    main()
