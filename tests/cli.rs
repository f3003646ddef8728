//! The `gconv` binary on good and bad input: results, exit codes, one-line
//! errors and no partial output files.

use gconv::io::{read_npy, write_npy};
use gconv::signal::DynArray;
use ndarray::{ArrayD, IxDyn, arr1, arr2};
use std::path::Path;
use std::process::{Command, Output};

fn gconv(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gconv"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("gconv runs")
}

/// Asserts success, showing stderr otherwise.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a clean failure: exit code 2, one line on stderr that mentions
/// `needle`, no panic.
fn assert_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn conv_npy_keeps_integer_types_and_promotes_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_npy(
        &d.join("a.npy"),
        &DynArray::I32(arr1(&[1, 2, 3]).into_dyn()),
    )
    .unwrap();
    write_npy(&d.join("b.npy"), &DynArray::I32(arr1(&[1, 1]).into_dyn())).unwrap();
    write_npy(
        &d.join("f.npy"),
        &DynArray::F32(arr1(&[0.5f32, 0.5]).into_dyn()),
    )
    .unwrap();
    let out = gconv(&["conv", "a.npy", "b.npy", "-o", "c.npy"], d);
    assert_ok(&out);
    assert_eq!(
        read_npy(&d.join("c.npy")).unwrap(),
        DynArray::I32(arr1(&[1, 3, 5, 3]).into_dyn())
    );
    // int32 with float32 is float64, as in NumPy; same keeps A's size.
    let out = gconv(
        &["conv", "a.npy", "f.npy", "-o", "m.npy", "--mode", "same"],
        d,
    );
    assert_ok(&out);
    assert_eq!(
        read_npy(&d.join("m.npy")).unwrap(),
        DynArray::F64(arr1(&[1.5, 2.5, 1.5]).into_dyn())
    );
}

#[test]
fn conv_accepts_literals_and_text_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("m.txt"), "1 2 3\n4 5 6\n7 8 9\n").unwrap();
    let out = gconv(
        &[
            "conv",
            "m.txt",
            "[1 0; 0 -1]",
            "-o",
            "c.npy",
            "--mode",
            "valid",
            "--method",
            "fft",
        ],
        d,
    );
    assert_ok(&out);
    let DynArray::F64(c) = read_npy(&d.join("c.npy")).unwrap() else {
        panic!("float64 expected")
    };
    // conv2(M, [1 0; 0 -1], 'valid') = M(i+1,j+1) - M(i,j): the kernel is flipped.
    let want = arr2(&[[4.0, 4.0], [4.0, 4.0]]).into_dyn();
    assert!(
        c.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12),
        "{c}"
    );
    // Correlation does not flip: filter2([1 0; 0 -1], M, 'valid') = M(i,j) - M(i+1,j+1).
    let out = gconv(
        &[
            "conv",
            "m.txt",
            "[1 0; 0 -1]",
            "-o",
            "r.npy",
            "--mode",
            "valid",
            "--correlate",
        ],
        d,
    );
    assert_ok(&out);
    assert_eq!(
        read_npy(&d.join("r.npy")).unwrap(),
        DynArray::F64(want.mapv(|v| -v))
    );
}

#[test]
fn conv_errors_are_one_line_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_error(
        &gconv(&["conv", "missing.npy", "[1]", "-o", "c.npy"], d),
        "missing.npy",
    );
    std::fs::write(
        d.join("bad.npy"),
        b"\x93NUMPY\x01\x00\x10\x00{'descr': oops",
    )
    .unwrap();
    assert_error(
        &gconv(&["conv", "bad.npy", "[1]", "-o", "c.npy"], d),
        "bad.npy",
    );
    assert_error(
        &gconv(&["conv", "[1 2; 3]", "[1]", "-o", "c.npy"], d),
        "row 2",
    );
    assert_error(&gconv(&["conv", "[1 2]", "[1]", "-o", "c.txt"], d), ".npy");
    write_npy(
        &d.join("i.npy"),
        &DynArray::I64(arr1(&[1i64, 2]).into_dyn()),
    )
    .unwrap();
    assert_error(
        &gconv(
            &["conv", "i.npy", "i.npy", "-o", "c.npy", "--method", "fft"],
            d,
        ),
        "not exact",
    );
    let big = DynArray::I32(ArrayD::from_elem(IxDyn(&[3]), i32::MAX));
    write_npy(&d.join("big.npy"), &big).unwrap();
    assert_error(
        &gconv(&["conv", "big.npy", "big.npy", "-o", "c.npy"], d),
        "overflow",
    );
    assert!(!d.join("c.npy").exists());
    // Unsupported element type.
    let mut f = std::fs::File::create(d.join("s.npy")).unwrap();
    use std::io::Write;
    let header = "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&((header.len() + pad + 1) as u16).to_le_bytes())
        .unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(" ".repeat(pad).as_bytes()).unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(&[0u8; 12]).unwrap();
    drop(f);
    assert_error(
        &gconv(&["conv", "s.npy", "[1]", "-o", "c.npy"], d),
        "element type",
    );
    // A usage error is clap's, also exit code 2.
    assert_eq!(gconv(&["conv", "[1]"], d).status.code(), Some(2));
}

fn write_test_png(path: &Path) {
    let img = image::RgbImage::from_fn(20, 16, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 15) as u8, 128])
    });
    img.save(path).unwrap();
}

#[test]
fn filter_writes_a_png_of_the_right_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_test_png(&d.join("in.png"));
    for (mode, size) in [("same", (20, 16)), ("valid", (18, 14)), ("full", (22, 18))] {
        let out = gconv(
            &[
                "filter", "in.png", "-k", "sobel-x", "-o", "out.png", "--mode", mode,
            ],
            d,
        );
        assert_ok(&out);
        let img = image::open(d.join("out.png")).unwrap();
        assert_eq!((img.width(), img.height()), size, "{mode}");
        assert!(!img.color().has_color());
    }
    let out = gconv(
        &[
            "filter",
            "in.png",
            "-k",
            "[1 2 1; 2 4 2; 1 2 1]",
            "-o",
            "rgb.png",
            "--per-channel",
            "--normalize",
            "range",
        ],
        d,
    );
    assert_ok(&out);
    assert!(image::open(d.join("rgb.png")).unwrap().color().has_color());
}

#[test]
fn filter_errors_are_one_line_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_test_png(&d.join("in.png"));
    std::fs::write(
        d.join("broken.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR garbage",
    )
    .unwrap();
    assert_error(
        &gconv(&["filter", "broken.png", "-k", "box:3", "-o", "o.png"], d),
        "broken.png",
    );
    assert_error(
        &gconv(&["filter", "nope.png", "-k", "box:3", "-o", "o.png"], d),
        "nope.png",
    );
    assert_error(
        &gconv(&["filter", "in.png", "-k", "blur", "-o", "o.png"], d),
        "unknown kernel",
    );
    assert_error(
        &gconv(&["filter", "in.png", "-k", "gaussian:0", "-o", "o.png"], d),
        "SIGMA",
    );
    assert_error(
        &gconv(
            &[
                "filter", "in.png", "-k", "box:30", "-o", "o.png", "--mode", "valid",
            ],
            d,
        ),
        "empty image",
    );
    assert_error(
        &gconv(&["filter", "in.png", "-k", "box:3", "-o", "o.jpg"], d),
        ".png",
    );
    assert!(!d.join("o.png").exists());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn demo_runs_the_seed_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let out = gconv(&["demo", "--out", "demo"], dir.path());
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("conv(u, v) == conv(v, u)") && text.contains(": true"),
        "{text}"
    );
    for name in [
        "input",
        "sobel-x",
        "sobel-y",
        "laplacian",
        "gaussian",
        "sharpen",
        "random-symmetric",
    ] {
        let img = image::open(dir.path().join("demo").join(format!("{name}.png"))).unwrap();
        assert!(img.width() > 200, "{name}");
    }
}

#[test]
fn bench_layers_prints_json_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = gconv(
        &[
            "bench",
            "layers",
            "--json",
            "--filter",
            "sn_g3_dw_s1",
            "--repeat",
            "1",
        ],
        dir.path(),
    );
    assert_ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, pass) in rows.iter().zip(["forward", "backward"]) {
        assert_eq!(row["layer"], "sn_g3_dw_s1");
        assert_eq!(row["pass"], pass);
        assert!(row["ms"].as_f64().unwrap() > 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_models_prints_json_rows() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "models",
        "--json",
        "--model",
        "shufflenet_g1_wd4",
        "--repeat",
        "1",
    ];
    let out = gconv(&args, dir.path());
    assert_ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["model"], "shufflenet_g1_wd4");
    assert_eq!(row["batch_size"], 1);
    assert!(row["ms"].as_f64().unwrap() > 0.0 && row["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(row["plan"], true);
    let out = gconv(&[&args[..], &["--unfused"]].concat(), dir.path());
    assert_ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["plan"], false);
    let bad = gconv(&["bench", "models", "--model", "nonet"], dir.path());
    assert_error(&bad, "unknown model");
}

#[test]
fn info_prints_layers_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let out = gconv(&["info", "shufflenet_g3_w1", "--json"], dir.path());
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 1_865_728);
    assert_eq!(v["macs"], 137_460_672);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "features.init_block.conv");
    assert_eq!(layers[0]["output_shape"], serde_json::json!([24, 112, 112]));

    let out = gconv(
        &[
            "info",
            "resnext29_32x4d_cifar10",
            "--input-size",
            "64",
            "48",
        ],
        dir.path(),
    );
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("input 3×64×48") && text.contains("1024×16×12"),
        "{text}"
    );

    let out = gconv(&["info", "--list"], dir.path());
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "shufflenet_g8_wd4"), "{text}");

    assert_error(
        &gconv(&["info", "shufflenet_g5_w1"], dir.path()),
        "unknown model",
    );
    assert_error(
        &gconv(
            &["info", "shufflenet_g1_w1", "--input-size", "0", "9"],
            dir.path(),
        ),
        "positive",
    );
}

#[test]
fn predict_writes_the_models_logits_and_ranks_images() {
    use gconv::nn;
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut net = gconv::models::build("shufflenet_g2_wd4", &mut rng).unwrap();
    nn::save_safetensors(net.as_ref(), dir.path().join("w.safetensors"), None).unwrap();
    net.set_training(false);
    let x = gconv::Tensor::uniform(&[3, 3, 40, 36], -1.0, 1.0, &mut rng);
    let want = gconv::no_grad(|| net.forward(&x)).unwrap().to_vec();
    let array = ArrayD::from_shape_vec(IxDyn(&[3, 3, 40, 36]), x.to_vec()).unwrap();
    write_npy(&dir.path().join("x.npy"), &DynArray::F32(array)).unwrap();

    let args = ["predict", "shufflenet_g2_wd4", "--weights", "w.safetensors"];
    let run = |extra: &[&str]| gconv(&[&args[..], extra].concat(), dir.path());
    assert_ok(&run(&[
        "--input",
        "x.npy",
        "--output",
        "y.npy",
        "--batch-size",
        "2",
    ]));
    let DynArray::F32(y) = read_npy(&dir.path().join("y.npy")).unwrap() else {
        panic!("float32 logits")
    };
    assert_eq!(y.shape(), [3, 1000]);
    // Batches of 2 and 3 run different kernel splits: the project's bar.
    let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
    for (g, w) in y.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * scale, "{g} vs {w}");
    }

    write_test_png(&dir.path().join("img.png"));
    let labels: String = (0..1000).map(|i| format!("label{i}\n")).collect();
    std::fs::write(dir.path().join("labels.txt"), labels).unwrap();
    let out = run(&["--image", "img.png", "--top", "3", "--labels", "labels.txt"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines().nth(1).unwrap().contains("% ") && text.contains("label"),
        "{text}"
    );

    // Bad input: one-line errors, no output file.
    assert_error(
        &run(&["--input", "y.npy", "--output", "z.npy"]),
        "needs [N, 3, H, W]",
    );
    assert_error(
        &run(&["--input", "missing.npy", "--output", "z.npy"]),
        "missing.npy",
    );
    std::fs::write(dir.path().join("short.txt"), "a\nb\n").unwrap();
    assert_error(
        &run(&["--image", "img.png", "--labels", "short.txt"]),
        "2 labels for 1000 classes",
    );
    assert!(!dir.path().join("z.npy").exists());
    let wrong = gconv(
        &[
            "predict",
            "shufflenet_g3_wd4",
            "--weights",
            "w.safetensors",
            "--image",
            "img.png",
        ],
        dir.path(),
    );
    assert_error(&wrong, "shape");
    std::fs::write(dir.path().join("bad.safetensors"), b"garbage").unwrap();
    let bad = gconv(
        &[
            "predict",
            "shufflenet_g2_wd4",
            "--weights",
            "bad.safetensors",
            "--image",
            "img.png",
        ],
        dir.path(),
    );
    assert_error(&bad, "not a safetensors file");
}

#[test]
fn bench_train_prints_json_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = gconv(
        &[
            "bench",
            "train",
            "--model",
            "shufflenet_g1_wd4_cifar",
            "--batch-size",
            "4",
            "--input-size",
            "16",
            "16",
            "--repeat",
            "1",
            "--json",
        ],
        dir.path(),
    );
    assert_ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(
        (row["model"].as_str(), row["batch_size"].as_u64()),
        (Some("shufflenet_g1_wd4_cifar"), Some(4))
    );
    assert!(row["ms"].as_f64().unwrap() > 0.0 && row["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(row["split_batch"].as_bool(), Some(true));
    let small = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "train",
            "--model",
            "shufflenet_g1_wd4_cifar",
            "--batch-size",
            "3",
            "--input-size",
            "8",
            "8",
            "--repeat",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        gconv(&args, dir.path())
    };
    // Three images do not split into halves of two; whole, they run.
    assert_error(&small(&[]), "at least 4");
    let whole = small(&["--whole-batch"]);
    assert_ok(&whole);
    let rows: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    assert_eq!(rows[0]["split_batch"].as_bool(), Some(false));
    assert_error(
        &gconv(&["bench", "train", "--model", "nope"], dir.path()),
        "unknown model",
    );
}
