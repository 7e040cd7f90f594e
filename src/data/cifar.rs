//! CIFAR-10 and CIFAR-100 in their official binary formats.

use std::path::Path;

use super::{DataError, ImageSet};

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label byte to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    Coarse,
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
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
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
    let (offset, classes) = match labels {
        Cifar100Labels::Coarse => (0, 20),
        Cifar100Labels::Fine => (1, 100),
    };
    let mut train = empty();
    read_records(&dir.join("train.bin"), 2, offset, classes, &mut train)?;
    let mut test = empty();
    read_records(&dir.join("test.bin"), 2, offset, classes, &mut test)?;
    Ok((train, test))
}
