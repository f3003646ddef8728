//! Reading and writing arrays and images. Every writer goes through
//! [`write_atomic`]: a reader never sees a half-written file.

mod atomic;
mod image;
mod npy;

pub use atomic::write_atomic;
pub use image::{ColorMode, read_image, write_png};
pub use npy::{read_npy, write_npy};
