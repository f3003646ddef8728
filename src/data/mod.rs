//! Data for the networks: image preprocessing (and, with training, the
//! data set readers and augmentation).

mod transforms;

pub use transforms::{IMAGENET_MEAN, IMAGENET_STD, imagenet_eval};
