//! 2-D f64 convolution, 1024×1024 input, mode 'same' (the sizes of
//! ../shared/ANCHORS.md), by each method. `gconv bench signal` prints the same
//! cases with the ratios to SciPy and Octave.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gconv::random::uniform;
use gconv::signal::{Method, Mode, conv_with};
use std::hint::black_box;

fn conv2_same(c: &mut Criterion) {
    let a = uniform(&[1024, 1024], 1);
    let mut group = c.benchmark_group("conv2_same_1024_f64");
    group.sample_size(10);
    for k in [3usize, 11, 31, 101] {
        let b = uniform(&[k, k], k as u64);
        let methods: &[(&str, Method)] = if k <= 31 {
            &[
                ("auto", Method::Auto),
                ("direct", Method::Direct),
                ("fft", Method::Fft),
            ]
        } else {
            &[("auto", Method::Auto), ("fft", Method::Fft)]
        };
        for &(name, method) in methods {
            group.bench_with_input(
                BenchmarkId::new(name, format!("{k}x{k}")),
                &b,
                |bench, b| {
                    bench.iter(|| {
                        conv_with(&a.view(), &b.view(), Mode::Same, black_box(method)).unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, conv2_same);
criterion_main!(benches);
