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
/// Every epoch's record, as CSV.
pub const METRICS: &str = "metrics.csv";
/// A semi-supervised run's mean teacher, as [`WEIGHTS`] holds the student.
pub const TEACHER_WEIGHTS: &str = "teacher.safetensors";
/// What the run is and how it ended.
pub const SUMMARY: &str = "summary.json";
/// The final evaluation.
pub const EVALUATION: &str = "evaluation.json";
/// Loss and accuracy curves.
pub const CURVES: &str = "curves.png";
/// The final reliability diagram.
pub const RELIABILITY: &str = "reliability.png";
/// The final spectrum.
pub const SPECTRUM: &str = "spectrum.png";
/// The run's exact stream, with `--trace` (see [`crate::train::trace`]).
pub const TRACE: &str = "trace";

/// Every entry a run writes into its folder.
pub(crate) const OWN_ENTRIES: [&str; 12] = [
    CONFIG,
    crate::fsio::LOCK,
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
// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
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
    #[error(transparent)]
    Lock(#[from] crate::fsio::LockError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |reason| RunDirError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// What a fresh run found at its folder's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing: the run makes the folder, and may remove it again.
    Absent,
    /// An empty folder the user made: the run removes only its own entries from it.
    Empty,
}

/// What a run's `config.json` says: the configuration it was trained under and the data as
/// it saw it. Fields it holds beyond these (provenance, versions) are read by what needs them.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct RunRecord {
    /// The run's configuration.
    pub train: super::TrainConfig,
    /// The data it trained on.
    pub dataset: DataRecord,
}

/// The data a run trained on, as its `config.json` records it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct DataRecord {
    /// The class names, by label.
    pub classes: Vec<String>,
    /// `[channels, height, width]` of the images the network takes.
    pub image_shape: [usize; 3],
    /// The per-channel statistics the images were normalised by.
    pub normalization: crate::data::Normalization,
    /// The images' side before `--pad-to` padded them to `image_shape`'s; recorded for padded
    /// runs only (older padded runs have none).
    #[serde(default)]
    pub unpadded_size: Option<usize>,
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
    train.validate().map_err(|e| bad(e.to_string()))?;
    // Folders written before the data was recorded hold the configuration alone.
    let dataset: DataRecord = serde_json::from_value(value["dataset"].clone())
        .map_err(|e| bad(format!("no record of the run's data ({e})")))?;
    let [channels, height, width] = dataset.image_shape;
    // No larger than the options that wrote it give: the network's every map is sized by it.
    let side = train
        .pad_to
        .unwrap_or_else(|| train.dataset.image_side(train.image_size));
    let consistent = matches!(channels, 1 | 3)
        && height > 0
        && height <= side
        && dataset
            .unpadded_size
            .is_none_or(|unpadded| unpadded <= height)
        && dataset.normalization.mean.iter().all(|m| m.is_finite())
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
pub(crate) fn check_fresh(dir: &Path) -> Result<Found, RunDirError> {
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
    // A lock file alone is what a run that stopped before writing its configuration left.
    names.retain(|name| name != crate::fsio::LOCK);
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
pub(crate) fn check_own_entries(dir: &Path) -> Result<(), RunDirError> {
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
pub(crate) fn remove_unfinished(dir: &Path, found: Found) -> Result<(), RunDirError> {
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

/// What `config.json` holds: the resolved configuration, the data as the run saw it, and
/// the provenance of the code and machine that trained it.
pub fn config_record(
    config: &super::TrainConfig,
    data: &super::RunData,
    device: &burn::tensor::Device,
) -> serde_json::Value {
    let mut record = serde_json::json!({
        "train": config,
        "crate_version": env!("CARGO_PKG_VERSION"),
        "provenance": crate::machine::Provenance::here(device, config.precision),
        "dataset": {
            "source": data.dataset.source,
            "classes": data.dataset.class_names,
            "image_shape": [data.train.channels, data.train.size, data.train.size],
            "train_examples": data.train.len(),
            "valid_examples": data.valid.as_ref().map_or(0, |v| v.len()),
            "test_examples": data.dataset.test.len(),
            "normalization": data.normalization,
            "augmentation": data.augmentation,
        },
    });
    // New images are read at this size, then padded as the training images were.
    if config.pad_to.is_some() {
        record["dataset"]["unpadded_size"] = data.unpadded_size.into();
    }
    record
}

/// A run folder as the library writes it, for `mmix train` and any caller of
/// [`super::Trainer`] alike: `config.json` when it is made, the weights and reports
/// after every checkpoint, the final evaluation at the end. Whatever trained into it, `mmix
/// eval`, `compare` and `predict` read it.
pub struct RunDir {
    dir: PathBuf,
    /// What a fresh run found at the path (to leave it so if it keeps nothing); `None` for a
    /// run that continues.
    found: Option<Found>,
    /// Held while the run works in the folder: a second process is refused.
    _lock: crate::fsio::FolderLock,
}

impl RunDir {
    /// A new run in `dir`, which must not exist or be empty: makes the folder and writes
    /// `config.json`. On failure the folder is left as it was found.
    pub fn create(
        dir: &Path,
        config: &super::TrainConfig,
        data: &super::RunData,
        device: &burn::tensor::Device,
    ) -> Result<Self, RunDirError> {
        let found = check_fresh(dir)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Locked before anything is written, and checked again once locked: another
        // process may have started a run here since the check above. What it made is its own.
        let lock = crate::fsio::lock_folder(dir)?;
        if dir.join(CONFIG).exists() {
            return Err(RunDirError::HoldsRun {
                dir: dir.to_path_buf(),
            });
        }
        let made = (|| {
            let text = serde_json::to_vec_pretty(&config_record(config, data, device))
                .map_err(|e| io(dir)(std::io::Error::other(e)))?;
            let path = dir.join(CONFIG);
            crate::fsio::write_atomic(&path, &text).map_err(io(&path))
        })();
        if let Err(e) = made {
            let _ = remove_unfinished(dir, found);
            return Err(e);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            found: Some(found),
            _lock: lock,
        })
    }

    /// The run already in `dir`, to continue it.
    pub fn open(dir: &Path) -> Result<Self, RunDirError> {
        check_own_entries(dir)?;
        read_record(dir)?;
        let lock = crate::fsio::lock_folder(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            found: None,
            _lock: lock,
        })
    }

    /// [`Self::open`] where `dir` holds a run, else [`Self::create`].
    pub fn create_or_open(
        dir: &Path,
        config: &super::TrainConfig,
        data: &super::RunData,
        device: &burn::tensor::Device,
    ) -> Result<Self, RunDirError> {
        match dir.join(CONFIG).exists() {
            true => Self::open(dir),
            false => Self::create(dir, config, data, device),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the run's checkpoints go, for [`super::Trainer::checkpoints`].
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS)
    }

    /// Where a semi-supervised run's mean teacher is written after each epoch.
    pub fn teacher_weights(&self) -> PathBuf {
        self.dir.join(TEACHER_WEIGHTS)
    }

    /// The weights (`model.safetensors`) and reports after a committed checkpoint: what
    /// [`super::Trainer::write_to`] has done after each epoch for a run written here.
    pub fn write_epoch<M: burn::module::Module>(
        &self,
        config: &super::TrainConfig,
        state: &super::RunState,
        model: &M,
    ) -> Result<(), super::TrainError> {
        let path = self.dir.join(WEIGHTS);
        let weights = crate::models::to_safetensors(model).map_err(|reason| {
            super::TrainError::Checkpoint {
                path: path.clone(),
                reason,
            }
        })?;
        crate::fsio::write_atomic(&path, &weights).map_err(|e| super::TrainError::io(&path, e))?;
        crate::report::write_run_reports(&self.dir, config, state, None)
            .map_err(|e| super::TrainError::io(e.path, e.reason))
    }

    /// The final evaluation (the run's suite on the test split, with the latest checkpoint's
    /// weights in a model `init` builds): `evaluation.json`, and the reports with it.
    pub fn finish<M: crate::mixup::Mixable + 'static>(
        &self,
        config: &super::TrainConfig,
        data: &super::RunData,
        device: &burn::tensor::Device,
        init: &dyn Fn(&burn::tensor::Device) -> Result<M, super::TrainError>,
    ) -> Result<crate::eval::Evaluation, super::TrainError> {
        let (evaluation, state) =
            evaluate_checkpoint(&self.dir, config, data, &config.evaluate, device, init)?;
        crate::report::write_run_reports(&self.dir, config, &state, Some(&evaluation))
            .map_err(|e| super::TrainError::io(e.path, e.reason))?;
        Ok(evaluation)
    }

    /// After a fresh run failed: what it keeps, in words for the error line. A run that wrote
    /// no checkpoint leaves its folder as it found it, so the same command with other flags
    /// can start again there.
    pub fn abandon(&self) -> Result<String, RunDirError> {
        let Some(found) = self.found else {
            return Ok(String::new());
        };
        match super::checkpoint::latest(&self.checkpoints()) {
            Ok(Some(folder)) => Ok(format!(
                " (its last checkpoint, {}, is kept: `mmix train --resume {}` continues from it)",
                folder.file_name().unwrap_or_default().to_string_lossy(),
                self.dir.display()
            )),
            _ => {
                remove_unfinished(&self.dir, found)?;
                Ok(" (no checkpoint was written, so nothing of the run was kept: the folder is as it was before)".into())
            }
        }
    }
}

fn latest_checkpoint(dir: &Path) -> Result<PathBuf, super::TrainError> {
    super::checkpoint::latest(&dir.join(CHECKPOINTS))?.ok_or_else(|| {
        super::TrainError::Config(format!("{} has no checkpoint yet", dir.display()))
    })
}

/// Runs `suite` on the test split with the latest checkpoint of the run in `dir` (its weights
/// in a model `init` builds) and writes `evaluation.json`.
pub fn evaluate_latest<M: crate::mixup::Mixable + 'static>(
    dir: &Path,
    config: &super::TrainConfig,
    data: &super::RunData,
    suite: &crate::eval::EvalSuite,
    device: &burn::tensor::Device,
    init: &dyn Fn(&burn::tensor::Device) -> Result<M, super::TrainError>,
) -> Result<crate::eval::Evaluation, super::TrainError> {
    Ok(evaluate_checkpoint(dir, config, data, suite, device, init)?.0)
}

/// [`evaluate_latest`], with the progress of the checkpoint it measured.
fn evaluate_checkpoint<M: crate::mixup::Mixable + 'static>(
    dir: &Path,
    config: &super::TrainConfig,
    data: &super::RunData,
    suite: &crate::eval::EvalSuite,
    device: &burn::tensor::Device,
    init: &dyn Fn(&burn::tensor::Device) -> Result<M, super::TrainError>,
) -> Result<(crate::eval::Evaluation, super::RunState), super::TrainError> {
    let folder = latest_checkpoint(dir)?;
    let state = super::checkpoint::load_state(&folder)?;
    let model = super::checkpoint::load_model(&folder, init(device)?)?;
    suite.validate(model.mix_points().len() - 1)?;
    let evaluation = crate::eval::run_suite(
        &model,
        &data.dataset.test,
        &data.normalization,
        suite,
        state.epochs_done,
        config.eval_batch_size,
        device,
        data.valid.as_ref(),
    );
    let path = dir.join(EVALUATION);
    let bytes = serde_json::to_vec_pretty(&evaluation)
        .map_err(|e| super::TrainError::io(&path, std::io::Error::other(e)))?;
    crate::fsio::write_atomic(&path, &bytes).map_err(|e| super::TrainError::io(&path, e))?;
    Ok((evaluation, state))
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
    fn a_run_dir_is_made_read_back_and_abandoned_as_found() {
        let config = crate::train::TrainConfig {
            split: crate::data::SplitConfig {
                valid_split: 50,
                train_subset: Some(200),
                labels_per_class: None,
            },
            ..Default::default()
        };
        let data = crate::train::prepare_data(&config).unwrap();
        let device = burn::tensor::Device::flex();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");

        let run = RunDir::create(&dir, &config, &data, &device).unwrap();
        assert_eq!(run.checkpoints(), dir.join(CHECKPOINTS));
        let record = read_record(&dir).unwrap();
        assert_eq!(record.train, config);
        assert_eq!(record.dataset.image_shape, [1, 28, 28]);
        assert_eq!(record.dataset.classes, data.dataset.class_names);
        assert_eq!(record.dataset.normalization, data.normalization);
        // A second run may not take the folder; the first one may continue there.
        assert!(matches!(
            RunDir::create(&dir, &config, &data, &device),
            Err(RunDirError::HoldsRun { .. })
        ));
        // Nor may a second process continue it while the first works there.
        assert!(matches!(
            RunDir::open(&dir),
            Err(RunDirError::Lock(crate::fsio::LockError::Busy { .. }))
        ));
        let path = run.path().to_path_buf();
        drop(run);
        let run = RunDir::open(&path).unwrap();
        assert!(run.abandon().unwrap().is_empty());
        assert!(
            dir.join(CONFIG).exists(),
            "a continued run keeps its folder"
        );
        drop(run);
        let run = RunDir {
            found: Some(Found::Absent),
            ..RunDir::open(&path).unwrap()
        };
        // A fresh run that kept no checkpoint leaves no trace of itself.
        assert!(
            run.abandon()
                .unwrap()
                .contains("nothing of the run was kept")
        );
        assert!(!dir.exists());

        // A folder the user made, and filled meanwhile, keeps what is theirs.
        std::fs::create_dir(&dir).unwrap();
        let run = RunDir::create(&dir, &config, &data, &device).unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        run.abandon().unwrap();
        assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        assert!(!dir.join(CONFIG).exists());
    }

    #[test]
    fn a_damaged_or_edited_record_is_refused_with_its_path() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        assert!(matches!(read_record(dir), Err(RunDirError::NotARun { .. })));
        std::fs::write(dir.join(CONFIG), b"{not json").unwrap();
        let refused = read_record(dir).unwrap_err().to_string();
        assert!(refused.contains("config.json: not valid JSON"), "{refused}");
        let mut record = serde_json::json!({
            "train": crate::train::TrainConfig::default(),
            "dataset": {
                "classes": ["a", "b"],
                "image_shape": [1, 8, 8],
                "normalization": {"mean": [0.5], "std": [0.25]},
            },
        });
        std::fs::write(dir.join(CONFIG), record.to_string()).unwrap();
        assert_eq!(read_record(dir).unwrap().dataset.classes, ["a", "b"]);
        // Larger images than the options give: each would take memory without bound.
        for shape in [
            [1, 1_000_000, 1_000_000],
            [1, 5000, 5000],
            [1, 29, 29],
            [2, 8, 8],
        ] {
            let mut edited = record.clone();
            edited["dataset"]["image_shape"] = serde_json::json!(shape);
            std::fs::write(dir.join(CONFIG), edited.to_string()).unwrap();
            let refused = read_record(dir).unwrap_err().to_string();
            assert!(
                refused.contains("does not hold together"),
                "{shape:?}: {refused}"
            );
        }
        record["dataset"]["normalization"]["std"] = serde_json::json!([0.0]);
        std::fs::write(dir.join(CONFIG), record.to_string()).unwrap();
        let refused = read_record(dir).unwrap_err().to_string();
        assert!(refused.contains("does not hold together"), "{refused}");
        record["train"]["lr"] = serde_json::json!(-5.0);
        std::fs::write(dir.join(CONFIG), record.to_string()).unwrap();
        let refused = read_record(dir).unwrap_err().to_string();
        assert!(
            refused.contains("config.json") && refused.contains("lr"),
            "{refused}"
        );
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
