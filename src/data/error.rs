use std::path::PathBuf;

/// Everything that can be wrong with a dataset on disk, each naming the file and the reason.
// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("--pad-to {to} is smaller than the images ({size}×{size})")]
    PadBelowSize { to: usize, size: usize },
    // The reason is in the message, not a `source`: printed as a chain it would show twice.
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{}: not an IDX file of unsigned bytes (magic {found:02x?}, expected [00, 00, 08, {rank:02x}])", path.display())]
    BadMagic {
        path: PathBuf,
        found: [u8; 4],
        rank: u8,
    },
    #[error("{}: truncated: {expected} bytes expected, {actual} found", path.display())]
    Truncated {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("{}: {extra} bytes after the last record", path.display())]
    TrailingBytes { path: PathBuf, extra: usize },
    #[error("{}: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{} has {images} images but {} has {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    #[error("{}: label {label} at record {index} is out of range for {classes} classes", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: usize,
        classes: usize,
    },
    #[error("{}: no class folders with images in it", path.display())]
    EmptyFolder { path: PathBuf },
    #[error("{}: a class folder without images (.png, .jpg, .jpeg); add its images or remove it, so that no class is dropped unseen", path.display())]
    EmptyClass { path: PathBuf },
    #[error("{}: no PNG or JPEG images in it (an unlabelled folder holds them directly, not in subfolders)", path.display())]
    NoUnlabeledImages { path: PathBuf },
    #[error("{}: cannot read image: {reason}", path.display())]
    UnreadableImage { path: PathBuf, reason: String },
    #[error("{}: {found} has classes {found_classes:?} but the training split has {expected:?}", path.display())]
    ClassMismatch {
        path: PathBuf,
        found: String,
        found_classes: Vec<String>,
        expected: Vec<String>,
    },
    #[error(transparent)]
    Memory(#[from] crate::machine::MemoryError),
    #[error("dataset '{name}' not found; looked in {tried}")]
    NotFound { name: String, tried: String },
    #[error(
        "unknown dataset '{0}': expected fashion-mnist-mini, fashion-mnist, mnist, cifar10, cifar100 or folder"
    )]
    UnknownDataset(String),
    #[error("{}: no folder for class '{class}', which the training split has", path.display())]
    MissingClass { path: PathBuf, class: String },
    #[error("{0}")]
    Split(String),
    #[error("{0}")]
    BadOption(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, reason: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            reason,
        }
    }
}
