//! Image folders: `<root>/train/<class>/*.png|jpg` and `<root>/test/<class>/…` (or `val/`).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{DataError, ImageSet, UnlabeledSet};

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

/// Whether `path` names a PNG or JPEG file, by its extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Class names: the sorted subfolders that hold at least one image.
/// A class folder without images is refused by name, not dropped (its class would vanish
/// from the labels); hidden folders (`.name`) are passed over.
pub(crate) fn class_names(split_dir: &Path) -> Result<Vec<String>, DataError> {
    let (mut names, mut empty) = (Vec::new(), Vec::new());
    for path in sorted_entries(split_dir)? {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        match sorted_entries(&path)?.iter().any(|p| is_image(p)) {
            true => names.push(name),
            false => empty.push(path),
        }
    }
    if names.is_empty() {
        return Err(DataError::EmptyFolder {
            path: split_dir.into(),
        });
    }
    if let Some(path) = empty.into_iter().next() {
        return Err(DataError::EmptyClass { path });
    }
    Ok(names)
}

/// How a JPEG's first frame is coded, where the decoder cannot read it: the frame markers
/// SOF3 to SOF15 other than the tables' (lossless, differential or arithmetic coding).
pub(super) fn unsupported_jpeg_coding(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut at = 2;
    // Segments: `FF marker length(2) …`; the frame header comes before the first scan.
    while let [0xFF, marker, high, low, ..] = *bytes.get(at..)? {
        match marker {
            0xC0..=0xC2 | 0xDA => return None,
            0xC3 | 0xC7 => return Some("lossless"),
            0xC5 | 0xC6 => return Some("differential (hierarchical)"),
            0xC9..=0xCB | 0xCD..=0xCF => return Some("arithmetic-coded"),
            _ => at += 2 + usize::from(u16::from_be_bytes([high, low])),
        }
    }
    None
}

/// A decoder's error as a line for people: the PNG decoder names a chunk by its Rust debug
/// form (`ChunkType { type: IHDR, critical: true, … }`), which becomes `IHDR`.
pub(super) fn decoder_message(text: &str) -> String {
    const CHUNK: &str = "ChunkType { type: ";
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(CHUNK) {
        out.push_str(&rest[..start]);
        let after = &rest[start + CHUNK.len()..];
        let name_end = after.find([',', ' ', '}']).unwrap_or(after.len());
        out.push_str(&after[..name_end]);
        rest = after.find('}').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// An encoded PNG or JPEG image as planar RGB bytes (`[3, size, size]`), resized to
/// `size`×`size`; `path` names it in errors.
pub fn decode_image(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>, DataError> {
    decode_image_in(path, bytes, size, 3)
}

/// [`decode_image`] in `channels` planes: 3 for RGB, 1 for grey (its luma).
pub fn decode_image_in(
    path: &Path,
    bytes: &[u8],
    size: usize,
    channels: usize,
) -> Result<Vec<u8>, DataError> {
    if size == 0 {
        return Err(DataError::BadOption(
            "--image-size must be at least 1".into(),
        ));
    }
    let unreadable = |reason: String| DataError::UnreadableImage {
        path: path.to_path_buf(),
        reason,
    };
    let side = u32::try_from(size).map_err(|_| unreadable(format!("size {size} is too large")))?;
    // Each decoded image is held whole: a header claiming gigapixels must not take the memory.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(decoder_message(&e.to_string())))?;
    reader.limits(limits);
    if let Some(coding) = unsupported_jpeg_coding(bytes) {
        // The decoder skips such a frame and then reports a confusing error about its scan.
        return Err(unreadable(format!(
            "a {coding} JPEG, which mmix's decoder does not read (it reads baseline and progressive JPEG): convert it to PNG or to a baseline JPEG"
        )));
    }
    let image = crate::contained::contain(|| reader.decode())
        .map_err(|panic| unreadable(format!("the decoder failed on it ({panic})")))?
        .map_err(|e| unreadable(decoder_message(&e.to_string())))?;
    let image = image.resize_exact(side, side, FilterType::Triangle);
    if channels == 1 {
        return Ok(image.to_luma8().into_raw());
    }
    if channels != 3 {
        return Err(unreadable(format!(
            "images of {channels} channels cannot be made from it (1 or 3)"
        )));
    }
    let rgb = image.to_rgb8();
    let plane = size * size;
    let mut planar = vec![0; 3 * plane];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            planar[c * plane + i] = pixel[c];
        }
    }
    Ok(planar)
}

/// The largest width or height of an image the folder reader decodes: beyond any photo a
/// classifier is trained on, and a bound on the time a hostile header can cost (the fuzzer's
/// slowest inputs claimed sides above 10,000 pixels).
const MAX_SIDE: u32 = 8_192;
/// The largest image file read: far beyond any photo's encoding at `MAX_SIDE`.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// The most memory the decoder may take for one image.
const MAX_DECODED_BYTES: u64 = 256 << 20;

/// Reads every image under `split_dir/<class>/`, resized to `size`×`size` RGB.
pub(crate) fn read_split(
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
    for (label, class) in classes.iter().enumerate() {
        let class_dir = split_dir.join(class);
        if !class_dir.is_dir() {
            return Err(DataError::MissingClass {
                path: class_dir,
                class: class.clone(),
            });
        }
        for path in sorted_entries(&class_dir)? {
            if !is_image(&path) {
                continue;
            }
            let bytes = crate::fsio::read_regular(&path, MAX_FILE_BYTES)
                .map_err(|e| DataError::io(&path, e))?;
            set.pixels.extend(decode_image(&path, &bytes, size)?);
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

/// The image files under `split_dir/<class>/`, counted before any is decoded.
fn count_images(split_dir: &Path, classes: &[String]) -> Result<usize, DataError> {
    let mut count = 0;
    for class in classes {
        let class_dir = split_dir.join(class);
        if class_dir.is_dir() {
            count += sorted_entries(&class_dir)?
                .iter()
                .filter(|p| is_image(p))
                .count();
        }
    }
    Ok(count)
}

/// Training and test splits of an image-folder dataset, with the class names.
pub fn read_folder(
    root: &Path,
    size: usize,
) -> Result<(ImageSet, ImageSet, Vec<String>), DataError> {
    if size == 0 {
        return Err(DataError::BadOption(
            "--image-size must be at least 1".into(),
        ));
    }
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
    let images = count_images(&train_dir, &classes)? + count_images(&test_dir, &classes)?;
    let bytes = (images as u64).saturating_mul(3 * (size as u64).saturating_pow(2));
    crate::machine::check_fits(
        format!("{images} images of {size}×{size} pixels (--image-size {size})"),
        bytes,
        "lower --image-size",
    )?;
    let train = read_split(&train_dir, &classes, size)?;
    let test = read_split(&test_dir, &classes, size)?;
    Ok((train, test, classes))
}

/// The PNG and JPEG images directly in `dir` (no class subfolders; other files and folders
/// are passed over), in file-name order, as `channels` planes of `size`×`size`: the
/// unlabelled pool of `--unlabeled-dir`.
pub fn read_unlabeled_folder(
    dir: &Path,
    size: usize,
    channels: usize,
) -> Result<UnlabeledSet, DataError> {
    // Every entry named as an image is read, as the labelled folders' are: a FIFO, a device
    // or a broken link among them is refused by name rather than passed over.
    let files: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image(p) && !p.is_dir())
        .collect();
    if files.is_empty() {
        return Err(DataError::NoUnlabeledImages { path: dir.into() });
    }
    let bytes = (files.len() as u64).saturating_mul(channels as u64 * (size as u64).pow(2));
    crate::machine::check_fits(
        format!("{} unlabelled images of {size}×{size} pixels", files.len()),
        bytes,
        "use fewer unlabelled images",
    )?;
    let mut pixels = Vec::with_capacity(bytes as usize);
    for file in &files {
        let encoded =
            crate::fsio::read_regular(file, MAX_FILE_BYTES).map_err(|e| DataError::io(file, e))?;
        pixels.extend(decode_image_in(file, &encoded, size, channels)?);
    }
    Ok(UnlabeledSet {
        pixels,
        channels,
        size,
    })
}
