//! Data sets and the input pipeline: CIFAR-10 binary files, image folders, preprocessing,
//! augmentation and a background batch loader.

pub mod augment;
pub mod cifar;
pub mod image_folder;
pub mod loader;
pub mod preprocess;

pub use augment::CropFlip;
pub use cifar::{class_names, load_cifar_dir, load_cifar_files, CifarSet, Split};
pub use image_folder::{load_image_chw, ClassIndex, ImageFolder};
pub use loader::{Batch, BatchLoader, EpochBatches, ImageSet, LoaderConfig};
pub use preprocess::Normalize;
