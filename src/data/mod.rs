//! Data for the networks: data set readers (IDX, CIFAR, image folders),
//! batching with augmentation, and image preprocessing.

mod batch;
mod cifar;
mod dataset;
mod folder;
mod idx;
mod transforms;

pub use batch::{Augment, Batch, Normalize, batch, epoch_order};
pub use dataset::{Dataset, Kind, Split};
pub use idx::{Idx, encode_idx, read_idx};
pub use transforms::{IMAGENET_MEAN, IMAGENET_STD, imagenet_eval};
