//! The smaller subcommands: eval, compare, demo, models, data inspect and bench.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::bench::{StepBenchConfig, bench_data, bench_step};
use crate::data::{
    self, Augmentation, Dataset, DatasetName, ImageSet, LoadOptions, Normalization, make_batch,
};
use crate::eval::{EvalSuite, Evaluation, run_suite};
use crate::fsio::path_text;
use crate::mixup::{MixMode, PointShape};
use crate::models::ModelKind;
use crate::report;
use crate::train::{self, checkpoint};

use super::args::{BenchArgs, CompareArgs, DemoArgs, EvalArgs, EvalSplit, InspectArgs, ParityArgs};
use super::evaluate;
use super::study;
use super::train as train_cmd;
use crate::study::family::FAMILY_ALPHA;
use crate::study::tables::MetricReport;
use crate::study::{Estimate, StudyReport, holm_adjusted};

pub fn eval(args: &EvalArgs) -> Result<()> {
    train::run_dir::check_own_entries(&args.dir)?;
    let mut config = train_cmd::load_saved_config(&args.dir)?;
    // On the test split it writes the run's evaluation and reports: not while the run trains.
    let _lock = match args.split {
        EvalSplit::Test => Some(crate::fsio::lock_folder(&args.dir)?),
        _ => None,
    };
    if let Some(name) = &config.custom_model {
        bail!(
            "{} holds a run of the library model '{name}', which only the program that defines it can build (it evaluates with `train::run_dir::evaluate_latest`)",
            args.dir.display()
        );
    }
    if let Some(device) = args.device {
        config.device = device.into();
    }
    // A run trained on several GPUs is evaluated on the first.
    let device = config.device.names()[0].open().map_err(|e| anyhow!(e))?;
    let suite = EvalSuite {
        attacks: args.attacks.clone(),
        attack_examples: args.attack_examples,
        deformations: args.deformations.clone(),
        spectrum_at: args.spectrum_at,
        ..EvalSuite::default()
    };
    suite
        .validate(config.model.mix_points().len() - 1)
        .map_err(|e| anyhow!(e))?;
    let data = train::prepare_data(&config)?;
    let folder = checkpoint::latest(&args.dir.join("checkpoint"))?
        .ok_or_else(|| anyhow!("{} has no checkpoint yet", args.dir.display()))?;
    let evaluation = match args.split {
        EvalSplit::Test => {
            // The test split's results belong to the run: evaluation.json and summary.json.
            let evaluation =
                evaluate::final_evaluation(&args.dir, &config, &data, &suite, &device)?;
            let state = checkpoint::load_state(&folder)?;
            report::write_run_reports(&args.dir, &config, &state, Some(&evaluation))
                .with_context(|| format!("cannot write the reports in {}", args.dir.display()))?;
            evaluation
        }
        split => {
            let set = match split {
                EvalSplit::Valid => data.valid.as_ref().ok_or_else(|| {
                    anyhow!("the run in {} has no validation split", args.dir.display())
                })?,
                _ => &data.train,
            };
            let model =
                checkpoint::load_model(&folder, train::build_model(&config, &data, &device)?)?;
            let epochs_done = checkpoint::load_state(&folder)?.epochs_done;
            run_suite(
                &model,
                set,
                &data.normalization,
                &suite,
                epochs_done,
                config.eval_batch_size,
                &device,
                None,
            )
        }
    };
    let out = serde_json::json!({
        "run": path_text(&args.dir),
        "checkpoint": path_text(&folder),
        "split": args.split,
        "accuracy": evaluation.clean.accuracy,
        "nll": evaluation.clean.nll,
        "ece": evaluation.clean.ece,
        "examples": evaluation.clean.count,
        "evaluation": evaluation,
    });
    println!("{out}");
    Ok(())
}

/// The images `compare` writes: the overlay at `plot`, and its reliability and spectrum
/// siblings.
fn compare_plots(plot: &Path) -> [PathBuf; 3] {
    let stem = plot.file_stem().unwrap_or_default().to_string_lossy();
    let sibling = |suffix: &str| plot.with_file_name(format!("{stem}-{suffix}.png"));
    [
        plot.to_path_buf(),
        sibling("reliability"),
        sibling("spectrum"),
    ]
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in &args.dirs {
        // The same run named twice would count as two seeds.
        let canonical = dir
            .canonicalize()
            .with_context(|| format!("cannot read run folder {}", dir.display()))?;
        if seen.contains(&canonical) {
            bail!("{} is named twice; each run counts once", dir.display());
        }
        seen.push(canonical);
    }
    super::require_path("--plot", &args.plot)?;
    for path in compare_plots(&args.plot) {
        crate::fsio::check_replaceable_png(&path)?;
    }
    let rows = args
        .dirs
        .iter()
        .map(|dir| report::load_run(dir).map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    // A copy of a run has its configuration and its seed: it would count as a second seed.
    for (i, row) in rows.iter().enumerate() {
        if let Some(first) = rows[..i]
            .iter()
            .find(|earlier| earlier.config == row.config)
        {
            bail!(
                "{} and {} are runs of one configuration and seed (a copy?); each run counts once",
                first.dir,
                row.dir
            );
        }
    }
    print!("{}", report::compare_table(&rows));
    let curves: Vec<(String, Vec<train::EpochRecord>)> = rows
        .iter()
        .map(|r| {
            let label = format!("{} seed {}", report::run_label(&r.config), r.config.seed);
            (label, r.history.clone())
        })
        .collect();
    report::plot_overlay(&args.plot, &curves)
        .with_context(|| format!("cannot write {}", args.plot.display()))?;
    println!("\ntest-accuracy curves: {}", args.plot.display());
    let evaluated: Vec<(String, &Evaluation)> = rows
        .iter()
        .zip(&curves)
        .filter_map(|(r, (label, _))| r.summary.evaluation.as_ref().map(|e| (label.clone(), e)))
        .collect();
    if evaluated.is_empty() {
        return Ok(());
    }
    let [_, path, spectrum_path] = compare_plots(&args.plot);
    let bins: Vec<_> = evaluated
        .iter()
        .map(|(label, e)| (label.clone(), e.reliability.clone()))
        .collect();
    report::plot_reliability(&path, &bins)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("reliability diagrams: {}", path.display());
    let spectra: Vec<_> = evaluated
        .iter()
        .filter_map(|(label, e)| e.spectrum.as_ref().map(|s| (label.clone(), s)))
        .collect();
    if let Some((_, first)) = spectra.first() {
        let path = spectrum_path;
        let values: Vec<_> = spectra
            .iter()
            .filter(|(_, s)| s.point == first.point)
            .map(|(label, s)| (label.clone(), s.normalized_values.clone()))
            .collect();
        report::plot_spectrum(&path, first.point, &values)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("representation spectra: {}", path.display());
    }
    Ok(())
}

#[allow(clippy::expect_used, reason = "cannot fail: some suffix is free")]
fn first_free(base: &Path) -> PathBuf {
    (0..)
        .map(|i| {
            if i == 0 {
                base.to_path_buf()
            } else {
                PathBuf::from(format!("{}-{i}", base.display()))
            }
        })
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// The design the demo draws once: the pre-registered study whose declared gain in clean
/// accuracy held, the largest that survives correction; what it found over its seeds.
const DEMO_STUDY: &str = include_str!("../../studies/few-labels-replication.toml");
const DEMO_STUDY_PATH: &str = "studies/few-labels-replication.toml";
const DEMO_FINDINGS: &str = include_str!("../../studies/few-labels-replication/report.json");
const DEMO_REPORT: &str = "studies/few-labels-replication/report.md";
/// The demo draws that design from the Fashion-MNIST subset compiled into the binary, so
/// that it runs on a fresh machine.
const DEMO_DATASET: &str = "fashion-mnist-mini";
const DEMO_ATTACK_EXAMPLES: usize = 500;
const DEMO_BASELINE: &str = "none";
const DEMO_MIXED: &str = "manifold-a2";
/// Where mixing costs: short training on plenty of data.
const COST_FINDINGS: &str = include_str!("../../studies/fashion-mnist-mini/report.json");
const COST_REPORT: &str = "studies/fashion-mnist-mini/report.md";

/// Runs the demo; the exit status is [`train_cmd::INTERRUPTED_EXIT`] where Ctrl-C stopped a
/// run (its checkpoint kept), else 0.
pub fn demo(args: &DemoArgs) -> Result<i32> {
    let root = match &args.out {
        Some(dir) => {
            if dir.exists() {
                bail!("{} already exists; choose another --out", dir.display());
            }
            dir.clone()
        }
        None => first_free(Path::new("runs/demo")),
    };
    println!(
        "demo: one draw (seed {}) of the design of {DEMO_STUDY_PATH} (small-cnn width 32, 100 labelled images per class, no augmentation, 40 epochs), here on the embedded Fashion-MNIST subset: arms '{DEMO_BASELINE}' and '{DEMO_MIXED}'\n",
        args.seed
    );
    let mut dirs = Vec::new();
    for arm in [DEMO_BASELINE, DEMO_MIXED] {
        let dir = root.join(arm);
        let mut train_args = study::arm_run(DEMO_STUDY, DEMO_STUDY_PATH, arm, args.seed, &dir)?;
        train_args.options.dataset = Some(DEMO_DATASET.into());
        // Half the embedded test split is attacked: PGD's steps would double the demo's time.
        if let Some(suite) = train_args.options.suite.as_mut() {
            suite.attack_examples = Some(DEMO_ATTACK_EXAMPLES);
        }
        train_args.options.device = Some(args.device.clone());
        if let Some(epochs) = args.epochs {
            train_args.options.epochs = Some(epochs);
        }
        let result = train_cmd::run(&train_args, false)?;
        train_cmd::print_result(&result);
        if result.interrupted {
            return Ok(train_cmd::INTERRUPTED_EXIT);
        }
        println!();
        dirs.push(dir);
    }
    compare(&CompareArgs {
        dirs: dirs.clone(),
        plot: root.join("compare.png"),
    })?;
    println!(
        "per-run curves: {} and {}\n",
        dirs[0].join("curves.png").display(),
        dirs[1].join("curves.png").display()
    );
    println!(
        "The two runs above are one draw (seed {}) on the embedded subset, not evidence on their own; the study's paired intervals over its seeds, on the full Fashion-MNIST, are:\n",
        args.seed
    );
    let (declared, any_held) = declared_findings(DEMO_FINDINGS, DEMO_REPORT)?;
    print!("{declared}");
    if declared.contains("(partial:") {
        println!("That study has not finished: none of its hypotheses can hold yet.");
    } else if !any_held {
        println!("No declared gain in clean accuracy survives the correction.");
    }
    println!();
    print!(
        "{}",
        study_findings(DEMO_FINDINGS, DEMO_REPORT, DEMO_MIXED, DEMO_BASELINE)?
    );
    println!(
        "\nWhere mixing costs: with plenty of data and short training, clean accuracy, calibration and accuracy under deformations fall, and robustness to attacks rises:\n"
    );
    print!(
        "{}",
        study_findings(COST_FINDINGS, COST_REPORT, DEMO_MIXED, DEMO_BASELINE)?
    );
    Ok(0)
}

/// The paired differences of `arm` against `baseline` that a study's `report.json` holds,
/// each with a verdict corrected (Holm) over the metrics shown, which form one family.
fn study_findings(report: &str, source: &str, arm: &str, baseline: &str) -> Result<String> {
    let report: StudyReport = serde_json::from_str(report)?;
    let entry = report
        .arms
        .iter()
        .find(|a| a.arm == arm)
        .ok_or_else(|| anyhow!("the study report has no arm '{arm}'"))?;
    let shown: Vec<(&MetricReport, &Estimate)> = entry
        .metrics
        .iter()
        .filter_map(|m| Some((m, m.difference.as_ref()?)))
        .collect();
    let holm = holm_adjusted(&shown.iter().map(|(_, d)| d.p_value()).collect::<Vec<_>>());
    let mut out = format!(
        "What the study \"{}\" found over {} seeds ({source}), {arm} − {baseline}, mean [95% interval]; verdicts corrected (Holm) over the {} metrics shown:\n",
        report.title,
        entry.seeds.len(),
        shown.len()
    );
    for ((metric, difference), adjusted) in shown.iter().zip(holm) {
        let (scale, digits) = (metric.scale, metric.digits);
        let (mean, half) = (difference.mean * scale, difference.half_width * scale);
        let verdict = match adjusted < FAMILY_ALPHA {
            true if (difference.mean > 0.0) == metric.higher_is_better => "better",
            true => "worse",
            false => "not resolved",
        };
        out.push_str(&format!(
            "  {:<34} {:+10.digits$} [{:+.digits$}, {:+.digits$}]  {verdict}\n",
            metric.metric,
            mean,
            mean - half,
            mean + half
        ));
    }
    Ok(out)
}

/// A study's pre-registered family, as its report tested it, in words.
fn declared_findings(report: &str, source: &str) -> Result<(String, bool)> {
    let report: StudyReport = serde_json::from_str(report)?;
    let mut out = format!(
        "The pre-registered test: \"{}\" ({source}), {} hypotheses declared before its runs, Holm-corrected:\n",
        report.title,
        report.primary.len()
    );
    let mut any_held = false;
    for hypothesis in &report.primary {
        let (scale, digits) = (hypothesis.scale, hypothesis.digits);
        let interval = match &hypothesis.estimate {
            Some(e) if e.n >= 2 => {
                let (mean, half) = (e.mean * scale, hypothesis.simultaneous_half_width * scale);
                format!(
                    "{mean:+.digits$} [{:+.digits$}, {:+.digits$}] (simultaneous), over {} seeds",
                    mean - half,
                    mean + half,
                    e.n
                )
            }
            Some(e) => format!("{:+.digits$} over 1 seed", e.mean * scale),
            None => "no runs yet".into(),
        };
        any_held |= hypothesis.held;
        out.push_str(&format!(
            "  {} {} {}{}: {interval}, Holm p = {}  {}\n",
            hypothesis.arm,
            hypothesis.metric,
            hypothesis.direction,
            hypothesis
                .at
                .as_ref()
                .map(|at| format!(" at {at}"))
                .unwrap_or_default(),
            match hypothesis.holm_p_value {
                p if p.is_nan() => "–".into(),
                p => format!("{p:.3}"),
            },
            if hypothesis.held { "held" } else { "not held" }
        ));
    }
    Ok((out, any_held))
}

/// `mmix parity`: every golden case on the device, one line each; exit status 1 if any
/// disagrees.
pub fn parity(args: &ParityArgs) -> Result<i32> {
    let device = args.device.open().map_err(|reason| anyhow!("{reason}"))?;
    let mut failed = 0;
    for case in &crate::parity::CASES {
        match crate::parity::check(&args.cases, case, &device) {
            Ok(agreement) => {
                let (parameter, error, tolerance) = &agreement.closest_gradient;
                println!(
                    "ok {}: logits {:.1e} (tolerance {:.1e}), loss {} (PyTorch {}), {} gradients, nearest its tolerance {parameter} {error:.1e} of {tolerance:.1e}",
                    case.name,
                    agreement.logits.0,
                    agreement.logits.1,
                    agreement.loss.0,
                    agreement.loss.1,
                    agreement.gradients,
                );
            }
            Err(disagreement) => {
                failed += 1;
                println!("FAILED {}: {disagreement}", case.name);
            }
        }
    }
    println!(
        "{} of {} golden cases match PyTorch on {}",
        crate::parity::CASES.len() - failed,
        crate::parity::CASES.len(),
        args.device
    );
    Ok(i32::from(failed > 0))
}

pub fn models() -> Result<()> {
    println!("| model | mix points | paper set | default width |\n|---|---|---|---|");
    let footnote = "Flat points take interpolating mixes only (not patchup); the logits, \
                    after every point, take --mix output.";
    for name in ModelKind::EXAMPLES {
        let kind: ModelKind = name.parse()?;
        let points: Vec<String> = kind
            .mix_points()
            .iter()
            .map(|p| match p.shape {
                PointShape::Map => format!("{} {}", p.index, p.name),
                PointShape::Vector => format!("{} {} (flat)", p.index, p.name),
            })
            .collect();
        println!(
            "| {} | {} | {:?} | {} |",
            if name == "wrn-28-10" {
                "wrn-<depth>-<k> (e.g. wrn-28-10)"
            } else {
                name
            },
            points.join(", "),
            kind.paper_mix_points(),
            kind.default_width()
        );
    }
    println!("\n{footnote}");
    Ok(())
}

/// A grid of up to eight samples per class (rows), scaled ×2.
fn sample_grid(
    set: &ImageSet,
    classes: usize,
    augmented: Option<(&Normalization, &Augmentation, u64)>,
) -> image::RgbImage {
    const PER_CLASS: usize = 8;
    const SCALE: usize = 2;
    let size = set.size;
    let cell = size * SCALE + 2;
    let mut grid = image::RgbImage::from_pixel(
        (PER_CLASS * cell) as u32,
        (classes * cell) as u32,
        image::Rgb([255, 255, 255]),
    );
    let mut rng = augmented.map(|(_, _, seed)| ChaCha12Rng::seed_from_u64(seed));
    for class in 0..classes {
        let members: Vec<usize> = (0..set.len())
            .filter(|&i| set.labels[i] == class)
            .take(PER_CLASS)
            .collect();
        for (col, &index) in members.iter().enumerate() {
            let pixels: Vec<u8> = match (&augmented, rng.as_mut()) {
                (Some((norm, aug, _)), Some(rng)) => {
                    // Undo the normalisation so augmented samples show as images again.
                    let batch = make_batch(set, &[index], norm, Some((*aug, rng)));
                    let plane = size * size;
                    batch
                        .images
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let c = i / plane;
                            ((v * norm.std[c] + norm.mean[c]) * 255.0)
                                .round()
                                .clamp(0.0, 255.0) as u8
                        })
                        .collect()
                }
                _ => set.image(index).to_vec(),
            };
            let plane = size * size;
            for y in 0..size * SCALE {
                for x in 0..size * SCALE {
                    let p = (y / SCALE) * size + x / SCALE;
                    let rgb = if set.channels == 3 {
                        [pixels[p], pixels[plane + p], pixels[2 * plane + p]]
                    } else {
                        [pixels[p]; 3]
                    };
                    grid.put_pixel(
                        (col * cell + 1 + x) as u32,
                        (class * cell + 1 + y) as u32,
                        image::Rgb(rgb),
                    );
                }
            }
        }
    }
    grid
}

fn load_named(name: &str, data_dir: &Option<PathBuf>) -> Result<Dataset> {
    let name: DatasetName = name.parse()?;
    let options = LoadOptions {
        data_dir: data_dir.clone(),
        ..Default::default()
    };
    Ok(data::load(name, &options)?)
}

/// What `data inspect` writes into its folder.
const SAMPLES: &str = "samples.png";

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let dataset = load_named(&args.dataset, &args.data_dir)?;
    let classes = dataset.classes();
    let (mean, std) = dataset.train.channel_stats();
    println!("dataset {} from {}", dataset.name, dataset.source);
    println!(
        "image shape: {} × {} × {} (channels × height × width)",
        dataset.train.channels, dataset.train.size, dataset.train.size
    );
    println!("training mean {mean:.4?} std {std:.4?} (pixels scaled to [0, 1])");
    println!("default augmentation: {:?}", dataset.default_augmentation());
    let train_counts = dataset.train.class_counts(classes);
    let test_counts = dataset.test.class_counts(classes);
    println!("| class | name | train | test |\n|---|---|---|---|");
    for c in 0..classes {
        println!(
            "| {c} | {} | {} | {} |",
            dataset.class_names[c], train_counts[c], test_counts[c]
        );
    }
    println!(
        "| all | | {} | {} |",
        dataset.train.len(),
        dataset.test.len()
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("inspect-{}", dataset.name)));
    super::require_path("--out", &out)?;
    crate::fsio::check_own_folder(&out, &[SAMPLES])?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let normalization = Normalization { mean, std };
    let augmentation = dataset.default_augmentation();
    let grid = sample_grid(
        &dataset.train,
        classes.min(20),
        args.augment
            .then_some((&normalization, &augmentation, args.seed)),
    );
    let path = out.join(SAMPLES);
    report::write_png(&path, &grid).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "samples (one row per class{}): {}",
        if args.augment { ", augmented" } else { "" },
        path.display()
    );
    Ok(())
}

/// The most steps (or warm-up steps) one `mmix bench` times: hours of steps on any model, and
/// far from a count whose timings would not fit in memory.
const MAX_BENCH_STEPS: usize = 100_000;

pub fn bench(args: &BenchArgs) -> Result<()> {
    for (flag, steps) in [("--steps", args.steps), ("--warmup", args.warmup)] {
        if steps > MAX_BENCH_STEPS {
            bail!("{flag} must be at most {MAX_BENCH_STEPS}, got {steps}");
        }
    }
    if args.data {
        let dataset = load_named(&args.dataset, &args.data_dir)?;
        let (mean, std) = dataset.train.channel_stats();
        let result = bench_data(
            &dataset.train,
            &Normalization { mean, std },
            &dataset.default_augmentation(),
            args.batch_size,
            args.steps.max(1) * 10,
            &dataset.name.to_string(),
        );
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let kind: ModelKind = args.model.parse()?;
    let world = crate::distributed::world();
    let device = super::train::open_device_for_rank(args.device, world)?;
    if world.rank() == 0 {
        super::note_fast_path(&device, args.precision);
    }
    let config = StepBenchConfig {
        model: kind,
        width: args.width.unwrap_or_else(|| kind.default_width()),
        batch: args.batch_size,
        mix: args.mix,
        per_example: args.per_example,
        mix_loss: args.mix_loss,
        channels: args.channels,
        image_size: args.image_size,
        classes: 10,
        steps: args.steps,
        warmup: args.warmup,
        precision: args.precision,
        semi: args.semi.map(|_| crate::bench::SemiBench {
            mix: args.semi_mix,
            batch: args.unlabeled_batch_size.unwrap_or(args.batch_size),
        }),
    };
    if config.batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(semi) = &config.semi {
        if !matches!(semi.mix, MixMode::Input | MixMode::Manifold) {
            bail!("--semi-mix must be input or manifold, not {}", semi.mix);
        }
        if semi.batch == 0 {
            bail!("--unlabeled-batch-size must be at least 1");
        }
    }
    let model = crate::models::ModelConfig::new(
        config.model,
        config.channels,
        config.image_size,
        config.classes,
    )
    .with_width(config.width);
    model.validate()?;
    let needed = model.training_bytes(
        config.batch * config.mix_loss.graphs() + config.semi.map_or(0, |semi| semi.batch),
    )?;
    crate::machine::check_fits(
        format!(
            "{} at --width {} and --batch-size {} on {}×{} images",
            config.model, config.width, config.batch, config.image_size, config.image_size
        ),
        needed,
        "lower --width, --batch-size or --image-size",
    )?;
    let mut result = bench_step(&config, &device, &args.device.to_string())?;
    result.estimated_peak_mb = Some(needed as f64 / (1 << 20) as f64);
    if world.rank() == 0 {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo reads the findings it prints from the reports compiled into it, typed.
    #[test]
    fn the_demo_reads_its_studies_findings() {
        let (declared, _) = declared_findings(DEMO_FINDINGS, DEMO_REPORT).unwrap();
        assert!(
            declared.contains(DEMO_MIXED) && declared.contains("Holm p = "),
            "{declared}"
        );
        for (report, source) in [(DEMO_FINDINGS, DEMO_REPORT), (COST_FINDINGS, COST_REPORT)] {
            let found = study_findings(report, source, DEMO_MIXED, DEMO_BASELINE).unwrap();
            assert!(found.contains("final test acc (%)"), "{found}");
            assert!(
                ["better", "worse", "not resolved"]
                    .iter()
                    .any(|verdict| found.contains(verdict)),
                "{found}"
            );
        }
        assert!(study_findings(COST_FINDINGS, COST_REPORT, "no-such-arm", DEMO_BASELINE).is_err());
    }
}
