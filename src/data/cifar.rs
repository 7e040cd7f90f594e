//! CIFAR-10 and CIFAR-100 in their official binary formats.

use std::path::Path;

use super::{DataError, ImageSet};

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label byte to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 20 superclasses.
    Coarse,
    /// The 100 classes.
    Fine,
}

/// Reads CIFAR records: `label_bytes` label bytes then 3072 pixel bytes (R, G, B planes).
fn read_records(
    path: &Path,
    label_bytes: usize,
    label_offset: usize,
    classes: usize,
    into: &mut ImageSet,
) -> Result<(), DataError> {
    let bytes = crate::fsio::read_regular(path, crate::fsio::data_file_bytes())
        .map_err(|e| DataError::io(path, e))?;
    parse_records(path, &bytes, label_bytes, label_offset, classes, into)
}

/// [`read_records`] of bytes already read; `path` names them in errors.
fn parse_records(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
    label_offset: usize,
    classes: usize,
    into: &mut ImageSet,
) -> Result<(), DataError> {
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::Truncated {
            path: path.into(),
            expected: bytes.len().div_ceil(record).max(1) * record,
            actual: bytes.len(),
        });
    }
    for (index, chunk) in bytes.chunks_exact(record).enumerate() {
        let label = chunk[label_offset] as usize;
        if label >= classes {
            return Err(DataError::LabelOutOfRange {
                path: path.into(),
                index,
                label,
                classes,
            });
        }
        into.labels.push(label);
        into.pixels.extend_from_slice(&chunk[label_bytes..]);
    }
    Ok(())
}

fn empty() -> ImageSet {
    ImageSet {
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        size: 32,
    }
}

/// The records of one CIFAR file as bytes: CIFAR-10's, or with `cifar100` CIFAR-100's with
/// those labels; `path` names it in errors.
pub fn parse_cifar(
    path: &Path,
    bytes: &[u8],
    cifar100: Option<Cifar100Labels>,
) -> Result<ImageSet, DataError> {
    let (label_bytes, offset, classes) = match cifar100 {
        None => (1, 0, 10),
        Some(labels) => cifar100_layout(labels),
    };
    let mut set = empty();
    parse_records(path, bytes, label_bytes, offset, classes, &mut set)?;
    Ok(set)
}

/// Label bytes per record, the offset of the label used, and the classes.
fn cifar100_layout(labels: Cifar100Labels) -> (usize, usize, usize) {
    match labels {
        Cifar100Labels::Coarse => (2, 0, 20),
        Cifar100Labels::Fine => (2, 1, 100),
    }
}

/// CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` in `dir`.
pub fn read_cifar10(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let mut train = empty();
    for i in 1..=5 {
        read_records(
            &dir.join(format!("data_batch_{i}.bin")),
            1,
            0,
            10,
            &mut train,
        )?;
    }
    let mut test = empty();
    read_records(&dir.join("test_batch.bin"), 1, 0, 10, &mut test)?;
    Ok((train, test))
}

/// CIFAR-100: `train.bin` and `test.bin` in `dir`, each record `coarse, fine, pixels`.
pub fn read_cifar100(
    dir: &Path,
    labels: Cifar100Labels,
) -> Result<(ImageSet, ImageSet), DataError> {
    let (label_bytes, offset, classes) = cifar100_layout(labels);
    let mut train = empty();
    read_records(
        &dir.join("train.bin"),
        label_bytes,
        offset,
        classes,
        &mut train,
    )?;
    let mut test = empty();
    read_records(
        &dir.join("test.bin"),
        label_bytes,
        offset,
        classes,
        &mut test,
    )?;
    Ok((train, test))
}
