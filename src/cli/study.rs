//! `mmix study FILE.toml`: a grid of arms × seeds, trained one run at a time, skipping finished
//! runs and resuming an interrupted one, then a report over seeds with paired differences.
//! The study file's grammar, its checks and the report are the library's ([`crate::study`]);
//! here its cells become `mmix train` runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::report;
use crate::study::{self, Cell, Design};
use crate::train::run_dir;
use crate::train::{Devices, TrainConfig, TrainOptions};

use super::args::{StudyArgs, TrainArgs};
use super::evaluate;
use super::train as train_cmd;

/// Reads a study file's `text` (named `name` in errors) as `mmix study` does, for the study
/// folder `out`: each cell's options are `mmix train --config` keys, resolved as the command
/// line resolves them.
fn parse_text(text: &str, name: &str, out: &Path) -> Result<Design> {
    let resolve = |options: &toml::Table, seed: u64, dir: &Path| -> Result<TrainConfig, String> {
        let args = train_args(options, seed, dir).map_err(|e| format!("{e:#}"))?;
        train_cmd::resolve(&args).map_err(|e| format!("{e:#}"))
    };
    Ok(Design::parse(text, name, out, &resolve)?)
}

/// A cell's options as the `mmix train` arguments of its run.
fn train_args(options: &toml::Table, seed: u64, dir: &Path) -> Result<TrainArgs> {
    let options = TrainOptions::deserialize(toml::Value::Table(options.clone()))
        .map_err(|e| anyhow!("{}", e.message().trim_end()))?;
    Ok(TrainArgs {
        options: TrainOptions {
            seed: Some(seed),
            out: Some(dir.to_path_buf()),
            ..options
        },
        ..TrainArgs::default()
    })
}

fn cell_args(cell: &Cell) -> Result<TrainArgs> {
    train_args(&cell.options, cell.seed, &cell.dir)
}

/// The `mmix train` options of one arm of a study (its evaluation suite included), for a
/// single run of it at `seed` into `out`: what the demo runs.
#[allow(
    clippy::expect_used,
    reason = "cannot fail: every arm has a cell per seed"
)]
pub fn arm_run(text: &str, source: &str, arm: &str, seed: u64, out: &Path) -> Result<TrainArgs> {
    let design = parse_text(text, source, Path::new(""))?;
    let index = design
        .arms
        .iter()
        .position(|a| a.name == arm)
        .ok_or_else(|| anyhow!("{source} has no arm '{arm}'"))?;
    let cell = design
        .cells
        .iter()
        .find(|c| c.arm == index)
        .expect("every arm has a cell per seed");
    let args = cell_args(cell)?;
    Ok(TrainArgs {
        options: TrainOptions {
            seed: Some(seed),
            out: Some(out.to_path_buf()),
            suite: Some(design.file.evaluate.clone()),
            ..args.options
        },
        ..args
    })
}

/// Checks a study file's text as `mmix study` does before anything runs.
pub fn check_text(text: &str, name: &str) -> Result<()> {
    parse_text(text, name, Path::new("")).map(|_| ())
}

/// The study's folder: `--out`, or the file's path without `.toml`.
/// The command that continues the study: its file, and the folder where one was given.
fn again_command(args: &StudyArgs) -> String {
    // Quoted for a POSIX shell where the path holds more than plain characters.
    let word = |path: &Path| {
        let text = crate::fsio::path_text(path);
        let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c);
        match text.chars().all(plain) && !text.is_empty() {
            true => text,
            false => format!("'{}'", text.replace('\'', "'\\''")),
        }
    };
    let mut command = format!("mmix study {}", word(&args.file));
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", word(out)));
    }
    command
}

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

/// Whether the run in `cell`'s folder was trained with the options the study now gives it.
fn trained_as_declared(cell: &Cell, device: Option<&Devices>) -> Result<bool> {
    let saved = train_cmd::load_saved_config(&cell.dir)?;
    let mut wanted = cell.config.clone();
    if let Some(device) = device {
        wanted.device = device.clone();
    }
    Ok(study::same_run(&saved, &wanted))
}

pub fn run(args: &StudyArgs) -> Result<i32> {
    let out = study_folder(args)?;
    let text = crate::fsio::read_regular_text(&args.file)
        .with_context(|| format!("cannot read study file {}", args.file.display()))?;
    let design = parse_text(&text, &args.file.display().to_string(), &out)?;
    if let Some(devices) = &args.device {
        for name in devices.names() {
            name.open().map_err(|e| anyhow!(e))?;
        }
    }
    crate::fsio::check_own_folder(&out, &study::design::STUDY_ENTRIES)?;
    if !args.report_only {
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
    }
    // One process per study: a second would train the same runs at the same time.
    let _lock = match out.is_dir() {
        true => Some(crate::fsio::lock_folder(&out)?),
        false => None,
    };
    if args.report_only {
        return report_finished(args, &out, &design);
    }
    study::record_design(&args.file, &text, &out, &design.cells)?;
    let total = design.cells.len();
    println!(
        "study {}: {} arms × {} seeds = {total} runs → {}",
        args.file.display(),
        design.arms.len(),
        design.file.seeds.len(),
        out.display()
    );
    for (i, cell) in design.cells.iter().enumerate() {
        let head = format!(
            "[{}/{total}] {}, seed {}",
            i + 1,
            design.arms[cell.arm].name,
            cell.seed
        );
        if let Some(code) = run_cell(args, &design, cell, &head)? {
            return Ok(code);
        }
    }
    let cells: Vec<&Cell> = design.cells.iter().collect();
    report(&out, &design, &cells, None)?;
    Ok(0)
}

/// Trains `cell` (afresh, or on from its checkpoint) unless it finished, and measures it with
/// the study's suite unless it was; the exit status where the run was interrupted.
fn run_cell(args: &StudyArgs, design: &Design, cell: &Cell, head: &str) -> Result<Option<i32>> {
    let suite = &design.file.evaluate;
    let started = cell.dir.join(run_dir::CONFIG).exists();
    if started && !trained_as_declared(cell, args.device.as_ref())? {
        bail!(
            "{} was trained with other options than arm '{}' now gives; move it away or restore the arm",
            cell.dir.display(),
            design.arms[cell.arm].name
        );
    }
    let finished = started && report::load_run(&cell.dir).is_ok_and(|row| row.summary.completed);
    if !finished {
        println!("{head}: training → {}", cell.dir.display());
        let mut train_args = match started {
            true => TrainArgs {
                resume: Some(cell.dir.clone()),
                ..TrainArgs::default()
            },
            false => {
                let mut args = cell_args(cell)?;
                args.options.suite = Some(suite.clone());
                args
            }
        };
        train_args.options.device = args.device.clone().or(train_args.options.device);
        let result = train_cmd::run(&train_args, true)?;
        if result.interrupted {
            println!(
                "study interrupted; run `{}` again to continue",
                again_command(args)
            );
            return Ok(Some(train_cmd::INTERRUPTED_EXIT));
        }
    }
    let row = report::load_run(&cell.dir).map_err(|e| anyhow!(e))?;
    let measured = row
        .summary
        .evaluation
        .as_ref()
        .is_some_and(|e| e.suite == *suite);
    if !measured {
        println!("{head}: evaluating {}", cell.dir.display());
        let mut wanted = cell.config.clone();
        if let Some(device) = &args.device {
            wanted.device = device.clone();
        }
        let data = crate::train::prepare_data(&wanted)?;
        let device = wanted.device.names()[0].open().map_err(|e| anyhow!(e))?;
        let evaluation = evaluate::final_evaluation(&cell.dir, &wanted, &data, suite, &device)?;
        println!("{head}: {}", evaluate::describe(&evaluation));
    } else if finished {
        println!("{head}: done already ({})", cell.dir.display());
    }
    Ok(None)
}

/// `--report-only`: the report over the runs that finished, were measured with the study's
/// suite and were trained as the file now declares; the others are left out, and said so.
fn report_finished(args: &StudyArgs, out: &Path, design: &Design) -> Result<i32> {
    let total = design.cells.len();
    let mut finished = Vec::new();
    for cell in &design.cells {
        let done = report::load_run(&cell.dir).is_ok_and(|row| {
            row.summary.completed
                && row
                    .summary
                    .evaluation
                    .is_some_and(|e| e.suite == design.file.evaluate)
        });
        if !done {
            continue;
        }
        if !trained_as_declared(cell, args.device.as_ref())? {
            println!(
                "left out: {} was trained with other options than arm '{}' now gives",
                cell.dir.display(),
                design.arms[cell.arm].name
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
    report(out, design, &finished, partial_of)?;
    Ok(0)
}

/// Writes the study's report and prints it.
fn report(out: &Path, design: &Design, cells: &[&Cell], partial_of: Option<usize>) -> Result<()> {
    let command: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| crate::fsio::path_text(std::path::Path::new(&arg)))
        .collect();
    let md = study::write_report(out, design, cells, partial_of, &command.join(" "))?;
    println!("{md}");
    println!("report: {}", out.join(study::report::REPORT_MD).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_hint_after_an_interruption_keeps_the_folder_given() {
        let args = |out: Option<&str>| super::StudyArgs {
            file: "studies/x.toml".into(),
            out: out.map(Into::into),
            device: None,
            report_only: false,
        };
        assert_eq!(
            super::again_command(&args(None)),
            "mmix study studies/x.toml"
        );
        assert_eq!(
            super::again_command(&args(Some("runs/x 2"))),
            "mmix study studies/x.toml --out 'runs/x 2'"
        );
    }

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
