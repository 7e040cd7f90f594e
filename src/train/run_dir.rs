//! What a run folder holds, by name. mmix writes, reads and removes only these entries: a
//! folder it did not make is never emptied, and a link among them is refused, never followed.

use std::path::{Path, PathBuf};

/// The run's resolved configuration; its presence makes a folder a run folder.
pub const CONFIG: &str = "config.json";
/// The headline and one line per epoch.
pub const LOG: &str = "train.log";
/// The checkpoints (`epoch-*` folders) and the `latest` pointer.
pub const CHECKPOINTS: &str = "checkpoint";
/// The final weights, with PyTorch's names.
pub const WEIGHTS: &str = "model.safetensors";
pub const METRICS: &str = "metrics.csv";
pub const SUMMARY: &str = "summary.json";
pub const EVALUATION: &str = "evaluation.json";
pub const CURVES: &str = "curves.png";
pub const RELIABILITY: &str = "reliability.png";
pub const SPECTRUM: &str = "spectrum.png";
/// The run's exact stream, with `--trace` (see [`crate::train::trace`]).
pub const TRACE: &str = "trace";

/// Every entry a run writes into its folder.
pub const OWN_ENTRIES: [&str; 11] = [
    CONFIG,
    LOG,
    CHECKPOINTS,
    WEIGHTS,
    METRICS,
    SUMMARY,
    EVALUATION,
    CURVES,
    RELIABILITY,
    SPECTRUM,
    TRACE,
];

/// Why a folder cannot be used as a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "{} already holds a run; continue it with `mmix train --resume {}` or choose another --out",
        dir.display(),
        dir.display()
    )]
    HoldsRun { dir: PathBuf },
    #[error(
        "{} is not empty (it holds {listing}); a new run needs a new or empty folder, so nothing of yours is overwritten",
        dir.display()
    )]
    NotEmpty { dir: PathBuf, listing: String },
    #[error("{} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error(
        "{} is a symbolic link; mmix writes and removes only its own entries of a run folder and does not follow links there",
        path.display()
    )]
    Link { path: PathBuf },
    #[error("{} is not an mmix run folder: cannot read {}: {reason}", dir.display(), path.display())]
    NotARun {
        dir: PathBuf,
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |reason| RunDirError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// What a fresh run found at its folder's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the run makes the folder, and may remove it again.
    Absent,
    /// An empty folder the user made: the run removes only its own entries from it.
    Empty,
}

/// What a run's `config.json` says: the configuration it was trained under and the data as
/// it saw it. Fields it holds beyond these (provenance, versions) are read by what needs them.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RunRecord {
    pub train: super::TrainConfig,
    pub dataset: DataRecord,
}

/// The data a run trained on, as its `config.json` records it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct DataRecord {
    /// The class names, by label.
    pub classes: Vec<String>,
    /// `[channels, height, width]` of the images the network takes.
    pub image_shape: [usize; 3],
    pub normalization: crate::data::Normalization,
}

/// Reads the `config.json` of the run folder `dir`. A saved configuration passes the checks
/// a new one does: it may have been edited.
pub fn read_record(dir: &Path) -> Result<RunRecord, RunDirError> {
    let path = dir.join(CONFIG);
    let text = crate::fsio::read_regular_text(&path).map_err(|reason| RunDirError::NotARun {
        dir: dir.to_path_buf(),
        path: path.clone(),
        reason,
    })?;
    let bad = |reason: String| RunDirError::BadRecord {
        path: path.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let train: super::TrainConfig = serde_json::from_value(value["train"].clone())
        .map_err(|e| bad(format!("not an mmix run configuration ({e})")))?;
    train.validate().map_err(bad)?;
    // Folders written before the data was recorded hold the configuration alone.
    let dataset: DataRecord = serde_json::from_value(value["dataset"].clone())
        .map_err(|e| bad(format!("no record of the run's data ({e})")))?;
    let [channels, height, width] = dataset.image_shape;
    let consistent = channels > 0
        && height > 0
        && height == width
        && dataset.normalization.mean.len() == channels
        && dataset.normalization.std.len() == channels
        && dataset
            .normalization
            .std
            .iter()
            .all(|s| s.is_finite() && *s > 0.0)
        && !dataset.classes.is_empty();
    if !consistent {
        return Err(bad(format!(
            "its record of the data (image shape {:?}, {} classes, normalisation of {} channels) does not hold together",
            dataset.image_shape,
            dataset.classes.len(),
            dataset.normalization.mean.len()
        )));
    }
    Ok(RunRecord { train, dataset })
}

/// Checks that `dir` may take a new run: it does not exist, or is an empty folder.
pub fn check_fresh(dir: &Path) -> Result<Found, RunDirError> {
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(dir).is_ok() {
                // A link whose target is missing: creating the folder would follow it.
                return Err(RunDirError::Link {
                    path: dir.to_path_buf(),
                });
            }
            return Ok(Found::Absent);
        }
        Err(e) => return Err(io(dir)(e)),
    };
    if !metadata.is_dir() {
        return Err(RunDirError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    if names.iter().any(|name| name == CONFIG) {
        return Err(RunDirError::HoldsRun {
            dir: dir.to_path_buf(),
        });
    }
    names.sort();
    let shown = names.len().min(3);
    let mut listing = names[..shown].join(", ");
    if names.len() > shown {
        listing.push_str(&format!(" and {} more", names.len() - shown));
    }
    Err(RunDirError::NotEmpty {
        dir: dir.to_path_buf(),
        listing,
    })
}

/// Checks that none of a run folder's own entries is a symbolic link (or, for the checkpoint
/// folder, anything but a folder): writing through one would change files outside the run.
pub fn check_own_entries(dir: &Path) -> Result<(), RunDirError> {
    for name in OWN_ENTRIES {
        let path = dir.join(name);
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.file_type().is_symlink() {
            return Err(RunDirError::Link { path });
        }
        if name == CHECKPOINTS && !metadata.is_dir() {
            return Err(RunDirError::NotAFolder { path });
        }
    }
    Ok(())
}

/// Removes what a fresh run wrote into `dir` before it could keep anything (no checkpoint):
/// its own entries, and the folder itself when the run made it. Links are removed as links.
pub fn remove_unfinished(dir: &Path, found: Found) -> Result<(), RunDirError> {
    for name in OWN_ENTRIES {
        let path = dir.join(name);
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let removed = if metadata.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    if found == Found::Absent {
        // Fails, harmlessly, if anything else appeared in the folder meanwhile.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_run_takes_only_a_missing_or_empty_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        assert_eq!(check_fresh(&dir).unwrap(), Found::Absent);
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(check_fresh(&dir).unwrap(), Found::Empty);
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        let refused = check_fresh(&dir).unwrap_err().to_string();
        assert!(refused.contains("notes.txt"), "{refused}");
        std::fs::write(dir.join(CONFIG), b"{}").unwrap();
        assert!(matches!(
            check_fresh(&dir),
            Err(RunDirError::HoldsRun { .. })
        ));
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            check_fresh(&file),
            Err(RunDirError::NotAFolder { .. })
        ));
    }

    #[test]
    fn links_among_own_entries_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let (dir, elsewhere) = (root.path().join("run"), root.path().join("elsewhere"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        check_own_entries(&dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(CHECKPOINTS)).unwrap();
        assert!(matches!(
            check_own_entries(&dir),
            Err(RunDirError::Link { .. })
        ));
        std::fs::remove_file(dir.join(CHECKPOINTS)).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("log"), dir.join(LOG)).unwrap();
        assert!(matches!(
            check_own_entries(&dir),
            Err(RunDirError::Link { .. })
        ));
    }

    #[test]
    fn an_unfinished_run_leaves_the_users_entries_and_removes_its_own() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        std::fs::create_dir_all(dir.join(CHECKPOINTS)).unwrap();
        std::fs::write(dir.join(CONFIG), b"{}").unwrap();
        std::fs::write(dir.join("mine.txt"), b"mine").unwrap();
        remove_unfinished(&dir, Found::Absent).unwrap();
        assert_eq!(std::fs::read(dir.join("mine.txt")).unwrap(), b"mine");
        assert!(!dir.join(CONFIG).exists() && !dir.join(CHECKPOINTS).exists());
        std::fs::remove_file(dir.join("mine.txt")).unwrap();
        std::fs::write(dir.join(LOG), b"log").unwrap();
        remove_unfinished(&dir, Found::Absent).unwrap();
        assert!(!dir.exists());
    }
}
