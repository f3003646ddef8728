"""Times SciPy's 2-D convolutions on the cases of `gconv bench signal`.

    python3 -m venv .venv && .venv/bin/pip install scipy numpy threadpoolctl
    .venv/bin/python tools/signal_peers.py

1024x1024 float64, mode 'same', kernels 3, 11, 31, 101 square; median of 7
runs after a warm-up, BLAS/OpenMP limited to 2 threads (SciPy's FFT runs
on one thread unless told otherwise, as in ../shared/ANCHORS.md).
"""
import time

import numpy as np
from scipy import signal
from threadpoolctl import threadpool_limits


def median_ms(f, repeat=7):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    rng = np.random.default_rng(1)
    a = rng.random((1024, 1024)) - 0.5
    print(f"{'kernel':>8} {'convolve2d':>11} {'fftconvolve':>12} {'oaconvolve':>11} {'convolve':>9}  (ms)")
    with threadpool_limits(2):
        for k in (3, 11, 31, 101):
            b = rng.random((k, k)) - 0.5
            row = [
                median_ms(lambda: signal.convolve2d(a, b, mode="same"), 3 if k >= 31 else 7) if k <= 31 else float("nan"),
                median_ms(lambda: signal.fftconvolve(a, b, mode="same")),
                median_ms(lambda: signal.oaconvolve(a, b, mode="same")),
                median_ms(lambda: signal.convolve(a, b, mode="same")),
            ]
            print(f"{k:>6}x{k:<2}" + "".join(f" {v:>11.1f}" for v in row))


if __name__ == "__main__":
    main()
