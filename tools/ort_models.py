"""ONNX Runtime and PyTorch inference times of pytorchcv models, the
reference for `gconv bench models` (run both in one session: the machine's
speed drifts).

    python3 -m venv .venv && .venv/bin/pip install torch pytorchcv onnx onnxruntime
    .venv/bin/python tools/ort_models.py [--batch-size 1] [--threads 2] [--repeat 9] [--model NAME ...]

Exports each model to ONNX (opset 17, eval mode) in a temporary directory,
then prints one JSON object per model: model, batch_size, input_size,
pytorch_ms and onnxruntime_ms (medians).
"""
import argparse
import json
import tempfile
import time

import onnxruntime as ort
import torch
from pytorchcv.model_provider import get_model

MODELS = ["shufflenet_g1_w1", "shufflenet_g3_w1", "shufflenet_g8_w1", "resnext29_32x4d_cifar10", "resnext50_32x4d"]


def median_ms(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", action="append")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.model or MODELS:
        side = 32 if "cifar" in name else 224
        net = get_model(name, pretrained=False).eval()
        x = torch.randn(args.batch_size, 3, side, side)
        with torch.no_grad():
            torch_ms = median_ms(lambda: net(x), args.repeat)
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            torch.onnx.export(net, x, f.name, opset_version=17, input_names=["x"], dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(f.name, opts, providers=["CPUExecutionProvider"])
            feed = {"x": x.numpy()}
            ort_ms = median_ms(lambda: session.run(None, feed), args.repeat)
        print(json.dumps({"model": name, "batch_size": args.batch_size, "input_size": side,
                          "pytorch_ms": torch_ms, "onnxruntime_ms": ort_ms}), flush=True)


if __name__ == "__main__":
    main()
