//! Datasets: IDX, CIFAR binary and image folders; seeded splits; augmentation; the embedded
//! Fashion-MNIST subset. Knows nothing of models.

mod augment;
mod cifar;
mod error;
mod folder;
mod idx;
mod images;
mod split;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

pub use augment::{
    Augmentation, Batch, Normalization, Placement, assemble_batch, assemble_unlabeled, make_batch,
};
pub use cifar::{Cifar100Labels, parse_cifar, read_cifar10, read_cifar100};
pub use error::DataError;
pub use folder::{decode_image, decode_image_in, is_image, read_folder, read_unlabeled_folder};
pub use idx::{encode_idx, idx_pair, maybe_gunzip, parse_idx, read_idx_pair, read_maybe_gzip};
pub use images::{ImageSet, UnlabeledSet};
pub use split::{Split, SplitConfig, draw_unlabeled, split};

/// The datasets `mmix` knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum DatasetName {
    /// The Fashion-MNIST subset compiled into the binary.
    FashionMnistMini,
    /// Fashion-MNIST (Zalando), from the IDX files.
    FashionMnist,
    /// MNIST digits, from the IDX files.
    Mnist,
    /// CIFAR-10, from the official binary files.
    Cifar10,
    /// CIFAR-100, from the official binary files.
    Cifar100,
    /// `train/<class>/` and `test/<class>/` image folders.
    Folder,
}

impl DatasetName {
    /// The side of the images it gives, before any `--pad-to`: its own for the built-in
    /// data sets, `image_size` (the images' resized side) for folders.
    pub fn image_side(&self, image_size: usize) -> usize {
        match self {
            DatasetName::FashionMnistMini | DatasetName::FashionMnist | DatasetName::Mnist => 28,
            DatasetName::Cifar10 | DatasetName::Cifar100 => 32,
            DatasetName::Folder => image_size,
        }
    }
}

impl FromStr for DatasetName {
    type Err = DataError;
    fn from_str(name: &str) -> Result<Self, DataError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "fashion-mnist-mini" => DatasetName::FashionMnistMini,
            "fashion-mnist" => DatasetName::FashionMnist,
            "mnist" => DatasetName::Mnist,
            "cifar10" | "cifar-10" => DatasetName::Cifar10,
            "cifar100" | "cifar-100" => DatasetName::Cifar100,
            "folder" => DatasetName::Folder,
            _ => return Err(DataError::UnknownDataset(name.to_string())),
        })
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetName::FashionMnistMini => "fashion-mnist-mini",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Folder => "folder",
        })
    }
}

const FASHION_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];
const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// How to read a dataset beyond its name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadOptions {
    /// Explicit location; else `$MMIX_DATA/<name>`; else the Debian location (Fashion-MNIST).
    pub data_dir: Option<PathBuf>,
    /// Target size of image-folder images.
    pub image_size: usize,
    /// CIFAR-100's 20 coarse labels instead of its 100 fine ones.
    pub cifar100_coarse: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            image_size: 32,
            cifar100_coarse: false,
        }
    }
}

/// A dataset's training and test splits with its class names and where it was read from.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Which data set.
    pub name: DatasetName,
    /// The official training split.
    pub train: ImageSet,
    /// The official test split.
    pub test: ImageSet,
    /// The class names, by label.
    pub class_names: Vec<String>,
    /// Where it was read from.
    pub source: String,
}

impl Dataset {
    /// How many classes it has.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The augmentation the paper's setups use: random crop (4 px at 32×32, 2 px at 28×28)
    /// and horizontal flip, except for MNIST digits, which a mirror would change.
    pub fn default_augmentation(&self) -> Augmentation {
        Augmentation {
            crop_padding: if self.train.size >= 32 { 4 } else { 2 },
            horizontal_flip: self.name != DatasetName::Mnist,
        }
    }
}

mod embedded {
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../assets/fashion-mnist-mini/train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../../assets/fashion-mnist-mini/train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] =
        include_bytes!("../../assets/fashion-mnist-mini/t10k-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] =
        include_bytes!("../../assets/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz");
}

fn embedded_pair(images: &[u8], labels: &[u8], what: &str) -> Result<ImageSet, DataError> {
    let name = |file: &str| PathBuf::from(format!("<embedded fashion-mnist-mini>/{what}-{file}"));
    let inflate = |bytes: &[u8], path: &Path| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
            .map_err(|e| DataError::io(path, e))?;
        Ok::<_, DataError>(out)
    };
    let (images_path, labels_path) = (name("images"), name("labels"));
    let (dims, pixels) = parse_idx(&images_path, &inflate(images, &images_path)?, 3)?;
    let (_, labels) = parse_idx(&labels_path, &inflate(labels, &labels_path)?, 1)?;
    Ok(ImageSet {
        pixels,
        labels: labels.into_iter().map(usize::from).collect(),
        channels: 1,
        size: dims[1],
    })
}

/// Finds the folder of a named dataset: the explicit one, `$MMIX_DATA/<name>`, or Debian's.
fn locate(name: DatasetName, options: &LoadOptions) -> Result<PathBuf, DataError> {
    let mut tried = Vec::new();
    if let Some(dir) = &options.data_dir {
        if dir.is_dir() {
            return Ok(dir.clone());
        }
        return Err(DataError::NotFound {
            name: name.to_string(),
            tried: format!("{} (--data-dir is not a folder)", dir.display()),
        });
    }
    if let Some(root) = std::env::var_os("MMIX_DATA") {
        let dir = PathBuf::from(root).join(name.to_string());
        if dir.is_dir() {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
    } else {
        tried.push("$MMIX_DATA/<name> (MMIX_DATA is unset)".into());
    }
    if name == DatasetName::FashionMnist {
        let dir = PathBuf::from(DEBIAN_FASHION_MNIST);
        if dir.is_dir() {
            return Ok(dir);
        }
        tried.push(format!(
            "{DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)"
        ));
    }
    Err(DataError::NotFound {
        name: name.to_string(),
        tried: tried.join(", "),
    })
}

/// The IDX file `stem` in `dir`, gzip-compressed or raw.
fn idx_file(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { dir.join(stem) }
}

fn read_idx_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let train = read_idx_pair(
        &idx_file(dir, "train-images-idx3-ubyte"),
        &idx_file(dir, "train-labels-idx1-ubyte"),
        10,
    )?;
    let test = read_idx_pair(
        &idx_file(dir, "t10k-images-idx3-ubyte"),
        &idx_file(dir, "t10k-labels-idx1-ubyte"),
        10,
    )?;
    if test.size != train.size {
        return Err(DataError::BadHeader {
            path: idx_file(dir, "t10k-images-idx3-ubyte"),
            reason: format!(
                "test images are {0}×{0}, training images {1}×{1}",
                test.size, train.size
            ),
        });
    }
    Ok((train, test))
}

/// Reads data set `name` from where `options` and the environment say.
pub fn load(name: DatasetName, options: &LoadOptions) -> Result<Dataset, DataError> {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let numbered = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
    if name == DatasetName::FashionMnistMini && options.data_dir.is_none() {
        use embedded::*;
        return Ok(Dataset {
            name,
            train: embedded_pair(TRAIN_IMAGES, TRAIN_LABELS, "train")?,
            test: embedded_pair(TEST_IMAGES, TEST_LABELS, "t10k")?,
            class_names: names(&FASHION_CLASSES),
            source: "embedded".into(),
        });
    }
    let dir = locate(name, options)?;
    let (train, test, class_names) = match name {
        DatasetName::FashionMnist | DatasetName::FashionMnistMini => {
            let (train, test) = read_idx_dir(&dir)?;
            (train, test, names(&FASHION_CLASSES))
        }
        DatasetName::Mnist => {
            let (train, test) = read_idx_dir(&dir)?;
            (train, test, numbered(10))
        }
        DatasetName::Cifar10 => {
            let (train, test) = read_cifar10(&dir)?;
            (train, test, names(&CIFAR10_CLASSES))
        }
        DatasetName::Cifar100 => {
            let labels = if options.cifar100_coarse {
                Cifar100Labels::Coarse
            } else {
                Cifar100Labels::Fine
            };
            let (train, test) = read_cifar100(&dir, labels)?;
            let classes = if options.cifar100_coarse { 20 } else { 100 };
            (train, test, numbered(classes))
        }
        DatasetName::Folder => read_folder(&dir, options.image_size)?,
    };
    Ok(Dataset {
        name,
        train,
        test,
        class_names,
        source: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests;
