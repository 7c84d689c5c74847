"""Four weighted sums per detector frame in one pass over its pixels (the SXDM streaming kernel).

    out[f, k] = sum_{r, c} frames[f, r0 + r, c0 + c] * weights[k, r, c]      k = 0..3

over the region (h, w) = weights.shape[1:] at origin (r0, c0) of each frame; units are those
of frames times those of weights. The products and sums are float64: a uint16 count times a
float32 weight is exact in float64, and a sum over 65,536 pixels of 65,535 counts (4.3e9) is
exact too, so the intensity sum of integer frames is exact and the moments carry float64
rounding only (the float32 matrix product this replaces lost ~1e-6 relative).

Hand-written (numba) in place of the float32 conversion + BLAS product frames @ W: that
product has to write each frame out as float32 first (twice its uint16 bytes), and a
4-column GEMM is memory bound on that copy. Here each frame is read once, as stored, and
four frames share every load of the weights. Measured by benchmarks/bench_sxdm.py on
256 x 256 uint16 frames in batches of 100 (2026-12-07, machine shared with other work):
82,000-96,000 frames/s, 2.2-2.7x that product with BLAS on one thread per worker (its
best; 1.7x on a 128 x 128 ROI); benchmarks/README.md.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["weighted_frame_sums"]

_KERNEL_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.int16, np.int32, np.int64, np.float32, np.float64)
)
"""Frame dtypes the kernel reads as stored; others (bool, float16, uint64, ...) are converted
to float64 first."""


def weighted_frame_sums(
    frames: NDArray, weights: NDArray, origin: tuple[int, int] = (0, 0), out: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Weighted sums out (B, 4) of frames (B, rows, cols) with weights (4, h, w) (module equation).

    origin (r0, c0): the region's first row and column in the frames; the region must lie
    inside them. NaN or inf in a frame propagate into its sums (also where its weight is 0).
    out: optional (B, 4) float64 array to write into (a worker's slice of a batch's result).
    """
    frames = np.asarray(frames)
    if frames.dtype not in _KERNEL_DTYPES:
        frames = frames.astype(np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    r0, c0 = int(origin[0]), int(origin[1])
    if frames.ndim != 3 or weights.ndim != 3 or weights.shape[0] != 4:
        raise ValueError(f"need frames (B, rows, cols) and weights (4, h, w), got {frames.shape}, {weights.shape}")
    if r0 < 0 or c0 < 0 or r0 + weights.shape[1] > frames.shape[1] or c0 + weights.shape[2] > frames.shape[2]:
        raise ValueError(f"region {weights.shape[1:]} at {origin} is not inside frames {frames.shape[1:]}")
    out = np.empty((frames.shape[0], 4)) if out is None else out
    if out.shape != (frames.shape[0], 4) or out.dtype != np.float64:  # the kernel checks no bounds
        raise ValueError(f"out must be ({frames.shape[0]}, 4) float64, got {out.shape} {out.dtype}")
    if frames.shape[0]:
        _sums4(frames, np.uint64(r0), np.uint64(c0), weights, out)
    return out


# "reassoc" lets LLVM split each sum over SIMD lanes, "contract" fuse multiply-adds; no
# "nnan"/"ninf", so non-finite pixels still propagate.
@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _sums4(frames, r0, c0, weights, out):  # pragma: no cover - compiled
    """`weighted_frame_sums` of frames f..f+3 per pass (16 running sums stay in registers),
    then of the last B % 4 frames one per pass (`_sums1`).

    Four frames per pass: 1.5-2x one frame per pass (the weights are read once per four
    frames); eight need more registers than AVX-512 has. r0, c0 are unsigned: a signed
    index r0 + r gets numba's negative-index wrap-around, which stops LLVM vectorising the
    loop (measured 2x slower).
    """
    n = frames.shape[0]
    h, w = weights.shape[1], weights.shape[2]
    for f in range(0, n - 3, 4):
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
        c_0 = c_1 = c_2 = c_3 = d0 = d1 = d2 = d3 = 0.0
        for r in range(h):
            row = r0 + np.uint64(r)
            for c in range(w):
                col = c0 + np.uint64(c)
                w0 = np.float64(weights[0, r, c])
                w1 = np.float64(weights[1, r, c])
                w2 = np.float64(weights[2, r, c])
                w3 = np.float64(weights[3, r, c])
                va = np.float64(frames[f, row, col])
                vb = np.float64(frames[f + 1, row, col])
                vc = np.float64(frames[f + 2, row, col])
                vd = np.float64(frames[f + 3, row, col])
                a0 += va * w0
                a1 += va * w1
                a2 += va * w2
                a3 += va * w3
                b0 += vb * w0
                b1 += vb * w1
                b2 += vb * w2
                b3 += vb * w3
                c_0 += vc * w0
                c_1 += vc * w1
                c_2 += vc * w2
                c_3 += vc * w3
                d0 += vd * w0
                d1 += vd * w1
                d2 += vd * w2
                d3 += vd * w3
        out[f, 0], out[f, 1], out[f, 2], out[f, 3] = a0, a1, a2, a3
        out[f + 1, 0], out[f + 1, 1], out[f + 1, 2], out[f + 1, 3] = b0, b1, b2, b3
        out[f + 2, 0], out[f + 2, 1], out[f + 2, 2], out[f + 2, 3] = c_0, c_1, c_2, c_3
        out[f + 3, 0], out[f + 3, 1], out[f + 3, 2], out[f + 3, 3] = d0, d1, d2, d3
    for f in range(n - n % 4, n):
        _sums1(frames, f, r0, c0, weights, out)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _sums1(frames, f, r0, c0, weights, out):  # pragma: no cover - compiled
    """`weighted_frame_sums` of frame f alone: a single add() pays for one frame, not four."""
    s0 = s1 = s2 = s3 = 0.0
    for r in range(weights.shape[1]):
        row = r0 + np.uint64(r)
        for c in range(weights.shape[2]):
            v = np.float64(frames[f, row, c0 + np.uint64(c)])
            s0 += v * np.float64(weights[0, r, c])
            s1 += v * np.float64(weights[1, r, c])
            s2 += v * np.float64(weights[2, r, c])
            s3 += v * np.float64(weights[3, r, c])
    out[f, 0], out[f, 1], out[f, 2], out[f, 3] = s0, s1, s2, s3
