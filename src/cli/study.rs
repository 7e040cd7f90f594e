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
}

/// One cell of the grid, resolved before anything runs.
struct Cell {
    arm: usize,
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
    let text = std::fs::read_to_string(path)
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
        let mut merged = file.train.clone();
        merged.extend(table);
        for &seed in &file.seeds {
            let dir = out
                .join("runs")
                .join(&arm_name)
                .join(format!("seed-{seed}"));
            let mut args = TrainArgs::deserialize(toml::Value::Table(merged.clone()))
                .map_err(|e| anyhow!("{name}: arm '{arm_name}': {}", e.message().trim_end()))?;
            args.seed = Some(seed);
            args.out = Some(dir.clone());
            let config = train_cmd::resolve(&args)
                .map_err(|e| anyhow!("{name}: arm '{arm_name}': {e:#}"))?;
            let mut config = config;
            config
                .mix_config()
                .validate(&config.model.mix_points(), config.epochs)
                .map_err(|e| anyhow!("{name}: arm '{arm_name}': {e}"))?;
            config.evaluate = file.evaluate.clone();
            config
                .evaluate
                .validate(config.model.mix_points().len() - 1)
                .map_err(|e| anyhow!("{name}: [evaluate]: {e}"))?;
            cells.push(Cell {
                arm: index,
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
    // Seed-major order: a study stopped early still has every arm on its first seeds.
    cells.sort_by_key(|c| (file.seeds.iter().position(|&s| s == c.seed), c.arm));
    Ok((file, arms, cells, baseline))
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

pub fn run(args: &StudyArgs) -> Result<i32> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.file.with_extension(""));
    let (file, arms, cells, baseline) = parse(&args.file, &out)?;
    if let Some(device) = &args.device {
        parse_device(device).map_err(|e| anyhow!(e))?;
    }
    if args.report_only {
        let finished: Vec<Cell> = cells
            .into_iter()
            .filter(|cell| {
                report::load_run(&cell.dir).is_ok_and(|row| {
                    row.summary.completed
                        && row
                            .summary
                            .evaluation
                            .is_some_and(|e| e.suite == file.evaluate)
                })
            })
            .collect();
        let total = file.seeds.len() * arms.len();
        if finished.is_empty() {
            bail!("{}: no run of the study has finished yet", out.display());
        }
        println!("{} of {total} runs finished", finished.len());
        let partial_of = (finished.len() < total).then_some(total);
        write_report(&out, &file, &arms, &finished, baseline, partial_of)?;
        return Ok(0);
    }
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

fn write_report(
    out: &Path,
    file: &StudyFile,
    arms: &[Arm],
    cells: &[Cell],
    baseline: usize,
    partial_of: Option<usize>,
) -> Result<()> {
    let mut grouped: Vec<study::ArmRuns> = arms
        .iter()
        .map(|a| study::ArmRuns {
            name: a.name.clone(),
            options: a.options.clone(),
            runs: Vec::new(),
        })
        .collect();
    for cell in cells {
        let row = report::load_run(&cell.dir).map_err(|e| anyhow!(e))?;
        grouped[cell.arm].runs.push((cell.seed, row));
    }
    for arm in &mut grouped {
        arm.runs.sort_by_key(|(seed, _)| *seed);
    }
    let mut title = file.title.clone().unwrap_or_else(|| "Study".into());
    if let Some(total) = partial_of {
        title.push_str(&format!(
            " (partial: {} of {total} runs finished)",
            cells.len()
        ));
    }
    let (mut md, json) = study::study_report(&title, &grouped, baseline);
    md.push_str(&wall_times(&grouped));
    md.push_str(
        "\nPlots: `accuracy.png` (test accuracy per epoch, mean over seeds), `reliability.png` \
         (pooled over seeds), `spectrum.png` (mean over seeds), when measured.\n",
    );
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        write_atomic(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    write("report.md", md.as_bytes())?;
    write("report.json", json.as_bytes())?;
    plot_arms(out, &grouped)?;
    println!("{md}");
    println!("report: {}", out.join("report.md").display());
    Ok(())
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

/// The epoch records of several runs averaged epoch by epoch (test accuracy is what is drawn).
fn mean_history(rows: &[&CompareRow]) -> Vec<crate::train::EpochRecord> {
    let shortest = rows.iter().map(|r| r.history.len()).min().unwrap_or(0);
    (0..shortest)
        .map(|e| {
            let mut record = rows[0].history[e].clone();
            record.test.accuracy =
                rows.iter().map(|r| r.history[e].test.accuracy).sum::<f64>() / rows.len() as f64;
            record
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
