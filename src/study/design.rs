//! A study file: its grammar (seeds, shared options, arms, a swept option, declared
//! hypotheses), the grid of cells it expands into, the checks made before anything runs, and
//! the record that keeps its design from being edited once its runs begin.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::StudyError;
use super::family::Direction;
use super::tables::{find_metric, metrics_for};
use crate::eval::EvalSuite;
use crate::fsio::write_atomic;
use crate::train::TrainConfig;

macro_rules! design_error {
    ($($t:tt)*) => { StudyError::Design(format!($($t)*)) };
}

macro_rules! refuse {
    ($($t:tt)*) => { return Err(design_error!($($t)*)) };
}

/// The study file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// Shown at the top of the report.
    pub title: Option<String>,
    /// The seeds every arm runs with.
    pub seeds: Vec<u64>,
    /// The arm the others are compared with (default: the first).
    pub baseline: Option<String>,
    /// Options every arm shares: any key of `mmix train --config`.
    #[serde(default)]
    pub train: toml::Table,
    /// Measured on every run's final weights.
    #[serde(default)]
    pub evaluate: EvalSuite,
    #[serde(default)]
    /// The arms: each a `name` and the options it sets.
    pub arm: Vec<toml::Table>,
    /// Hypotheses declared before any run: the family the report corrects for multiplicity.
    #[serde(default)]
    pub primary: Vec<PrimaryHypothesis>,
    /// One `mmix train` option swept over values, crossed with the arms.
    pub sweep: Option<Sweep>,
}

/// `{ arm = "manifold-a2", metric = "final test acc", direction = "higher", at = [10, 50] }`:
/// the arm against the baseline, at the listed values of the swept option (all of them when
/// `at` is left out).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryHypothesis {
    /// The arm compared with the baseline.
    pub arm: String,
    /// The metric, as the report names it.
    pub metric: String,
    /// Which way the arm is expected to differ.
    pub direction: Direction,
    /// The swept values it is declared at.
    pub at: Option<Vec<toml::Value>>,
}

/// `[sweep] option = "labels-per-class", values = [10, 50, 100, 500]`, and options that
/// change with it, one value each: `with = { epochs = [200, 60, 40, 15] }` (a smaller labelled
/// set needs more epochs for as many steps).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// The swept option (a `mmix train --config` key).
    pub option: String,
    /// Its values, cheapest first.
    pub values: Vec<toml::Value>,
    #[serde(default)]
    /// Options that change with it, one value per swept value.
    pub with: toml::Table,
}

/// The options a sweep sets: its own and those that change with it.
pub(crate) fn swept_keys(sweep: &Sweep) -> impl Iterator<Item = &str> {
    std::iter::once(sweep.option.as_str()).chain(sweep.with.keys().map(String::as_str))
}

/// A swept value as a folder name and a table heading: strings without their quotes.
pub fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One cell of the grid, resolved before anything runs.
pub struct Cell {
    /// The index of its arm in [`Design::arms`].
    pub arm: usize,
    /// The index of the swept option's value, where the study sweeps one.
    pub level: Option<usize>,
    /// The run's seed.
    pub seed: u64,
    /// The run's folder, under the study's `runs/`.
    pub dir: PathBuf,
    /// The arm's options merged over `[train]`, with the swept values: `mmix train --config`
    /// keys, without the seed and folder (which the cell holds).
    pub options: toml::Table,
    /// The options resolved, with the study's evaluation suite.
    pub config: TrainConfig,
}

/// An arm of the study.
pub struct Arm {
    /// Its name (and folder under `runs/`).
    pub name: String,
    /// The arm's own options, as written in the study file.
    pub options: String,
}

/// A study file read and checked: its arms and every cell of its grid, in the order they run.
pub struct Design {
    /// The file as written.
    pub file: StudyFile,
    /// The arms, in the file's order.
    pub arms: Vec<Arm>,
    /// Every cell, in the order they run.
    pub cells: Vec<Cell>,
    /// The index of the arm the others are compared with.
    pub baseline: usize,
}

/// Resolves a cell's options (`mmix train --config` keys), its seed and its folder into the
/// configuration its run trains with; the error says why, without the cell's name.
pub type Resolve<'a> = &'a dyn Fn(&toml::Table, u64, &Path) -> Result<TrainConfig, String>;

/// Options a study sets itself, per cell.
pub const RESERVED: [&str; 3] = ["seed", "out", "evaluate"];

impl Design {
    /// Reads the study file `text` (named `name` in errors) for a study folder `out`, resolving
    /// each cell with `resolve`.
    pub fn parse(
        text: &str,
        name: &str,
        out: &Path,
        resolve: Resolve,
    ) -> Result<Design, StudyError> {
        let file: StudyFile = toml::from_str(text)
            .map_err(|e| design_error!("{name}: {}", e.message().trim_end()))?;
        if file.seeds.is_empty() {
            refuse!("{name}: the grid is empty: `seeds` lists no seed");
        }
        if file.arm.is_empty() {
            refuse!("{name}: the grid is empty: no [[arm]] table");
        }
        let mut seen_seeds = file.seeds.clone();
        seen_seeds.sort_unstable();
        seen_seeds.dedup();
        if seen_seeds.len() != file.seeds.len() {
            refuse!("{name}: `seeds` lists a seed twice");
        }
        for key in RESERVED {
            if file.train.contains_key(key) {
                refuse!("{name}: [train] may not set `{key}`: the study sets it for each run");
            }
        }
        let mut arms = Vec::new();
        let mut cells = Vec::new();
        for (index, table) in file.arm.iter().enumerate() {
            let mut table = table.clone();
            let arm_name = match table.remove("name") {
                Some(toml::Value::String(s)) if is_folder_name(&s) => s,
                Some(_) => refuse!(
                    "{name}: arm {} needs a `name` of letters, digits, '-', '_' or '.'",
                    index + 1
                ),
                None => refuse!("{name}: arm {} has no `name`", index + 1),
            };
            if arms.iter().any(|a: &Arm| a.name == arm_name) {
                refuse!("{name}: two arms are named '{arm_name}'");
            }
            for key in RESERVED {
                if table.contains_key(key) {
                    refuse!("{name}: arm '{arm_name}' may not set `{key}`: the study sets it");
                }
            }
            let options = table
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(sweep) = &file.sweep
                && let Some(key) = swept_keys(sweep).find(|key| table.contains_key(*key))
            {
                refuse!("{name}: arm '{arm_name}' sets `{key}`, which the study sweeps");
            }
            let mut merged = file.train.clone();
            merged.extend(table);
            let levels: Vec<Option<usize>> = match &file.sweep {
                Some(sweep) => (0..sweep.values.len()).map(Some).collect(),
                None => vec![None],
            };
            for (level, &seed) in levels
                .iter()
                .flat_map(|level| file.seeds.iter().map(move |seed| (level, seed)))
            {
                let mut merged = merged.clone();
                let mut dir = out.join("runs").join(&arm_name);
                if let (Some(sweep), Some(level)) = (&file.sweep, level) {
                    let value = &sweep.values[*level];
                    merged.insert(sweep.option.clone(), value.clone());
                    for (key, companions) in &sweep.with {
                        if let Some(companion) = companions.as_array().and_then(|v| v.get(*level)) {
                            merged.insert(key.clone(), companion.clone());
                        }
                    }
                    dir = dir.join(format!("{}-{}", sweep.option, value_text(value)));
                }
                let dir = dir.join(format!("seed-{seed}"));
                let mut config = resolve(&merged, seed, &dir)
                    .map_err(|e| design_error!("{name}: arm '{arm_name}': {e}"))?;
                config.evaluate = file.evaluate.clone();
                config
                    .evaluate
                    .validate(config.model.mix_points().len() - 1)
                    .map_err(|e| design_error!("{name}: [evaluate]: {e}"))?;
                cells.push(Cell {
                    arm: index,
                    level: *level,
                    seed,
                    dir,
                    options: merged,
                    config,
                });
            }
            arms.push(Arm {
                name: arm_name,
                options,
            });
        }
        let baseline = match &file.baseline {
            None => 0,
            Some(b) => arms
                .iter()
                .position(|a| &a.name == b)
                .ok_or_else(|| design_error!("{name}: baseline '{b}' is not an arm's name"))?,
        };
        check_sweep(&file, name)?;
        check_primary(&file, &arms, baseline, name)?;
        // Seed-major order: a study stopped early still has every arm on its first seeds. A sweep
        // goes value by value first (list its values cheapest first): each value it reaches is
        // complete over seeds, which is what its intervals need.
        cells.sort_by_key(|c| (c.level, file.seeds.iter().position(|&s| s == c.seed), c.arm));
        Ok(Design {
            file,
            arms,
            cells,
            baseline,
        })
    }
}

/// The swept option is an option of `mmix train` that a study may vary, over distinct values
/// that make folder names.
fn check_sweep(file: &StudyFile, name: &str) -> Result<(), StudyError> {
    let Some(sweep) = &file.sweep else {
        return Ok(());
    };
    for key in swept_keys(sweep) {
        if RESERVED.contains(&key) || file.train.contains_key(key) {
            refuse!(
                "{name}: [sweep] may not vary `{key}`: {}",
                match file.train.contains_key(key) {
                    true => "[train] sets it for every run",
                    false => "the study sets it for each run",
                }
            );
        }
    }
    if sweep.values.is_empty() {
        refuse!("{name}: [sweep] lists no values");
    }
    for (key, companions) in &sweep.with {
        let count = companions.as_array().map(Vec::len);
        if count != Some(sweep.values.len()) {
            refuse!(
                "{name}: [sweep] `with.{key}` must list one value per swept value ({})",
                sweep.values.len()
            );
        }
    }
    let texts: Vec<String> = sweep.values.iter().map(value_text).collect();
    for (i, text) in texts.iter().enumerate() {
        if !is_folder_name(text) || texts[..i].contains(text) {
            refuse!("{name}: [sweep] value {text} is repeated or cannot name a folder");
        }
    }
    Ok(())
}

/// Each declared hypothesis names an arm other than the baseline, a metric the report has,
/// and values the study sweeps.
fn check_primary(
    file: &StudyFile,
    arms: &[Arm],
    baseline: usize,
    name: &str,
) -> Result<(), StudyError> {
    let known = metrics_for(&file.evaluate);
    for (i, hypothesis) in file.primary.iter().enumerate() {
        let which = format!("{name}: primary hypothesis {}", i + 1);
        match arms.iter().position(|a| a.name == hypothesis.arm) {
            None => refuse!(
                "{which} names the arm '{}', which the study has not",
                hypothesis.arm
            ),
            Some(index) if index == baseline => {
                refuse!(
                    "{which} compares the baseline '{}' with itself",
                    hypothesis.arm
                )
            }
            Some(_) => {}
        }
        if find_metric(&hypothesis.metric, &known).is_none() {
            let names: Vec<String> = known.iter().map(|m| m.name()).collect();
            refuse!(
                "{which} names the metric '{}', which the report does not have (it has: {})",
                hypothesis.metric,
                names.join(", ")
            );
        }
        match (&hypothesis.at, &file.sweep) {
            (Some(at), _) if at.is_empty() => refuse!(
                "{which} sets `at = []`, which declares it nowhere: list the values, or leave `at` out for every value"
            ),
            (Some(_), None) => refuse!("{which} sets `at`, but the study sweeps nothing"),
            (Some(at), Some(sweep)) => {
                if let Some(value) = at.iter().find(|v| !sweep.values.contains(v)) {
                    refuse!(
                        "{which}: `at` lists {value}, which [sweep] does not ({})",
                        sweep.option
                    );
                }
            }
            _ => {}
        }
        // One test per arm, metric and value: a second (in either direction) would count the
        // same comparison twice in the family the correction is over.
        let values = |at: &Option<Vec<toml::Value>>| -> Vec<toml::Value> {
            match (at, &file.sweep) {
                (Some(at), _) => at.clone(),
                (None, Some(sweep)) => sweep.values.clone(),
                (None, None) => vec![toml::Value::Boolean(true)],
            }
        };
        let mine = values(&hypothesis.at);
        if let Some((j, earlier)) = file.primary[..i].iter().enumerate().find(|(_, earlier)| {
            earlier.arm == hypothesis.arm
                && find_metric(&earlier.metric, &known) == find_metric(&hypothesis.metric, &known)
                && values(&earlier.at).iter().any(|v| mine.contains(v))
        }) {
            refuse!(
                "{which} tests '{}' on '{}' where primary hypothesis {} already does: declare each comparison once",
                hypothesis.arm,
                earlier.metric,
                j + 1
            );
        }
    }
    Ok(())
}

pub(crate) fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The saved run matches the cell: same configuration except the evaluation suite (which the
/// study re-measures when it changed) and the device (a study may move between machines).
pub fn same_run(saved: &TrainConfig, wanted: &TrainConfig) -> bool {
    let mut saved = saved.clone();
    saved.evaluate = wanted.evaluate.clone();
    saved.device = wanted.device.clone();
    saved == *wanted
}

/// The study file's text as its runs were started under: a later change is refused.
pub const STUDY_RECORD: &str = "study.json";
/// The paired gain along a swept option.
pub const GAIN_PLOT: &str = "gain.png";

/// What a study writes into its folder; anything else there is refused, never overwritten.
pub const STUDY_ENTRIES: [&str; 9] = [
    "runs",
    crate::fsio::LOCK,
    STUDY_RECORD,
    GAIN_PLOT,
    "report.md",
    "report.json",
    "accuracy.png",
    "reliability.png",
    "spectrum.png",
];

/// Saves the study file's text in the study folder before its first run, and refuses a text
/// that changed once a run has started: a design is not edited after its runs begin.
/// `file` is where the text was read, as the record names it.
pub fn record_design(
    file: &Path,
    text: &str,
    out: &Path,
    cells: &[Cell],
) -> Result<(), StudyError> {
    let record = out.join(STUDY_RECORD);
    let saved: Option<String> = match crate::fsio::read_regular_text(&record) {
        Ok(json) => {
            let value: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| StudyError::Damaged {
                    path: record.clone(),
                    reason: e.to_string(),
                })?;
            value["text"].as_str().map(str::to_string)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StudyError::io("read", &record, e)),
    };
    let started = cells.iter().any(|c| c.dir.join("config.json").exists());
    if let Some(saved) = &saved
        && saved != text
        && started
    {
        refuse!(
            "{} has changed since its runs began (the text they ran under is in {}): restore it, or save the new design under a new name",
            file.display(),
            record.display()
        );
    }
    if saved.as_deref() != Some(text) {
        std::fs::create_dir_all(out).map_err(|e| StudyError::io("create", out, e))?;
        let json = serde_json::json!({ "file": crate::fsio::path_text(file), "text": text });
        let bytes = serde_json::to_string_pretty(&json)
            .map_err(|e| StudyError::io("write", &record, std::io::Error::other(e)))?;
        write_atomic(&record, bytes.as_bytes()).map_err(|e| StudyError::io("write", &record, e))?;
    }
    Ok(())
}
