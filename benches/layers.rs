//! Forward and backward (input + weight gradients) of the conv layers of
//! ../shared/ANCHORS.md. `gconv bench layers` prints the same cases with
//! GFLOP/s, GB/s and the ratios to PyTorch.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gconv::kernels::bench::{Buffers, Kernel, anchor_layers, backward, forward};

fn layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv_layers");
    group.sample_size(10);
    for layer in anchor_layers() {
        let s = layer.shape;
        let mut bufs = Buffers::new(&s);
        for (pass, is_backward) in [("forward", false), ("backward", true)] {
            group.throughput(Throughput::Elements(layer.flops(is_backward) as u64));
            group.bench_function(BenchmarkId::new(pass, layer.id), |b| {
                b.iter(|| {
                    if is_backward {
                        backward(&s, &mut bufs, Kernel::Auto).unwrap()
                    } else {
                        forward(&s, &mut bufs, Kernel::Auto).unwrap()
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
