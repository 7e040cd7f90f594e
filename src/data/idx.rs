//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use super::{DataError, ImageSet};

/// Reads a whole file, inflating it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = crate::fsio::read_regular(path, crate::fsio::data_file_bytes())
        .map_err(|e| DataError::io(path, e))?;
    maybe_gunzip(path, raw)
}

/// `raw` inflated when it starts with the gzip magic, else itself; `path` names it in errors.
pub fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file of unsigned bytes with `rank` dimensions; returns the dimensions and data.
pub fn parse_idx(path: &Path, bytes: &[u8], rank: u8) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let header_len = 4 + 4 * rank as usize;
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.into(),
            expected: header_len,
            actual: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != [0, 0, 8, rank] {
        return Err(DataError::BadMagic {
            path: path.into(),
            found: magic,
            rank,
        });
    }
    if bytes.len() < header_len {
        return Err(DataError::Truncated {
            path: path.into(),
            expected: header_len,
            actual: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::BadHeader {
            path: path.into(),
            reason: format!("dimensions {dims:?} overflow"),
        })?;
    let data = &bytes[header_len..];
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.into(),
            expected: header_len + expected,
            actual: bytes.len(),
        });
    }
    if data.len() > expected {
        return Err(DataError::TrailingBytes {
            path: path.into(),
            extra: data.len() - expected,
        });
    }
    Ok((dims, data.to_vec()))
}

/// Reads an images file and a labels file that must agree in count.
pub fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let images = read_maybe_gzip(images_path)?;
    let labels = read_maybe_gzip(labels_path)?;
    idx_pair(images_path, &images, labels_path, &labels, classes)
}

/// An images file and a labels file, as bytes (inflated), that must agree in count; the
/// paths name them in errors.
pub fn idx_pair(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
    classes: usize,
) -> Result<ImageSet, DataError> {
    let (dims, pixels) = parse_idx(images_path, images, 3)?;
    if dims[1] != dims[2] || dims[1] == 0 {
        return Err(DataError::BadHeader {
            path: images_path.into(),
            reason: format!(
                "images must be square and non-empty, found {}×{}",
                dims[1], dims[2]
            ),
        });
    }
    let (label_dims, labels) = parse_idx(labels_path, labels, 1)?;
    if label_dims[0] != dims[0] {
        return Err(DataError::CountMismatch {
            images_path: images_path.into(),
            images: dims[0],
            labels_path: labels_path.into(),
            labels: label_dims[0],
        });
    }
    if let Some(index) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::LabelOutOfRange {
            path: labels_path.into(),
            index,
            label: labels[index] as usize,
            classes,
        });
    }
    Ok(ImageSet {
        pixels,
        labels: labels.into_iter().map(usize::from).collect(),
        channels: 1,
        size: dims[1],
    })
}

/// Serialises an IDX file of unsigned bytes: how tests and the embedded set are written.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
