//! What the tests that drive the `mmix` binary share.

#![allow(dead_code)] // each test file uses its own share

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary, with no dataset folder from the environment.
pub fn mmix() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mmix"));
    command.env_remove("MMIX_DATA");
    command
}

pub fn run(args: &[&str]) -> Output {
    mmix().args(args).output().expect("mmix runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `metrics.csv` without the timing columns, which no two runs share.
pub fn metrics_without_timing(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|line| line.split(',').take(10).collect::<Vec<_>>().join(","))
        .collect()
}

/// Metrics and weights, which a resumed run must share with the uninterrupted one.
pub fn outcome(dir: &Path) -> (Vec<String>, Vec<u8>) {
    (
        metrics_without_timing(dir),
        std::fs::read(dir.join("model.safetensors")).unwrap(),
    )
}

/// Checks that `run` ended as `reference` did: the same metrics (shown where they differ) and
/// the same weight bytes (not shown: they are large).
pub fn assert_same_outcome(run: &Path, reference: &Path, context: &str) {
    let (run, reference) = (outcome(run), outcome(reference));
    assert_eq!(run.0, reference.0, "{context}");
    assert!(run.1 == reference.1, "the weight files differ: {context}");
}

/// `mmix train` with `config`, into `out`, then `extra`.
fn train_args(config: &[&str], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["train".to_string()];
    args.extend(config.iter().map(|s| s.to_string()));
    args.extend(["--out".to_string(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A small, fast configuration on the embedded data: 600 training images, 100 validation.
pub fn small_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let config = [
        "--model",
        "small-cnn",
        "--width",
        "8",
        "--epochs",
        "2",
        "--train-subset",
        "600",
        "--valid-split",
        "100",
        "--batch-size",
        "50",
        "--seed",
        "5",
    ];
    train_args(&config, out, extra)
}

/// A run long enough to be killed after its first epoch and resumed: small-cnn (with batch
/// norm) on 3,000 embedded images, 3 epochs of 60 batches.
pub fn resumable_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let config = [
        "--model",
        "small-cnn",
        "--width",
        "8",
        "--epochs",
        "3",
        "--train-subset",
        "3000",
        "--batch-size",
        "50",
        "--seed",
        "7",
    ];
    train_args(&config, out, extra)
}

/// `args` with each `(flag, value)`'s value replaced (the flag must be there).
pub fn with_values(mut args: Vec<String>, replaced: &[(&str, &str)]) -> Vec<String> {
    for (flag, value) in replaced {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_string();
    }
    args
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits until `path` holds what `expect` accepts, failing the test after `limit`.
pub fn wait_for(path: &Path, expect: impl Fn(&str) -> bool, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(content) = std::fs::read_to_string(path)
            && expect(&content)
        {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `child` (a run into `dir`) once its first epoch is checkpointed.
pub fn kill_after_first_epoch(mut child: std::process::Child, dir: &Path) {
    wait_for(
        &dir.join("checkpoint/latest"),
        |s| s == "epoch-0001",
        Duration::from_secs(120),
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Starts `mmix` with `args` (a run into `dir`), kills it once its first epoch is checkpointed,
/// and resumes it to the end.
pub fn kill_after_first_epoch_and_resume(args: &[&str], dir: &Path) {
    let child = mmix().args(args).stdout(Stdio::null()).spawn().unwrap();
    kill_after_first_epoch(child, dir);
    let resumed = run(&["train", "--resume", dir.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
}

/// A run for comparing data-parallel training with one process: an mlp (no batch norm) on
/// 1,010 images in batches of 75, which two ranks split 37 + 38, and whose last batch of 35
/// they split 17 + 18.
pub fn data_parallel_run<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "mlp",
        "--width",
        "16",
        "--epochs",
        "3",
        "--train-subset",
        "1010",
        "--valid-split",
        "100",
        "--batch-size",
        "75",
        "--seed",
        "3",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// The float tensors of a safetensors file, by name.
pub fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut named: Vec<(String, Vec<f32>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Runs `test` of the calling test binary again, in a child process with
/// `MMIX_KERNELS=generic`: on Burn's generic operations, the code a GPU backend is given.
pub fn passes_on_the_generic_path(test: &str) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test])
        .env("MMIX_KERNELS", "generic")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} on the generic path:\n{stdout}{}",
        text(&output.stderr)
    );
}

/// The largest difference between two weight files' values, which must hold the same tensors.
pub fn largest_weight_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .flat_map(|((name_a, a), (name_b, b))| {
            assert_eq!(name_a, name_b);
            a.iter().zip(b).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// Every file under `dir` with a digest of its bytes, to tell whether a command changed
/// anything. A run's or study's lock file counts by its presence: it holds the PID of the
/// last process that worked there.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|name| name == ".mmix-lock") {
                files.push((path, 0));
            } else {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&std::fs::read(&path).unwrap(), &mut hasher);
                files.push((path.clone(), std::hash::Hasher::finish(&hasher)));
            }
        }
    }
    files.sort();
    files
}

pub fn assert_one_line_error(output: &Output, expected: &str, what: &str) {
    if let Some(problem) = one_line_error_problem(output, expected, what) {
        panic!("{problem}");
    }
}

/// What keeps `output` from being a failure that says `expected` in one line, if anything:
/// for tests that check many cases and report every one that fails, not just the first.
pub fn one_line_error_problem(output: &Output, expected: &str, what: &str) -> Option<String> {
    let stderr = text(&output.stderr);
    if output.status.success() {
        return Some(format!("{what} succeeded"));
    }
    if stderr.contains("panicked") {
        return Some(format!("{what} panicked: {stderr}"));
    }
    if stderr.trim_end().lines().count() != 1 {
        return Some(format!("{what}: not one line: {stderr}"));
    }
    if !(stderr.starts_with("error: ") && stderr.contains(expected)) {
        return Some(format!("{what}: expected '{expected}': {stderr}"));
    }
    None
}
