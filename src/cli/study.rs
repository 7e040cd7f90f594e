//! `mmix study FILE.toml`: a grid of arms × seeds, trained one run at a time, skipping finished
//! runs and resuming an interrupted one, then a report over seeds with paired differences.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::eval::EvalSuite;
use crate::fsio::write_atomic;
use crate::report::{self, CompareRow, study};
use crate::train::{TrainConfig, parse_device};

use super::args::{StudyArgs, TrainArgs};
use super::evaluate;
use super::train as train_cmd;

/// The study file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyFile {
    /// Shown at the top of the report.
    title: Option<String>,
    seeds: Vec<u64>,
    /// The arm the others are compared with (default: the first).
    baseline: Option<String>,
    /// Options every arm shares: any key of `mmix train --config`.
    #[serde(default)]
    train: toml::Table,
    /// Measured on every run's final weights.
    #[serde(default)]
    evaluate: EvalSuite,
    #[serde(default)]
    arm: Vec<toml::Table>,
    /// Hypotheses declared before any run: the family the report corrects for multiplicity.
    #[serde(default)]
    primary: Vec<PrimaryHypothesis>,
    /// One `mmix train` option swept over values, crossed with the arms.
    sweep: Option<Sweep>,
}

/// `{ arm = "manifold-a2", metric = "final test acc", direction = "higher", at = [10, 50] }`:
/// the arm against the baseline, at the listed values of the swept option (all of them when
/// `at` is left out).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrimaryHypothesis {
    arm: String,
    metric: String,
    direction: study::Direction,
    at: Option<Vec<toml::Value>>,
}

/// `[sweep] option = "labels-per-class", values = [10, 50, 100, 500]`, and options that
/// change with it, one value each: `with = { epochs = [200, 60, 40, 15] }` (a smaller labelled
/// set needs more epochs for as many steps).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sweep {
    option: String,
    values: Vec<toml::Value>,
    #[serde(default)]
    with: toml::Table,
}

/// The options a sweep sets: its own and those that change with it.
fn swept_keys(sweep: &Sweep) -> impl Iterator<Item = &str> {
    std::iter::once(sweep.option.as_str()).chain(sweep.with.keys().map(String::as_str))
}

/// A swept value as a folder name and a table heading: strings without their quotes.
fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One cell of the grid, resolved before anything runs.
struct Cell {
    arm: usize,
    /// The index of the swept option's value, where the study sweeps one.
    level: Option<usize>,
    seed: u64,
    dir: PathBuf,
    args: TrainArgs,
    config: TrainConfig,
}

struct Arm {
    name: String,
    options: String,
}

/// Options a study sets itself, per cell.
const RESERVED: [&str; 3] = ["seed", "out", "evaluate"];

fn parse(path: &Path, out: &Path) -> Result<(StudyFile, Vec<Arm>, Vec<Cell>, usize)> {
    let text = crate::fsio::read_regular_text(path)
        .with_context(|| format!("cannot read study file {}", path.display()))?;
    parse_text(&text, &path.display().to_string(), out)
}

/// The `mmix train` options of one arm of a study (its evaluation suite included), for a
/// single run of it at `seed` into `out`: what the demo runs.
pub fn arm_run(text: &str, source: &str, arm: &str, seed: u64, out: &Path) -> Result<TrainArgs> {
    let (file, arms, cells, _) = parse_text(text, source, Path::new(""))?;
    let index = arms
        .iter()
        .position(|a| a.name == arm)
        .ok_or_else(|| anyhow!("{source} has no arm '{arm}'"))?;
    let cell = cells
        .into_iter()
        .find(|c| c.arm == index)
        .expect("every arm has a cell per seed");
    Ok(TrainArgs {
        seed: Some(seed),
        out: Some(out.to_path_buf()),
        suite: Some(file.evaluate),
        ..cell.args
    })
}

/// Checks a study file's text as `mmix study` does before anything runs.
pub fn check_text(text: &str, name: &str) -> Result<()> {
    parse_text(text, name, Path::new("")).map(|_| ())
}

fn parse_text(
    text: &str,
    name: &str,
    out: &Path,
) -> Result<(StudyFile, Vec<Arm>, Vec<Cell>, usize)> {
    let file: StudyFile =
        toml::from_str(text).map_err(|e| anyhow!("{name}: {}", e.message().trim_end()))?;
    if file.seeds.is_empty() {
        bail!("{name}: the grid is empty: `seeds` lists no seed");
    }
    if file.arm.is_empty() {
        bail!("{name}: the grid is empty: no [[arm]] table");
    }
    let mut seen_seeds = file.seeds.clone();
    seen_seeds.sort_unstable();
    seen_seeds.dedup();
    if seen_seeds.len() != file.seeds.len() {
        bail!("{name}: `seeds` lists a seed twice");
    }
    for key in RESERVED {
        if file.train.contains_key(key) {
            bail!("{name}: [train] may not set `{key}`: the study sets it for each run");
        }
    }
    let mut arms = Vec::new();
    let mut cells = Vec::new();
    for (index, table) in file.arm.iter().enumerate() {
        let mut table = table.clone();
        let arm_name = match table.remove("name") {
            Some(toml::Value::String(s)) if is_folder_name(&s) => s,
            Some(_) => bail!(
                "{name}: arm {} needs a `name` of letters, digits, '-', '_' or '.'",
                index + 1
            ),
            None => bail!("{name}: arm {} has no `name`", index + 1),
        };
        if arms.iter().any(|a: &Arm| a.name == arm_name) {
            bail!("{name}: two arms are named '{arm_name}'");
        }
        for key in RESERVED {
            if table.contains_key(key) {
                bail!("{name}: arm '{arm_name}' may not set `{key}`: the study sets it");
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
            bail!("{name}: arm '{arm_name}' sets `{key}`, which the study sweeps");
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
            let mut args = TrainArgs::deserialize(toml::Value::Table(merged.clone()))
                .map_err(|e| anyhow!("{name}: arm '{arm_name}': {}", e.message().trim_end()))?;
            args.seed = Some(seed);
            args.out = Some(dir.clone());
            let config = train_cmd::resolve(&args)
                .map_err(|e| anyhow!("{name}: arm '{arm_name}': {e:#}"))?;
            let mut config = config;
            config.evaluate = file.evaluate.clone();
            config
                .evaluate
                .validate(config.model.mix_points().len() - 1)
                .map_err(|e| anyhow!("{name}: [evaluate]: {e}"))?;
            cells.push(Cell {
                arm: index,
                level: *level,
                seed,
                dir,
                args,
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
            .ok_or_else(|| anyhow!("{name}: baseline '{b}' is not an arm's name"))?,
    };
    check_sweep(&file, name)?;
    check_primary(&file, &arms, baseline, name)?;
    // Seed-major order: a study stopped early still has every arm on its first seeds. A sweep
    // goes value by value first (list its values cheapest first): each value it reaches is
    // complete over seeds, which is what its intervals need.
    cells.sort_by_key(|c| (c.level, file.seeds.iter().position(|&s| s == c.seed), c.arm));
    Ok((file, arms, cells, baseline))
}

/// The swept option is an option of `mmix train` that a study may vary, over distinct values
/// that make folder names.
fn check_sweep(file: &StudyFile, name: &str) -> Result<()> {
    let Some(sweep) = &file.sweep else {
        return Ok(());
    };
    for key in swept_keys(sweep) {
        if RESERVED.contains(&key) || file.train.contains_key(key) {
            bail!(
                "{name}: [sweep] may not vary `{key}`: {}",
                match file.train.contains_key(key) {
                    true => "[train] sets it for every run",
                    false => "the study sets it for each run",
                }
            );
        }
    }
    if sweep.values.is_empty() {
        bail!("{name}: [sweep] lists no values");
    }
    for (key, companions) in &sweep.with {
        let count = companions.as_array().map(Vec::len);
        if count != Some(sweep.values.len()) {
            bail!(
                "{name}: [sweep] `with.{key}` must list one value per swept value ({})",
                sweep.values.len()
            );
        }
    }
    let texts: Vec<String> = sweep.values.iter().map(value_text).collect();
    for (i, text) in texts.iter().enumerate() {
        if !is_folder_name(text) || texts[..i].contains(text) {
            bail!("{name}: [sweep] value {text} is repeated or cannot name a folder");
        }
    }
    Ok(())
}

/// Each declared hypothesis names an arm other than the baseline, a metric the report has,
/// and values the study sweeps.
fn check_primary(file: &StudyFile, arms: &[Arm], baseline: usize, name: &str) -> Result<()> {
    let known = study::metrics_for(&file.evaluate);
    for (i, hypothesis) in file.primary.iter().enumerate() {
        let which = format!("{name}: primary hypothesis {}", i + 1);
        match arms.iter().position(|a| a.name == hypothesis.arm) {
            None => bail!(
                "{which} names the arm '{}', which the study has not",
                hypothesis.arm
            ),
            Some(index) if index == baseline => {
                bail!(
                    "{which} compares the baseline '{}' with itself",
                    hypothesis.arm
                )
            }
            Some(_) => {}
        }
        if study::find_metric(&hypothesis.metric, &known).is_none() {
            let names: Vec<String> = known.iter().map(|m| m.name()).collect();
            bail!(
                "{which} names the metric '{}', which the report does not have (it has: {})",
                hypothesis.metric,
                names.join(", ")
            );
        }
        match (&hypothesis.at, &file.sweep) {
            (Some(_), None) => bail!("{which} sets `at`, but the study sweeps nothing"),
            (Some(at), Some(sweep)) => {
                if let Some(value) = at.iter().find(|v| !sweep.values.contains(v)) {
                    bail!(
                        "{which}: `at` lists {value}, which [sweep] does not ({})",
                        sweep.option
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The saved run matches the cell: same configuration except the evaluation suite (which the
/// study re-measures when it changed) and the device (a study may move between machines).
fn same_run(saved: &TrainConfig, wanted: &TrainConfig) -> bool {
    let mut saved = saved.clone();
    saved.evaluate = wanted.evaluate.clone();
    saved.device = wanted.device.clone();
    saved == *wanted
}

/// The study file's text as its runs were started under: a later change is refused.
const STUDY_RECORD: &str = "study.json";
/// The paired gain along a swept option.
const GAIN_PLOT: &str = "gain.png";

/// What a study writes into its folder; anything else there is refused, never overwritten.
const STUDY_ENTRIES: [&str; 8] = [
    "runs",
    STUDY_RECORD,
    GAIN_PLOT,
    "report.md",
    "report.json",
    "accuracy.png",
    "reliability.png",
    "spectrum.png",
];

/// The study's folder: `--out`, or the file's path without `.toml`.
fn study_folder(args: &StudyArgs) -> Result<PathBuf> {
    if let Some(out) = &args.out {
        super::require_path("--out", out)?;
        return Ok(out.clone());
    }
    if args.file.extension().is_none_or(|e| e != "toml") {
        bail!(
            "{}: a study file's name ends in .toml (its folder is the same path without it); rename it or give --out",
            args.file.display()
        );
    }
    Ok(args.file.with_extension(""))
}

/// Saves the study file's text in the study folder before its first run, and refuses a text
/// that changed once a run has started: a design is not edited after its runs begin.
fn record_design(file: &Path, out: &Path, cells: &[Cell]) -> Result<()> {
    let text = crate::fsio::read_regular_text(file)
        .with_context(|| format!("cannot read study file {}", file.display()))?;
    let record = out.join(STUDY_RECORD);
    let saved: Option<String> = match crate::fsio::read_regular_text(&record) {
        Ok(json) => {
            let value: serde_json::Value = serde_json::from_str(&json)
                .with_context(|| format!("{} is damaged", record.display()))?;
            value["text"].as_str().map(str::to_string)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", record.display())),
    };
    let started = cells.iter().any(|c| c.dir.join("config.json").exists());
    if let Some(saved) = &saved
        && *saved != text
        && started
    {
        bail!(
            "{} has changed since its runs began (the text they ran under is in {}): restore it, or save the new design under a new name",
            file.display(),
            record.display()
        );
    }
    if saved.as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let json = serde_json::json!({ "file": file, "text": text });
        write_atomic(&record, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("cannot write {}", record.display()))?;
    }
    Ok(())
}

/// Whether the run in `cell`'s folder was trained with the options the study now gives it.
fn trained_as_declared(cell: &Cell, device: Option<&String>) -> Result<bool> {
    let saved = train_cmd::load_saved_config(&cell.dir)?;
    let mut wanted = cell.config.clone();
    if let Some(device) = device {
        wanted.device = device.clone();
    }
    Ok(same_run(&saved, &wanted))
}

pub fn run(args: &StudyArgs) -> Result<i32> {
    let out = study_folder(args)?;
    let (file, arms, cells, baseline) = parse(&args.file, &out)?;
    if let Some(device) = &args.device {
        parse_device(device).map_err(|e| anyhow!(e))?;
    }
    crate::fsio::check_own_folder(&out, &STUDY_ENTRIES)?;
    if args.report_only {
        let total = cells.len();
        let mut finished = Vec::new();
        for cell in cells {
            let done = report::load_run(&cell.dir).is_ok_and(|row| {
                row.summary.completed
                    && row
                        .summary
                        .evaluation
                        .is_some_and(|e| e.suite == file.evaluate)
            });
            if !done {
                continue;
            }
            if !trained_as_declared(&cell, args.device.as_ref())? {
                println!(
                    "left out: {} was trained with other options than arm '{}' now gives",
                    cell.dir.display(),
                    arms[cell.arm].name
                );
                continue;
            }
            finished.push(cell);
        }
        if finished.is_empty() {
            bail!(
                "{}: no run of the study, as its file now reads, has finished yet",
                out.display()
            );
        }
        println!("{} of {total} runs finished", finished.len());
        let partial_of = (finished.len() < total).then_some(total);
        write_report(&out, &file, &arms, &finished, baseline, partial_of)?;
        return Ok(0);
    }
    record_design(&args.file, &out, &cells)?;
    let total = cells.len();
    println!(
        "study {}: {} arms × {} seeds = {total} runs → {}",
        args.file.display(),
        arms.len(),
        file.seeds.len(),
        out.display()
    );
    for (i, cell) in cells.iter().enumerate() {
        let arm = &arms[cell.arm].name;
        let mut wanted = cell.config.clone();
        if let Some(device) = &args.device {
            wanted.device = device.clone();
        }
        let head = format!("[{}/{total}] {arm}, seed {}", i + 1, cell.seed);
        let finished = if cell.dir.join("config.json").exists() {
            let saved = train_cmd::load_saved_config(&cell.dir)?;
            if !same_run(&saved, &wanted) {
                bail!(
                    "{} was trained with other options than arm '{arm}' now gives; move it away or restore the arm",
                    cell.dir.display()
                );
            }
            report::load_run(&cell.dir)
                .map(|row| row.summary.completed)
                .unwrap_or(false)
        } else {
            false
        };
        if !finished {
            println!("{head}: training → {}", cell.dir.display());
            let mut train_args = if cell.dir.join("config.json").exists() {
                TrainArgs {
                    resume: Some(cell.dir.clone()),
                    ..TrainArgs::default()
                }
            } else {
                TrainArgs {
                    suite: Some(file.evaluate.clone()),
                    ..cell.args.clone()
                }
            };
            train_args.device = args.device.clone().or(train_args.device);
            let result = train_cmd::run(&train_args, true)?;
            if result.interrupted {
                println!(
                    "study interrupted; run `mmix study {}` again to continue",
                    args.file.display()
                );
                return Ok(train_cmd::INTERRUPTED_EXIT);
            }
        }
        let row = report::load_run(&cell.dir).map_err(|e| anyhow!(e))?;
        let measured = row
            .summary
            .evaluation
            .as_ref()
            .is_some_and(|e| e.suite == file.evaluate);
        if !measured {
            println!("{head}: evaluating {}", cell.dir.display());
            let data = crate::train::prepare_data(&wanted)?;
            let device = parse_device(&wanted.device).map_err(|e| anyhow!(e))?;
            let evaluation =
                evaluate::final_evaluation(&cell.dir, &wanted, &data, &file.evaluate, &device)?;
            println!("{head}: {}", evaluate::describe(&evaluation));
        } else if finished {
            println!("{head}: done already ({})", cell.dir.display());
        }
    }
    write_report(&out, &file, &arms, &cells, baseline, None)?;
    Ok(0)
}

/// The runs of each arm at one value of the swept option (every run without a sweep).
fn arms_at(
    arms: &[Arm],
    rows: &[(&Cell, CompareRow)],
    level: Option<usize>,
) -> Vec<study::ArmRuns> {
    let mut grouped: Vec<study::ArmRuns> = arms
        .iter()
        .map(|a| study::ArmRuns {
            name: a.name.clone(),
            options: a.options.clone(),
            runs: Vec::new(),
        })
        .collect();
    for (cell, row) in rows.iter().filter(|(cell, _)| cell.level == level) {
        grouped[cell.arm].runs.push((cell.seed, row.clone()));
    }
    for arm in &mut grouped {
        arm.runs.sort_by_key(|(seed, _)| *seed);
    }
    grouped
}

fn write_report(
    out: &Path,
    file: &StudyFile,
    arms: &[Arm],
    cells: &[Cell],
    baseline: usize,
    partial_of: Option<usize>,
) -> Result<()> {
    let rows = cells
        .iter()
        .map(|cell| Ok((cell, report::load_run(&cell.dir).map_err(|e| anyhow!(e))?)))
        .collect::<Result<Vec<_>>>()?;
    let mut title = file.title.clone().unwrap_or_else(|| "Study".into());
    if let Some(total) = partial_of {
        title.push_str(&format!(
            " (partial: {} of {total} runs finished)",
            cells.len()
        ));
    }
    let levels: Vec<Option<usize>> = match &file.sweep {
        Some(sweep) => (0..sweep.values.len()).map(Some).collect(),
        None => vec![None],
    };
    let level_name = |level: Option<usize>| match (&file.sweep, level) {
        (Some(sweep), Some(level)) => Some(value_text(&sweep.values[level])),
        _ => None,
    };
    let (mut md, mut json) = match &file.sweep {
        None => {
            let (md, json) = study::study_report(&title, &arms_at(arms, &rows, None), baseline);
            (md, serde_json::from_str::<serde_json::Value>(&json)?)
        }
        Some(sweep) => {
            let mut md = format!(
                "# {title}

One report per value of `{}`.
",
                sweep.option
            );
            let mut reports = Vec::new();
            for &level in &levels {
                let companions: Vec<String> = sweep
                    .with
                    .iter()
                    .filter_map(|(key, values)| {
                        let value = values.as_array()?.get(level?)?;
                        Some(format!(", {key} = {}", value_text(value)))
                    })
                    .collect();
                let heading = format!(
                    "{} = {}{}",
                    sweep.option,
                    level_name(level).unwrap_or_default(),
                    companions.concat()
                );
                let (part, json) =
                    study::study_report(&heading, &arms_at(arms, &rows, level), baseline);
                // Each value's report sits one heading level down.
                md.push_str(&format!("\n#{}", part.replace("\n## ", "\n### ")));
                let mut json: serde_json::Value = serde_json::from_str(&json)?;
                json["value"] = serde_json::Value::String(level_name(level).unwrap_or_default());
                reports.push(json);
            }
            let json = serde_json::json!({
                "title": title,
                "baseline": arms[baseline].name,
                "sweep": { "option": sweep.option, "values": sweep.values.iter().map(value_text).collect::<Vec<_>>() },
                "levels": reports,
            });
            (md, json)
        }
    };
    if let Some(sweep) = &file.sweep {
        let (gain_md, gains) = gains_along_sweep(arms, &rows, baseline, &levels, &level_name);
        md.push_str(&gain_md);
        let labels: Vec<String> = levels
            .iter()
            .map(|&l| level_name(l).unwrap_or_default())
            .collect();
        let path = out.join(GAIN_PLOT);
        report::plot_gain(&path, &sweep.option, &labels, "final test acc (pp)", &gains)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let tested = primary_family(file, arms, &rows, baseline, &levels, &level_name);
    if !tested.is_empty() {
        md.push_str(&format!(
            "\n{}",
            study::family_markdown(&arms[baseline].name, &tested)
        ));
    } else {
        md.push_str(
            "\nThe study file declares no primary hypotheses: every comparison above is exploratory, \
             with 95% intervals per comparison and no correction for multiplicity.\n",
        );
    }
    json["primary"] = serde_json::to_value(&tested)?;
    let all_runs: Vec<study::ArmRuns> = levels
        .iter()
        .flat_map(|&level| {
            arms_at(arms, &rows, level).into_iter().map(move |mut arm| {
                if let Some(name) = level_name(level) {
                    arm.name = format!("{} @ {name}", arm.name);
                }
                arm
            })
        })
        .filter(|arm| !arm.runs.is_empty())
        .collect();
    let (provenance_md, provenance_json) = provenance(file, &rows);
    md.push_str(&provenance_md);
    json["provenance"] = provenance_json;
    md.push_str(&wall_times(&all_runs));
    match file.sweep {
        None => md.push_str(
            "\nPlots: `accuracy.png` (test accuracy per epoch, mean over seeds), `reliability.png` \
             (pooled over seeds), `spectrum.png` (mean over seeds), when measured.\n",
        ),
        Some(_) => md.push_str(&format!(
            "\nPlot: `{GAIN_PLOT}` (each arm's paired gain in final test accuracy over the baseline, with its 95% interval, at each value).\n"
        )),
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        write_atomic(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    write("report.md", md.as_bytes())?;
    write(
        "report.json",
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    if file.sweep.is_none() {
        plot_arms(out, &arms_at(arms, &rows, None))?;
    }
    println!("{md}");
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

/// The paired gain in final test accuracy of every arm over the baseline at each swept value:
/// a Markdown table, and the series of the plot.
fn gains_along_sweep(
    arms: &[Arm],
    rows: &[(&Cell, CompareRow)],
    baseline: usize,
    levels: &[Option<usize>],
    level_name: &dyn Fn(Option<usize>) -> Option<String>,
) -> (String, Vec<report::GainSeries>) {
    let metric = study::Metric::FinalTestAccuracy;
    let (scale, digits) = metric.scale();
    let others: Vec<usize> = (0..arms.len()).filter(|&i| i != baseline).collect();
    let mut md = format!(
        "\n## Gain along the sweep: final test acc, arm − {} (pp) [95% interval per cell, exploratory]\n\n| value |",
        arms[baseline].name
    );
    for &i in &others {
        md.push_str(&format!(" {} |", arms[i].name));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(others.len())));
    let mut series: Vec<report::GainSeries> = others
        .iter()
        .map(|&i| (arms[i].name.clone(), Vec::new()))
        .collect();
    for (position, &level) in levels.iter().enumerate() {
        let grouped = arms_at(arms, rows, level);
        md.push_str(&format!("| {} |", level_name(level).unwrap_or_default()));
        for (k, &i) in others.iter().enumerate() {
            let differences = study::paired_differences(&grouped[i], &grouped[baseline], &metric);
            let estimate = study::Estimate::of(&differences);
            let cell = estimate
                .as_ref()
                .map_or("–".into(), |e| e.difference_cell(scale, digits));
            md.push_str(&format!(" {cell} |"));
            if let Some(e) = estimate {
                let (mean, half) = (e.mean * scale, e.half_width * scale);
                series[k]
                    .1
                    .push((position as f64, mean, mean - half, mean + half));
            }
        }
        md.push('\n');
    }
    (md, series)
}

/// The study's declared hypotheses, each at each of its swept values, tested as one family.
fn primary_family(
    file: &StudyFile,
    arms: &[Arm],
    rows: &[(&Cell, CompareRow)],
    baseline: usize,
    levels: &[Option<usize>],
    level_name: &dyn Fn(Option<usize>) -> Option<String>,
) -> Vec<study::TestedHypothesis> {
    let known = study::metrics_for(&file.evaluate);
    let mut members = Vec::new();
    for hypothesis in &file.primary {
        let (Some(arm), Some(metric)) = (
            arms.iter().position(|a| a.name == hypothesis.arm),
            study::find_metric(&hypothesis.metric, &known),
        ) else {
            continue; // refused when the file was read
        };
        for &level in levels {
            let wanted = match (&hypothesis.at, &file.sweep, level) {
                (Some(at), Some(sweep), Some(level)) => at.contains(&sweep.values[level]),
                _ => true,
            };
            if !wanted {
                continue;
            }
            let grouped = arms_at(arms, rows, level);
            members.push(study::FamilyMember {
                arm: hypothesis.arm.clone(),
                metric: metric.clone(),
                direction: hypothesis.direction,
                at: level_name(level),
                differences: study::paired_differences(&grouped[arm], &grouped[baseline], &metric),
            });
        }
    }
    study::test_family(&members)
}

/// What produced the runs: the shared configuration, each arm's resolved options, the command,
/// and the code revisions and machines of the runs, flagged where they differ.
fn provenance(file: &StudyFile, rows: &[(&Cell, CompareRow)]) -> (String, serde_json::Value) {
    let command: Vec<String> = std::env::args().collect();
    let mut md = String::from("\n## Provenance\n\n");
    md.push_str(&format!(
        "Report written by `mmix {}`.\n\n",
        command[1..].join(" ")
    ));
    let shared = toml::to_string(&file.train).unwrap_or_default();
    md.push_str(&format!(
        "Shared options (`[train]`, as written; every other option takes its default):\n\n```toml\n{shared}```\n\n"
    ));
    let mut machines: Vec<(String, Vec<String>)> = Vec::new();
    for (cell, row) in rows {
        let key = match &row.provenance {
            Some(p) => format!(
                "revision `{}`, {}, {} threads, convolutions {}, {}",
                p.revision, p.cpu, p.threads, p.convolutions, p.precision
            ),
            None => "not recorded (a run older than the record)".into(),
        };
        let run = cell
            .dir
            .components()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        match machines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(run),
            None => machines.push((key, vec![run])),
        }
    }
    if machines.len() > 1 {
        md.push_str(&format!(
            "**The runs were made by {} different combinations of code and machine:**\n\n",
            machines.len()
        ));
    }
    md.push_str("| code and machine | runs |\n|---|---|\n");
    for (key, runs) in &machines {
        md.push_str(&format!(
            "| {key} | {} ({}) |\n",
            runs.len(),
            runs.join(", ")
        ));
    }
    let configurations: Vec<serde_json::Value> = rows
        .iter()
        .map(|(cell, row)| {
            serde_json::json!({
                "run": cell.dir,
                "seed": cell.seed,
                "configuration": row.config,
                "provenance": row.provenance,
            })
        })
        .collect();
    let json = serde_json::json!({
        "command": command[1..].join(" "),
        "shared": file.train,
        "code_and_machines": machines.len(),
        "runs": configurations,
    });
    (md, json)
}

fn wall_times(arms: &[study::ArmRuns]) -> String {
    let mut md = String::from(
        "\n## Wall times\n\n| arm | training with per-epoch evaluation (s, mean per run) | final evaluation suite (s, mean per run) | all runs (min) |\n|---|---|---|---|\n",
    );
    for arm in arms {
        let train: Vec<f64> = arm
            .runs
            .iter()
            .map(|(_, r)| r.history.iter().map(|h| h.seconds).sum())
            .collect();
        let suite: Vec<f64> = arm
            .runs
            .iter()
            .filter_map(|(_, r)| r.summary.evaluation.as_ref().map(|e| e.seconds))
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let total = (train.iter().sum::<f64>() + suite.iter().sum::<f64>()) / 60.0;
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.1} |\n",
            arm.name,
            mean(&train),
            mean(&suite),
            total
        ));
    }
    md
}

/// Mean test-accuracy curve, pooled reliability and mean spectrum per arm.
fn plot_arms(out: &Path, arms: &[study::ArmRuns]) -> Result<()> {
    let curves: Vec<(String, Vec<crate::train::EpochRecord>)> = arms
        .iter()
        .map(|arm| {
            let rows: Vec<&CompareRow> = arm.runs.iter().map(|(_, r)| r).collect();
            (arm.name.clone(), mean_history(&rows))
        })
        .collect();
    let path = out.join("accuracy.png");
    report::plot_overlay(&path, &curves)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let evaluations = |arm: &study::ArmRuns| {
        arm.runs
            .iter()
            .filter_map(|(_, r)| r.summary.evaluation.clone())
            .collect::<Vec<_>>()
    };
    let reliability: Vec<(String, Vec<crate::eval::ReliabilityBin>)> = arms
        .iter()
        .filter_map(|arm| {
            let evaluations = evaluations(arm);
            pooled_bins(&evaluations).map(|bins| (arm.name.clone(), bins))
        })
        .collect();
    if !reliability.is_empty() {
        let path = out.join("reliability.png");
        report::plot_reliability(&path, &reliability)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let spectra: Vec<(String, usize, Vec<f64>)> = arms
        .iter()
        .filter_map(|arm| {
            let spectra: Vec<_> = evaluations(arm)
                .into_iter()
                .filter_map(|e| e.spectrum)
                .collect();
            let first = spectra.first()?;
            let mut mean = vec![0.0; first.normalized_values.len()];
            for s in &spectra {
                for (m, v) in mean.iter_mut().zip(&s.normalized_values) {
                    *m += v / spectra.len() as f64;
                }
            }
            Some((arm.name.clone(), first.point, mean))
        })
        .collect();
    if let Some((_, point, _)) = spectra.first() {
        let path = out.join("spectrum.png");
        let named: Vec<(String, Vec<f64>)> = spectra
            .iter()
            .map(|(n, _, v)| (n.clone(), v.clone()))
            .collect();
        report::plot_spectrum(&path, *point, &named)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The epoch records of several runs averaged epoch by epoch, on the epochs all of them
/// measured (test accuracy is what is drawn).
fn mean_history(rows: &[&CompareRow]) -> Vec<crate::train::EpochRecord> {
    let shortest = rows.iter().map(|r| r.history.len()).min().unwrap_or(0);
    (0..shortest)
        .filter_map(|e| {
            let mut record = rows[0].history[e].clone();
            let accuracies: Option<Vec<f64>> = rows
                .iter()
                .map(|r| r.history[e].test.map(|t| t.accuracy))
                .collect();
            let mean = accuracies?.iter().sum::<f64>() / rows.len() as f64;
            record.test.as_mut()?.accuracy = mean;
            Some(record)
        })
        .collect()
}

/// Reliability bins summed over runs: count-weighted confidence and accuracy.
fn pooled_bins(
    evaluations: &[crate::eval::Evaluation],
) -> Option<Vec<crate::eval::ReliabilityBin>> {
    let mut pooled = evaluations.first()?.reliability.clone();
    for bin in &mut pooled {
        bin.count = 0;
        bin.confidence = 0.0;
        bin.accuracy = 0.0;
    }
    for evaluation in evaluations {
        for (p, b) in pooled.iter_mut().zip(&evaluation.reliability) {
            p.confidence += b.confidence * b.count as f64;
            p.accuracy += b.accuracy * b.count as f64;
            p.count += b.count;
        }
    }
    for bin in &mut pooled {
        let n = bin.count.max(1) as f64;
        bin.confidence /= n;
        bin.accuracy /= n;
    }
    Some(pooled)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every study the repository ships is one `mmix study` takes: a study only an AMX machine
    /// or a long session runs would otherwise rot unseen.
    #[test]
    fn the_shipped_studies_parse_and_resolve() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("studies");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(error) = super::check_text(&text, &path.display().to_string()) {
                    panic!("{error:#}");
                }
                checked.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(checked.iter().any(|name| name == "bf16"), "{checked:?}");
        // The same check refuses an arm a run would refuse.
        let text = std::fs::read_to_string(dir.join("bf16.toml")).unwrap();
        let broken = text.replace("precision = \"bf16\"", "precision = \"fp8\"");
        assert!(super::check_text(&broken, "bf16.toml").is_err());
    }
}
