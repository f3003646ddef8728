//! Reading and writing arrays and images. Every writer goes through
//! [`write_atomic`]: a reader never sees a half-written file.

mod atomic;
mod image;
mod npy;
mod safetensors;

pub use atomic::write_atomic;
pub use image::{ColorMode, decode_image, read_image, write_png};
pub use npy::{read_npy, write_npy};
pub use safetensors::{Entry, Loaded, NamedArrays, StoredAs, read_safetensors, write_safetensors};
