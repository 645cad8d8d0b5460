#!/usr/bin/env python3
"""Writes the tiles of the tiled-Cholesky example (../../cholesky.toml).

L is a 12x12 lower-triangular matrix of small integers with a positive diagonal; A = L L^T has
integer entries, so it is exact in f64 and its Cholesky factor is L. The matrix is cut into 3x3
tiles of 4x4 values, little-endian f64, row-major: aIJ.bin is tile (I, J) of A (lower half only,
I >= J) and lIJ.bin is the expected tile (I, J) of L.
Run from this directory: python3 gen.py
"""
import struct

N, T = 12, 4
L = [[0.0] * N for _ in range(N)]
for i in range(N):
    for j in range(i):
        L[i][j] = float((i * 7 + j * 3) % 5 - 2)
    L[i][i] = float(2 + i % 3)
A = [[sum(L[i][k] * L[j][k] for k in range(N)) for j in range(N)] for i in range(N)]


def tile(m, ti, tj):
    return b"".join(struct.pack("<d", m[ti * T + r][tj * T + c]) for r in range(T) for c in range(T))


for ti in range(N // T):
    for tj in range(ti + 1):
        with open(f"a{ti}{tj}.bin", "wb") as f:
            f.write(tile(A, ti, tj))
        with open(f"l{ti}{tj}.bin", "wb") as f:
            f.write(tile(L, ti, tj))
