//! Images in and out, with MATLAB's conventions: `rgb2gray` weights,
//! `im2double` scaling, and `imshow`'s clipping to [0, 1] on output.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Luma, Rgb};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::path::Path;

/// How colour images become arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorMode {
    /// One grey plane: MATLAB `rgb2gray` (ITU-R BT.601 luma, rounded to the
    /// image's integer type) of colour images; grey images as they are.
    #[default]
    Gray,
    /// Every colour channel separately (`[H, W, 3]`); alpha is dropped.
    PerChannel,
}

/// MATLAB `rgb2gray` weights for R, G and B.
const RGB2GRAY: [f64; 3] = [0.298936021293775, 0.587043074451121, 0.114020904255103];

/// Reads a PNG or JPEG as values in [0, 1] (`im2double`): shape `[H, W]`
/// for grey output, `[H, W, 3]` for colour images in
/// [`ColorMode::PerChannel`]. 16-bit images keep their precision.
pub fn read_image(path: &Path, mode: ColorMode) -> Result<ArrayD<f64>> {
    let img = decode_image(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let sixteen = matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    let max = if sixteen { 65535.0 } else { 255.0 };
    let colour = img.color().has_color();
    let (shape, values): (Vec<usize>, Vec<f64>) = if !colour {
        let v = if sixteen {
            img.into_luma16()
                .into_raw()
                .into_iter()
                .map(f64::from)
                .collect()
        } else {
            img.into_luma8()
                .into_raw()
                .into_iter()
                .map(f64::from)
                .collect()
        };
        (vec![h, w], v)
    } else {
        let rgb: Vec<f64> = if sixteen {
            img.into_rgb16()
                .into_raw()
                .into_iter()
                .map(f64::from)
                .collect()
        } else {
            img.into_rgb8()
                .into_raw()
                .into_iter()
                .map(f64::from)
                .collect()
        };
        match mode {
            ColorMode::PerChannel => (vec![h, w, 3], rgb),
            ColorMode::Gray => {
                let grey = rgb
                    .chunks_exact(3)
                    .map(|p| {
                        (RGB2GRAY[0] * p[0] + RGB2GRAY[1] * p[1] + RGB2GRAY[2] * p[2])
                            .round()
                            .min(max)
                    })
                    .collect();
                (vec![h, w], grey)
            }
        }
    };
    let scaled = values.into_iter().map(|v| v / max).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), scaled).expect("pixel count matches the shape"))
}

/// Decodes an image file of any supported format (detected from its
/// contents); unreadable or corrupt files are errors naming the file.
pub fn decode_image(path: &Path) -> Result<DynamicImage> {
    ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))
}

/// Writes `[H, W]` (grey) or `[H, W, 3]` (RGB) values as an 8-bit PNG,
/// clipped to [0, 1] as `imshow` displays them (NaN as 0), atomically.
pub fn write_png(path: &Path, img: &ArrayViewD<f64>) -> Result<()> {
    let to_u8 = |v: f64| {
        if v.is_nan() {
            0
        } else {
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    let shape = img.shape();
    let (h, w, rgb) = match *shape {
        [h, w] => (h, w, false),
        [h, w, 3] => (h, w, true),
        _ => {
            return Err(Error::invalid(format!(
                "an image must have shape [H, W] or [H, W, 3], got {shape:?}"
            )));
        }
    };
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "cannot write an empty image ({h}×{w}) to {}",
            path.display()
        )));
    }
    let bytes: Vec<u8> = img.as_standard_layout().iter().map(|&v| to_u8(v)).collect();
    let (w32, h32) = (w as u32, h as u32);
    let dynimg = if rgb {
        ImageBuffer::<Rgb<u8>, _>::from_raw(w32, h32, bytes).map(DynamicImage::ImageRgb8)
    } else {
        ImageBuffer::<Luma<u8>, _>::from_raw(w32, h32, bytes).map(DynamicImage::ImageLuma8)
    }
    .expect("pixel count matches the shape");
    write_atomic(path, |w| {
        let mut buf = Vec::new();
        dynimg
            .write_to(&mut std::io::Cursor::new(&mut buf), ImageFormat::Png)
            .map_err(|e| Error::format(path, format!("cannot encode PNG: {e}")))?;
        w.write_all(&buf).map_err(|e| Error::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_conversion_rounds_like_matlab() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rgb.png");
        let img = ImageBuffer::<Rgb<u8>, _>::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap();
        img.save(&p).unwrap();
        let g = read_image(&p, ColorMode::Gray).unwrap();
        assert_eq!(g.shape(), &[1, 2]);
        // round(0.298936 * 255) = 76; round(0.2989*10 + 0.5870*200 + 0.1140*30) = 124
        assert_eq!(g[[0, 0]], 76.0 / 255.0);
        assert_eq!(g[[0, 1]], 124.0 / 255.0);
        let c = read_image(&p, ColorMode::PerChannel).unwrap();
        assert_eq!(c.shape(), &[1, 2, 3]);
        assert_eq!(c[[0, 1, 1]], 200.0 / 255.0);
    }

    #[test]
    fn png_round_trip_clips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.png");
        let a = ndarray::arr2(&[[-1.0, 0.0, 0.5], [1.0, 2.0, f64::NAN]]).into_dyn();
        write_png(&p, &a.view()).unwrap();
        let back = read_image(&p, ColorMode::Gray).unwrap();
        assert_eq!(
            back.as_slice().unwrap(),
            &[0.0, 0.0, 128.0 / 255.0, 1.0, 1.0, 0.0]
        );
    }

    #[test]
    fn corrupt_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let msg = read_image(&p, ColorMode::Gray).unwrap_err().to_string();
        assert!(msg.contains("bad.png"), "{msg}");
    }
}
