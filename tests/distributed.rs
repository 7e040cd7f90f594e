//! Data-parallel training under `mpirun -np 2` on this machine (Open MPI over loopback),
//! driven as a user drives it. Built with `--features mpi`; CI installs Open MPI for it.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    assert_same_outcome, data_parallel_run as train_args, kill_after_first_epoch,
    largest_weight_difference as largest_difference, run, text, wait_for,
};

/// `mpirun -np RANKS mmix`, as root if need be, over loopback TCP.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "-np",
            &ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args([
            "--mca",
            "btl",
            "self,tcp",
            "--mca",
            "btl_tcp_if_include",
            "lo",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env_remove("MMIX_DATA")
        .arg(env!("CARGO_BIN_EXE_mmix"));
    command
}

fn mpirun_output(ranks: usize, args: &[&str]) -> Output {
    mpirun(ranks)
        .args(args)
        .output()
        .expect("mpirun runs (Open MPI's openmpi-bin)")
}

/// Starts `args` on two ranks with their output discarded, to be stopped by the test.
fn spawn_on_two_ranks(args: &[String]) -> std::process::Child {
    mpirun(2)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `args` on two ranks, which must succeed.
fn train_on_two_ranks(args: &[String]) {
    let output = mpirun(2).args(args).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn two_ranks_train_the_model_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, mixing) in [
        ("manifold", vec!["--mix", "manifold"]),
        // Per-example masks come from each example's row of the global batch.
        (
            "patchup",
            vec!["--mix", "patchup", "--per-example", "--mix-layers", "0"],
        ),
        // The unlabelled batch (76: 38 + 38) is split otherwise than the labelled one.
        (
            "ict",
            vec![
                "--mix",
                "manifold",
                "--semi",
                "ict",
                "--semi-mix",
                "manifold",
                "--unlabeled",
                "300",
                "--unlabeled-batch-size",
                "76",
                "--consistency",
                "10",
            ],
        ),
    ] {
        let ranks_dir = tmp.path().join(format!("{name}-2-ranks"));
        let alone_dir = tmp.path().join(format!("{name}-alone"));
        let ranks = mpirun_output(2, &train_args(ranks_dir.to_str().unwrap(), &mixing));
        assert!(ranks.status.success(), "{}", text(&ranks.stderr));
        let stdout = text(&ranks.stdout);
        assert!(
            stdout.contains("global batch 75 = 2 ranks × 37–38"),
            "{stdout}"
        );
        // One process drawing partners within the same two halves of each batch.
        let mut alone = train_args(alone_dir.to_str().unwrap(), &mixing);
        alone.extend(["--partner-groups", "2"]);
        let alone = run(&alone);
        assert!(alone.status.success(), "{}", text(&alone.stderr));

        let difference = largest_difference(
            &ranks_dir.join("model.safetensors"),
            &alone_dir.join("model.safetensors"),
        );
        // Sums in another order differ in the last bits; a wrong weighting, draw or shard
        // moves weights by 1e-3 and more in three epochs.
        assert!(difference < 1e-5, "{name}: weights differ by {difference}");
        // Only rank 0 prints: one headline.
        assert_eq!(stdout.matches("started mlp").count(), 1, "{stdout}");
    }
}

/// Pids of the processes whose command line names `dir`, other than zombies.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_str().unwrap().as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle) && !status.contains("State:\tZ")
        })
        .collect()
}

/// The two ranks of the run into `dir` (not their `launcher`), once both have their SIGTERM
/// handler in place (bit 15 of `SigCgt` in `/proc/PID/status`).
fn ranks_catching_sigterm(dir: &Path, launcher: u32) -> Vec<u32> {
    let catches_sigterm = |pid: &u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    let started = std::time::Instant::now();
    loop {
        let ranks: Vec<u32> = processes_naming(dir)
            .into_iter()
            .filter(|&pid| pid != launcher)
            .collect();
        if ranks.len() == 2 && ranks.iter().all(catches_sigterm) {
            return ranks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "two ranks catching SIGTERM never appeared: {ranks:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_two_rank_run_killed_and_resumed_equals_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let killed = tmp.path().join("killed");
    // A model with batch norm, so the ranks' running statistics are averaged and saved.
    let args = |out: &Path| common::resumable_run(out, &[]);
    train_on_two_ranks(&args(&whole));
    let launcher = spawn_on_two_ranks(&args(&killed));
    kill_after_first_epoch(launcher, &killed);
    // The ranks end when their launcher does.
    let started = std::time::Instant::now();
    while !processes_naming(&killed).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ranks outlived mpirun"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = mpirun_output(2, &["train", "--resume", killed.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(text(&resumed.stdout).contains("resumed small-cnn"));

    assert_same_outcome(&killed, &whole, "resumed against uninterrupted");
}

#[test]
fn bad_input_stops_every_rank_with_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--devices", "cpu,cpu"],
            "under mpirun each rank takes one",
        ),
        (
            &["--batch-size", "1"],
            "--batch-size (1) is smaller than --partner-groups (2, by default one per rank)",
        ),
        (
            &["--partner-groups", "3"],
            "--partner-groups 3 does not split over 2 ranks",
        ),
        (
            &["--dataset", "fashion-mnist", "--data-dir", "/nonexistent"],
            "/nonexistent",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["train", "--model", "mlp", "--epochs", "1", "--out", out];
        args.extend_from_slice(extra);
        let output = mpirun_output(2, &args);
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        let ours = error_lines(&stderr);
        assert_eq!(ours.len(), 2, "one line per rank: {stderr}");
        assert!(ours.iter().all(|l| l.contains(expected)), "{stderr}");
        assert!(!Path::new(out).exists(), "{extra:?} wrote {out}");
    }
    // Commands that do not run across ranks say so.
    let output = mpirun_output(2, &["models"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("only `mmix train` and `mmix bench` run across 2 ranks"));
}

#[test]
fn a_two_rank_run_stopped_by_sigterm_resumes_in_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, stopped) = (tmp.path().join("whole"), tmp.path().join("stopped"));
    let args = |out: &Path| -> Vec<String> {
        let out = out.to_str().unwrap();
        [
            "train",
            "--model",
            "mlp",
            "--width",
            "64",
            "--epochs",
            "4",
            "--train-subset",
            "6000",
            "--batch-size",
            "50",
            "--seed",
            "2",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    train_on_two_ranks(&args(&whole));

    let launcher = spawn_on_two_ranks(&args(&stopped));
    wait_for(
        &stopped.join("train.log"),
        |log| log.contains("started mlp"),
        Duration::from_secs(120),
    );
    // Each rank is signalled, as a batch scheduler signals every task: mpirun's own relay
    // takes most of a second here, as long as this whole run, so it would race the end.
    let ranks = ranks_catching_sigterm(&stopped, launcher.id());
    for rank in ranks {
        // SAFETY: signalling a process of this test's by its pid.
        unsafe { libc::kill(rank as i32, libc::SIGTERM) };
    }
    let status = launcher.wait_with_output().unwrap().status;
    assert!(!status.success());
    let latest = std::fs::read_to_string(stopped.join("checkpoint/latest")).unwrap();
    assert!(
        latest.trim() != "epoch-0004",
        "stopped before the end: {latest}"
    );

    // The run's two partner groups keep one process on the ranks' course.
    let resumed = run(&["train", "--resume", stopped.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let difference = largest_difference(
        &stopped.join("model.safetensors"),
        &whole.join("model.safetensors"),
    );
    assert!(difference < 1e-5, "weights differ by {difference}");
}

#[test]
fn an_exploding_loss_stops_both_ranks_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    // The learning rate jumps to 1e10 at the second epoch.
    let args = common::small_run(&out, &["--schedule", "step:1", "--lr-decay", "1e11"]);
    let output = mpirun(2).args(&args).output().unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let ours = error_lines(&stderr);
    assert_eq!(ours.len(), 2, "{stderr}");
    assert!(
        ours[0].contains("the training loss became") && ours[0].contains("epoch 2"),
        "{stderr}"
    );
    // The same batch on both: the loss is the global batch's.
    assert_eq!(stopping_step(ours[0]), stopping_step(ours[1]), "{stderr}");
    // Only the rank that writes the run keeps its checkpoint, and says so.
    assert!(
        ours.iter().filter(|l| l.contains("is kept")).count() == 1,
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoint/latest")).unwrap(),
        "epoch-0001"
    );
}

/// `mmix bench --semi ict` splits the unlabelled batch between the ranks as it splits the
/// labelled one, and rank 0 alone reports.
#[test]
fn an_ict_bench_step_runs_on_two_ranks_and_reports_once() {
    let output = mpirun_output(
        2,
        &[
            "bench",
            "--model",
            "small-cnn",
            "--width",
            "4",
            "--batch-size",
            "4",
            "--channels",
            "1",
            "--image-size",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--semi",
            "ict",
            "--semi-mix",
            "manifold",
            "--unlabeled-batch-size",
            "6",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].contains("\"ranks\":2"), "{}", lines[0]);
    assert!(
        lines[0].contains("\"semi\":\"ict manifold ×6\""),
        "{}",
        lines[0]
    );
}

/// Where an error line says the loss became NaN: "epoch E, batch B".
fn stopping_step(line: &str) -> &str {
    let at = line.find("at epoch ").expect(line);
    line[at..].split(" (").next().unwrap()
}

/// mmix's own error lines among what the ranks and the launcher wrote to stderr.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect()
}
