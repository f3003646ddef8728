//! Image transforms with torchvision's semantics.

use crate::error::Result;
use crate::io::decode_image;
use image::imageops::{self, FilterType};
use std::path::Path;

/// torchvision's ImageNet channel means and standard deviations (RGB, on
/// values in [0, 1]).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision's ImageNet evaluation preset for an `[h, w]` input
/// (`Resize(256)`, `CenterCrop(224)`, `ToTensor`, `Normalize` at 224; other
/// sizes scale the resize by the same 256/224): the image's shorter side is
/// resized (bilinear, antialiased) to `round(min(h, w) · 256 / 224)`, the
/// centre `h × w` is cropped, and each RGB channel is normalised.
/// Returns `[3, h, w]` values, row-major.
pub fn imagenet_eval(path: &Path, [h, w]: [usize; 2]) -> Result<Vec<f32>> {
    let img = decode_image(path)?.into_rgb8();
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let short = (h.min(w) as f64 * 256.0 / 224.0).round();
    // torchvision: the shorter side becomes `short`, the longer one
    // `int(short · long / shorter)`; both at least the crop.
    let (rw, rh) = if iw <= ih {
        (short, (short * ih / iw).floor())
    } else {
        ((short * iw / ih).floor(), short)
    };
    let (rw, rh) = (rw.max(w as f64) as u32, rh.max(h as f64) as u32);
    let resized = imageops::resize(&img, rw, rh, FilterType::Triangle);
    let top = ((rh as f64 - h as f64) / 2.0).round() as u32;
    let left = ((rw as f64 - w as f64) / 2.0).round() as u32;
    let mut out = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = resized.get_pixel(left + x as u32, top + y as u32).0;
            for c in 0..3 {
                out[(c * h + y) * w + x] =
                    (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_eval_resizes_crops_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        // 80×40, left half red, right half blue.
        let img = image::RgbImage::from_fn(80, 40, |x, _| {
            if x < 40 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        img.save(&path).unwrap();
        let v = imagenet_eval(&path, [16, 16]).unwrap();
        assert_eq!(v.len(), 3 * 16 * 16);
        // Resized to 36×18 (shorter side round(16·256/224) = 18), centre
        // 16×16 from column 10: columns 0–7 red, 8–15 blue (blended at the seam).
        let red = |x: usize| v[8 * 16 + x] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
        let blue = |x: usize| v[(2 * 16 + 8) * 16 + x] * IMAGENET_STD[2] + IMAGENET_MEAN[2];
        assert!((red(0) - 1.0).abs() < 1e-5 && blue(0).abs() < 1e-5);
        assert!(red(15).abs() < 1e-5 && (blue(15) - 1.0).abs() < 1e-5);

        std::fs::write(&path, b"not a png").unwrap();
        let e = imagenet_eval(&path, [16, 16]).unwrap_err().to_string();
        assert!(e.contains("wide.png") && e.contains("decode"), "{e}");
    }
}
