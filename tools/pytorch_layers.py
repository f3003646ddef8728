"""Times the conv layers of ../shared/ANCHORS.md in PyTorch (CPU, float32,
NCHW, 2 threads), forward and backward (input + weight gradients), in the
format of `gconv bench layers --json`, so both can run in one session:

    python3 -m venv .venv && .venv/bin/pip install torch
    .venv/bin/python tools/pytorch_layers.py [--repeat 9] [--json]
    ./target/release/gconv bench layers
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

# id, batch, C_in, C_out, H (= W), kernel, stride, groups: the table of
# gconv::kernels::bench::anchor_layers (padding kernel // 2).
LAYERS = [
    ("sn_g3_compress", 32, 240, 60, 28, 1, 1, 3),
    ("sn_g3_dw_s1", 32, 60, 60, 28, 3, 1, 60),
    ("sn_g3_dw_s2", 32, 60, 60, 56, 3, 2, 60),
    ("sn_g3_expand", 32, 60, 240, 28, 1, 1, 3),
    ("sn_g8_compress", 32, 384, 96, 28, 1, 1, 8),
    ("sn_g1_compress", 32, 144, 36, 28, 1, 1, 1),
    ("rx29_g32_s1", 64, 128, 128, 32, 3, 1, 32),
    ("rx29_g32_s2", 64, 256, 256, 32, 3, 2, 32),
]


def median_ms(repeat, f):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name, n, cin, cout, hw, k, stride, groups in LAYERS:
        x = torch.randn(n, cin, hw, hw, requires_grad=True)
        w = torch.randn(cout, cin // groups, k, k, requires_grad=True)
        conv = lambda: F.conv2d(x, w, None, stride, k // 2, 1, groups)  # noqa: E731
        with torch.no_grad():
            fwd = median_ms(args.repeat, conv)
        y = conv()
        dy = torch.randn_like(y)
        # Backward alone: input and weight gradients of a recorded graph.
        bwd = median_ms(args.repeat, lambda: torch.autograd.grad(y, (x, w), dy, retain_graph=True))
        oh = (hw + 2 * (k // 2) - k) // stride + 1
        macs = n * cout * oh * oh * (cin // groups) * k * k
        for pass_, ms, flops in [("forward", fwd, 2 * macs), ("backward", bwd, 4 * macs)]:
            rows.append({"layer": name, "pass": pass_, "ms": ms, "gflops": flops / (ms * 1e6) if ms else None})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeat}")
        for r in rows:
            print(f"{r['layer']:<15} {r['pass']:<8} {r['ms']:>8.2f} ms {r['gflops'] or 0:>8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
