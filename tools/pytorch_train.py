"""The same model and recipe as `gconv train`, in PyTorch, for side-by-side
time-to-accuracy comparisons, and `gconv bench train`'s reference numbers.

    python3 -m venv .venv && .venv/bin/pip install torch pytorchcv numpy
    .venv/bin/python tools/pytorch_train.py [--model shufflenet_g1_w3d4_cifar] \
        [--epochs 10] [--train-limit N] [--threads 2]
    .venv/bin/python tools/pytorch_train.py --bench --model shufflenet_g3_w1 --batch-size 32

Recipe (gconv's defaults): SGD, Nesterov momentum 0.9, weight decay 5e-4
except on 1-D parameters, peak lr 0.1 after a 1-epoch linear warm-up then
cosine to zero (per step), label smoothing 0.1, horizontal flip (random
crops with zero padding when --crop-padding is above 0), per-channel normalisation with the
training set's mean and std, batch 64, last partial batch dropped, 10
epochs. (gconv runs each batch as two halves with their own batch-norm
statistics by default; this script, like `gconv train --whole-batch`, uses
whole batches. It evaluates without test-time flips, like `gconv train
--no-flip-tta`.)
`_cifar` models are pytorchcv's with gconv's small-input stem: 3x3 stride-1
conv, no max pool.
"""
import argparse
import gzip
import json
import math
import pathlib
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorchcv.model_provider import get_model


def read_idx(path):
    data = pathlib.Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def fashion(dir_, split):
    p = "train" if split == "train" else "t10k"
    d = pathlib.Path(dir_)
    x = read_idx(d / f"{p}-images-idx3-ubyte.gz")[:, None].astype(np.float32) / 255.0
    y = read_idx(d / f"{p}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def build(name, in_channels, classes):
    small = name.endswith("_cifar")
    net = get_model(name.removesuffix("_cifar"), pretrained=False, in_channels=in_channels, num_classes=classes)
    if small:
        block = net.features.init_block
        block.conv.stride = (1, 1)
        block.pool = nn.Identity()
    net.features.final_pool = nn.AdaptiveAvgPool2d(1)
    return net


def augment(x, pad, gen):
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def optimizer(net, lr):
    decay = [p for p in net.parameters() if p.dim() > 1]
    no_decay = [p for p in net.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, nesterov=True)


def bench(args):
    side = args.input_size or (32 if "cifar" in args.model else 224)
    net = build(args.model, 3, 10 if "cifar" in args.model else 1000)
    net.train()
    opt = optimizer(net, 0.01)
    x = torch.randn(args.batch_size, 3, side, side)
    y = torch.randint(0, 10, (args.batch_size,))
    times = []
    for i in range(args.repeat + 1):
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    ms = 1e3 * sorted(times)[len(times) // 2]
    print(json.dumps({"model": args.model, "batch_size": args.batch_size, "ms": ms,
                      "images_per_s": args.batch_size / ms * 1e3}))


def train(args):
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = fashion(args.data_dir, "train")
    xte, yte = fashion(args.data_dir, "test")
    if args.train_limit:
        xtr, ytr = xtr[:args.train_limit], ytr[:args.train_limit]
    mean, std = xtr.mean().item(), xtr.std(unbiased=False).item()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    net = build(args.model, 1, 10)
    opt = optimizer(net, args.lr)
    batches = len(xtr) // args.batch_size
    total, warm = args.epochs * batches, batches
    step = 0
    start = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=gen)
        t = time.time()
        loss_sum = correct = seen = 0
        for b in range(batches):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            # Padding is zero before normalisation, as in gconv.
            x = augment(xtr[idx] + mean / std, args.crop_padding, gen) - mean / std
            lr = args.lr * (step + 1) / warm if step < warm else \
                args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad()
            out = net(x)
            loss = F.cross_entropy(out, ytr[idx], label_smoothing=0.1)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == ytr[idx]).sum().item()
            seen += len(idx)
        train_s = time.time() - t
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(xte[i:i + 256]).argmax(1) for i in range(0, len(xte), 256)])
        acc = (pred == yte).float().mean().item()
        print(json.dumps({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                          "test_acc": acc, "lr": lr, "seconds": time.time() - t,
                          "images_per_s": seen / train_s, "elapsed": time.time() - start}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="shufflenet_g1_w3d4_cifar")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--crop-padding", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--input-size", type=int)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench(args) if args.bench else train(args)


if __name__ == "__main__":
    main()
