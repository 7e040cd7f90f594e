//! Image folders: `<root>/train/<class>/*.png|jpg` and `<root>/test/<class>/…` (or `val/`).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{DataError, ImageSet};

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Class names: the sorted subfolders that hold at least one image.
pub fn class_names(split_dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for path in sorted_entries(split_dir)? {
        if path.is_dir() && sorted_entries(&path)?.iter().any(|p| is_image(p)) {
            names.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    if names.is_empty() {
        return Err(DataError::EmptyFolder {
            path: split_dir.into(),
        });
    }
    Ok(names)
}

/// Reads every image under `split_dir/<class>/`, resized to `size`×`size` RGB.
pub fn read_split(
    split_dir: &Path,
    classes: &[String],
    size: usize,
) -> Result<ImageSet, DataError> {
    let mut set = ImageSet {
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        size,
    };
    let plane = size * size;
    for (label, class) in classes.iter().enumerate() {
        for path in sorted_entries(&split_dir.join(class))? {
            if !is_image(&path) {
                continue;
            }
            let image = image::open(&path).map_err(|e| DataError::UnreadableImage {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let rgb = image
                .resize_exact(size as u32, size as u32, FilterType::Triangle)
                .to_rgb8();
            let start = set.pixels.len();
            set.pixels.resize(start + 3 * plane, 0);
            for (i, pixel) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    set.pixels[start + c * plane + i] = pixel[c];
                }
            }
            set.labels.push(label);
        }
    }
    if set.is_empty() {
        return Err(DataError::EmptyFolder {
            path: split_dir.into(),
        });
    }
    Ok(set)
}

/// Training and test splits of an image-folder dataset, with the class names.
pub fn read_folder(
    root: &Path,
    size: usize,
) -> Result<(ImageSet, ImageSet, Vec<String>), DataError> {
    let train_dir = root.join("train");
    let classes = class_names(&train_dir)?;
    let test_dir = ["test", "val"]
        .iter()
        .map(|name| root.join(name))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::NotFound {
            name: "test split".into(),
            tried: format!(
                "{} and {}",
                root.join("test").display(),
                root.join("val").display()
            ),
        })?;
    let test_classes = class_names(&test_dir)?;
    if test_classes.iter().any(|c| !classes.contains(c)) {
        return Err(DataError::ClassMismatch {
            path: test_dir.clone(),
            found: "the test split".into(),
            found_classes: test_classes,
            expected: classes,
        });
    }
    let train = read_split(&train_dir, &classes, size)?;
    let test = read_split(&test_dir, &classes, size)?;
    Ok((train, test, classes))
}
