//! Checkpoints: model, optimizer, RNG and progress, committed atomically as one folder.
//!
//! A checkpoint is written to a temporary folder, renamed to `epoch-E[-batch-B]`, and only
//! then named in `latest` (itself written atomically). A crash at any moment leaves `latest`
//! pointing at a complete checkpoint.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::Bytes;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::eval::Metrics;
use crate::fsio::write_atomic;

/// One finished epoch: a row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Learning rate at the epoch's start.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Mixup accuracy: λ·[ŷ = y] + (1−λ)·[ŷ = y_partner], which is plain accuracy unmixed.
    pub train_acc: f64,
    /// Measured on the epochs `--eval-every` names and the last; `None` between them.
    pub valid: Option<Metrics>,
    /// Test metrics, on epochs evaluated.
    pub test: Option<Metrics>,
    /// A semi-supervised run's mean teacher on the validation split, on epochs evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_valid: Option<Metrics>,
    /// The mean teacher on the test split, on epochs evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_test: Option<Metrics>,
    /// Training throughput over the epoch.
    pub images_per_second: f64,
    /// Seconds of the epoch, evaluation included.
    pub seconds: f64,
}

/// An epoch stopped part-way (by an interrupt), to be continued from `next_batch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// The epoch's order of the training examples.
    pub order: Vec<usize>,
    /// The next batch to train.
    pub next_batch: usize,
    /// Sum of the batches' losses so far (per example).
    pub loss_sum: f64,
    /// Sum of the mixup hits so far.
    pub acc_sum: f64,
    /// Examples trained on so far.
    pub seen: usize,
    /// Seconds of training so far.
    pub seconds: f64,
}

/// Everything besides the tensors needed to continue a run exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// Whole epochs done.
    pub epochs_done: usize,
    /// The run's random stream, where the next draw continues.
    pub rng: ChaCha12Rng,
    /// Every finished epoch's record.
    pub history: Vec<EpochRecord>,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// Images trained on.
    pub train_images: usize,
    /// The unfinished epoch, after a mid-epoch checkpoint.
    pub partial: Option<PartialEpoch>,
    /// A semi-supervised run's unlabelled stream (runs that save none have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semi: Option<super::SemiState>,
    /// The configuration the run trains under, less what a resume may change (its devices,
    /// and its length, which a library caller may extend): a resume refuses a
    /// `config.json` edited since. Checkpoints of older runs hold none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `config` as a checkpoint records it: its keys, less the devices and the epochs.
pub fn config_record(
    config: &super::TrainConfig,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut record = serde_json::to_value(config).ok()?.as_object()?.clone();
    record.remove("device");
    record.remove("epochs");
    Some(record)
}

/// The keys whose values differ between two records of a configuration, sorted.
pub fn differing_keys(
    saved: &serde_json::Map<String, serde_json::Value>,
    now: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    keys.into_iter()
        .filter(|key| saved.get(*key) != now.get(*key))
        .cloned()
        .collect()
}

impl RunState {
    /// What a loaded state must hold for the loop to continue from it.
    fn check(&self) -> Result<(), String> {
        if self.history.len() != self.epochs_done {
            return Err(format!(
                "{} epochs done but {} in the history",
                self.epochs_done,
                self.history.len()
            ));
        }
        if let Some(partial) = &self.partial {
            let mut seen = vec![false; partial.order.len()];
            for &i in &partial.order {
                if i >= seen.len() || std::mem::replace(&mut seen[i], true) {
                    return Err("the epoch's order is not a permutation".into());
                }
            }
        }
        Ok(())
    }
}

const LATEST: &str = "latest";

fn checkpoint_error(path: &Path, reason: impl ToString) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Why a record could not be loaded, in the reader's terms.
fn describe(error: RecordError) -> String {
    match error {
        RecordError::Io(reason) => format!("damaged or unreadable ({reason})"),
        RecordError::Validation(reason) => format!("does not fit this model ({reason})"),
    }
}

/// The bytes of a checkpoint's three files: `model.bpk`, `optimizer.bpk` and `state.json`.
pub(crate) fn encode<M: Module>(
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &RunState,
) -> Result<[Bytes; 3], RecordError> {
    // `valid` folds pending batch-norm running-statistic updates into the recorded values.
    let model_bytes = model.valid().into_record().into_bytes()?;
    let optim_bytes = optimizer.into_bytes()?;
    let state_json =
        serde_json::to_vec_pretty(state).map_err(|e| RecordError::Io(e.to_string()))?;
    Ok([model_bytes, optim_bytes, Bytes::from_bytes_vec(state_json)])
}

/// Writes a checkpoint of `model`, `optim` and `state` into a new folder of `dir`, then drops the
/// older ones; returns the new folder.
pub fn save<M: Module>(
    dir: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &RunState,
    teacher: Option<&M>,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let is_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        return Err(checkpoint_error(
            dir,
            "is a symbolic link; checkpoints are written only into a folder of the run's own",
        ));
    }
    let name = match &state.partial {
        None => format!("epoch-{:04}", state.epochs_done),
        Some(p) => format!("epoch-{:04}-batch-{:06}", state.epochs_done, p.next_batch),
    };
    let staging = dir.join(format!(".staging-{name}"));
    let _ = remove_checkpoint_folder(&staging);
    std::fs::create_dir(&staging).map_err(|e| TrainError::io(&staging, e))?;
    let [model_bytes, optim_bytes, state_json] =
        encode(model, optimizer, state).map_err(|reason| checkpoint_error(&staging, reason))?;
    let teacher_bytes = teacher
        .map(|teacher| teacher.valid().into_record().into_bytes())
        .transpose()
        .map_err(|reason| checkpoint_error(&staging, reason))?;
    let files = [
        (FILES[0], &model_bytes[..]),
        (FILES[1], &optim_bytes[..]),
        (FILES[2], &state_json[..]),
    ];
    let teacher_file = teacher_bytes.as_deref().map(|bytes| (TEACHER, bytes));
    for (file, bytes) in files.into_iter().chain(teacher_file) {
        write_atomic(&staging.join(file), bytes)
            .map_err(|e| TrainError::io(staging.join(file), e))?;
    }
    let final_dir = dir.join(&name);
    let _ = remove_checkpoint_folder(&final_dir);
    std::fs::rename(&staging, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    write_atomic(&dir.join(LATEST), name.as_bytes())
        .map_err(|e| TrainError::io(dir.join(LATEST), e))?;
    // Older checkpoints are no longer needed once `latest` names the new one. Only folders
    // of the names this module writes go, and a link is never followed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let own_name = is_own_name(&entry.file_name().to_string_lossy());
            let real_folder = entry.file_type().is_ok_and(|t| t.is_dir());
            if own_name && real_folder && entry.path() != final_dir {
                let _ = remove_checkpoint_folder(&entry.path());
            }
        }
    }
    Ok(final_dir)
}

/// The names of the folders [`save`] writes: `epoch-E[-batch-B]` and their `.staging-` forms.
/// Removes a checkpoint folder if it holds nothing but a checkpoint's files (and the
/// temporary files their atomic writes leave after a crash); a folder with anything else in
/// it, though named like a checkpoint, was not written by mmix alone and is left whole.
fn remove_checkpoint_folder(folder: &Path) -> std::io::Result<()> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = FILES.contains(&name.as_str())
            || name == TEACHER
            || (name.starts_with('.') && name.contains(".tmp"));
        if !(ours && entry.file_type()?.is_file()) {
            return Err(std::io::Error::other(format!(
                "{} holds {name}, which is not a checkpoint's: the folder is left as it is",
                folder.display()
            )));
        }
        files.push(entry.path());
    }
    for file in files {
        std::fs::remove_file(file)?;
    }
    std::fs::remove_dir(folder)
}

fn is_own_name(name: &str) -> bool {
    let name = name.strip_prefix(".staging-").unwrap_or(name);
    let Some(rest) = name.strip_prefix("epoch-") else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    match rest.split_once("-batch-") {
        Some((epoch, batch)) => digits(epoch) && digits(batch),
        None => digits(rest),
    }
}

/// The folder `latest` names, if the run has a checkpoint.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    if dir.exists() && !dir.is_dir() {
        return Err(checkpoint_error(dir, "not a folder"));
    }
    let pointer = dir.join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = crate::fsio::read_regular_text(&pointer).map_err(|e| TrainError::io(&pointer, e))?;
    let name = name.trim();
    let is_checkpoint_name =
        name.starts_with("epoch-") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !is_checkpoint_name {
        return Err(checkpoint_error(
            &pointer,
            format!("damaged: {name:?} is not a checkpoint's name"),
        ));
    }
    let folder = dir.join(name);
    if !folder.is_dir() {
        return Err(checkpoint_error(
            &pointer,
            format!("names {} which does not exist", folder.display()),
        ));
    }
    Ok(Some(folder))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TrainError> {
    crate::fsio::read_regular(path, crate::fsio::data_file_bytes())
        .map_err(|e| TrainError::io(path, e))
}

/// Loads a checkpoint folder onto a freshly built model and optimizer.
pub fn load<M: Module>(
    folder: &Path,
    model: M,
    optimizer: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, RunState), TrainError> {
    read(folder)?.decode(model, optimizer)
}

/// A checkpoint's files as read, before decoding: what rank 0 of a data-parallel run reads
/// and sends to the ranks that do not share its disk.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointFiles {
    /// The checkpoint's folder.
    pub folder: PathBuf,
    /// The model's record.
    pub model: Vec<u8>,
    /// The optimizer's record.
    pub optimizer: Vec<u8>,
    /// `state.json`.
    pub state: Vec<u8>,
    /// A semi-supervised run's mean teacher.
    pub teacher: Option<Vec<u8>>,
}

const FILES: [&str; 3] = ["model.bpk", "optimizer.bpk", "state.json"];

/// The mean teacher's record, in the checkpoints of semi-supervised runs.
const TEACHER: &str = "teacher.bpk";

/// Reads a checkpoint folder's files.
pub fn read(folder: &Path) -> Result<CheckpointFiles, TrainError> {
    let [model, optimizer, state] = FILES.map(|file| read_bytes(&folder.join(file)));
    let teacher_path = folder.join(TEACHER);
    let teacher = match teacher_path.exists() {
        true => Some(read_bytes(&teacher_path)?),
        false => None,
    };
    Ok(CheckpointFiles {
        folder: folder.to_path_buf(),
        model: model?,
        optimizer: optimizer?,
        state: state?,
        teacher,
    })
}

impl CheckpointFiles {
    /// `model` and `optimizer` with the checkpoint's tensors, and the run's progress.
    pub fn decode<M: Module>(
        self,
        model: M,
        optimizer: ModuleOptimizer,
    ) -> Result<(M, ModuleOptimizer, RunState), TrainError> {
        let path = |file: &str| self.folder.join(file);
        let model = model_from_bytes(&path(FILES[0]), self.model, model)?;
        let optimizer = optimizer_from_bytes(&path(FILES[1]), self.optimizer, optimizer)?;
        let state = state_from_bytes(&path(FILES[2]), &self.state)?;
        Ok((model, optimizer, state))
    }

    /// The mean teacher of a semi-supervised run's checkpoint, loaded onto `template` (a
    /// model of the run's structure).
    pub fn decode_teacher<M: Module>(&self, template: M) -> Result<M, TrainError> {
        let path = self.folder.join(TEACHER);
        match &self.teacher {
            Some(bytes) => model_from_bytes(&path, bytes.clone(), template),
            None => Err(checkpoint_error(
                &path,
                "is missing: the run trains a mean teacher, and its checkpoint holds none",
            )),
        }
    }

    /// The files as one byte string (each length-prefixed), and back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let folder = self.folder.to_string_lossy();
        let parts = [folder.as_bytes(), &self.model, &self.optimizer, &self.state];
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
        for part in parts.into_iter().chain(self.teacher.as_deref()) {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        bytes
    }

    /// The files from [`Self::to_bytes`]; `None` when they are damaged.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let mut next = || {
            let length = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let part = rest.get(8..8 + length)?.to_vec();
            rest = &rest[8 + length..];
            Some(part)
        };
        let folder = PathBuf::from(String::from_utf8(next()?).ok()?);
        let (model, optimizer, state) = (next()?, next()?, next()?);
        let teacher = next();
        Some(Self {
            folder,
            model,
            optimizer,
            state,
            teacher,
        })
    }
}

/// Loads only the progress of a checkpoint folder (for reports).
pub(crate) fn load_state(folder: &Path) -> Result<RunState, TrainError> {
    let state_path = folder.join("state.json");
    let text = read_bytes(&state_path)?;
    state_from_bytes(&state_path, &text)
}

/// Loads only the model weights of a checkpoint folder (for evaluation).
pub fn load_model<M: Module>(folder: &Path, model: M) -> Result<M, TrainError> {
    let model_path = folder.join("model.bpk");
    model_from_bytes(&model_path, read_bytes(&model_path)?, model)
}

/// A run's progress from the bytes of a `state.json`; `path` names it in errors.
pub fn state_from_bytes(path: &Path, bytes: &[u8]) -> Result<RunState, TrainError> {
    let state: RunState = serde_json::from_slice(bytes).map_err(|e| checkpoint_error(path, e))?;
    state
        .check()
        .map_err(|reason| checkpoint_error(path, reason))?;
    Ok(state)
}

/// `model` with the weights of a `model.bpk`'s bytes; `path` names them in errors.
pub fn model_from_bytes<M: Module>(path: &Path, bytes: Vec<u8>, model: M) -> Result<M, TrainError> {
    let record = contained(path, || {
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
    })?
    .map_err(|e| checkpoint_error(path, describe(e)))?;
    contained(path, || model.try_load_record(record))?
        .map_err(|e| checkpoint_error(path, describe(e)))
}

/// `optimizer` with the state of an `optimizer.bpk`'s bytes; `path` names them in errors.
pub fn optimizer_from_bytes(
    path: &Path,
    bytes: Vec<u8>,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer, TrainError> {
    contained(path, || optimizer.from_bytes(Bytes::from_bytes_vec(bytes)))?
        .map_err(|e| checkpoint_error(path, describe(e)))
}

/// Burn's record decoders panic on some damaged records (the optimizer's, the fuzzer found):
/// a damaged checkpoint is bad input, answered with an error naming the file.
fn contained<T>(path: &Path, decode: impl FnOnce() -> T) -> Result<T, TrainError> {
    crate::contained::contain(decode)
        .map_err(|panic| checkpoint_error(path, format!("damaged or unreadable ({panic})")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_names_save_writes_are_its_own() {
        for own in [
            "epoch-0001",
            "epoch-0002-batch-000007",
            ".staging-epoch-0003",
        ] {
            assert!(super::is_own_name(own), "{own}");
        }
        for other in [
            "latest",
            "epoch-",
            "epoch-1-batch-",
            "weights",
            "epoch-1x",
            "my-epoch-1",
        ] {
            assert!(!super::is_own_name(other), "{other}");
        }
    }

    #[test]
    fn a_folder_named_like_a_checkpoint_goes_only_if_it_holds_a_checkpoints_files_alone() {
        let root = tempfile::tempdir().unwrap();
        let ours = root.path().join("epoch-0001");
        std::fs::create_dir(&ours).unwrap();
        for file in [
            "model.bpk",
            "optimizer.bpk",
            "state.json",
            ".state.json.tmp7-0",
        ] {
            std::fs::write(ours.join(file), b"x").unwrap();
        }
        super::remove_checkpoint_folder(&ours).unwrap();
        assert!(!ours.exists());
        let mixed = root.path().join("epoch-0000");
        std::fs::create_dir(&mixed).unwrap();
        std::fs::write(mixed.join("model.bpk"), b"x").unwrap();
        std::fs::write(mixed.join("mine.txt"), b"mine").unwrap();
        let kept = super::remove_checkpoint_folder(&mixed)
            .unwrap_err()
            .to_string();
        assert!(kept.contains("mine.txt"), "{kept}");
        assert_eq!(std::fs::read(mixed.join("mine.txt")).unwrap(), b"mine");
        assert!(mixed.join("model.bpk").exists(), "nothing of it removed");
        // A folder inside, even one of a checkpoint's names, is not a checkpoint's.
        let nested = root.path().join("epoch-0002");
        std::fs::create_dir_all(nested.join("state.json")).unwrap();
        assert!(super::remove_checkpoint_folder(&nested).is_err());
        assert!(nested.join("state.json").is_dir());
    }
}
