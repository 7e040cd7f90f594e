//! mmix touches only what it wrote: run, study and output folders holding anything else are
//! refused, links among a run's own entries are never followed, a second Ctrl-C ends the
//! process at once without tearing anything down, sizes are checked before anything is
//! allocated, and every way a configuration arrives passes the same checks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{as_strs, assert_one_line_error, mmix, run, small_run, snapshot, text};

/// A tiny finished run (one epoch of 200 embedded images), for the tests that need one.
fn finished_run(dir: &Path) {
    let mut args = small_run(dir, &[]);
    for (flag, value) in [("--epochs", "1"), ("--train-subset", "200")] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.into();
    }
    let at = args.iter().position(|a| a == "--valid-split").unwrap();
    args.drain(at..at + 2);
    let output = run(&as_strs(&args));
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// Another run's checkpoints and a file of the user's, outside any folder mmix is given.
fn outside_files(root: &Path) -> PathBuf {
    let outside = root.join("outside");
    for folder in ["epoch-0001", "epoch-0002", "my-weights"] {
        std::fs::create_dir_all(outside.join(folder)).unwrap();
        std::fs::write(outside.join(folder).join("model.bpk"), folder.as_bytes()).unwrap();
    }
    std::fs::write(outside.join("latest"), b"epoch-0002").unwrap();
    outside
}

#[test]
fn a_link_among_a_runs_entries_is_refused_and_what_it_points_at_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let outside = outside_files(root.path());
    let before = snapshot(&outside);

    // A fresh run into a folder whose checkpoint/ is a link.
    let fresh = root.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::os::unix::fs::symlink(&outside, fresh.join("checkpoint")).unwrap();
    let output = run(&as_strs(&small_run(&fresh, &[])));
    assert_one_line_error(
        &output,
        "is not empty",
        "a fresh run beside a linked checkpoint/",
    );

    // A run whose checkpoint/ became a link, resumed and evaluated.
    let resumed = root.path().join("resumed");
    finished_run(&resumed);
    std::fs::rename(resumed.join("checkpoint"), root.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, resumed.join("checkpoint")).unwrap();
    let dir = resumed.to_str().unwrap();
    for args in [vec!["train", "--resume", dir], vec!["eval", dir]] {
        let output = run(&args);
        assert_one_line_error(&output, "is a symbolic link", &format!("{args:?}"));
    }
    // The same for a linked log, which appending would write through.
    std::fs::remove_file(resumed.join("checkpoint")).unwrap();
    std::fs::rename(root.path().join("moved"), resumed.join("checkpoint")).unwrap();
    std::fs::remove_file(resumed.join("train.log")).unwrap();
    std::os::unix::fs::symlink(outside.join("latest"), resumed.join("train.log")).unwrap();
    let output = run(&["train", "--resume", dir]);
    assert_one_line_error(
        &output,
        "train.log is a symbolic link",
        "resume with a linked log",
    );

    assert_eq!(snapshot(&outside), before, "files outside the run changed");
}

#[test]
fn a_folder_holding_anything_but_nothing_is_refused_for_a_new_run() {
    let root = tempfile::tempdir().unwrap();
    // The user's own files under the names a run writes.
    let users = root.path().join("users");
    std::fs::create_dir_all(users.join("checkpoint/old")).unwrap();
    std::fs::write(users.join("metrics.csv"), b"epoch,acc\n1,0.5\n").unwrap();
    std::fs::write(users.join("model.safetensors"), b"mine").unwrap();
    std::fs::write(users.join("checkpoint/old/weights.pt"), b"mine too").unwrap();
    // Another run's checkpoint folder, without its config.json.
    let leftover = root.path().join("leftover");
    finished_run(&leftover);
    std::fs::remove_file(leftover.join("config.json")).unwrap();
    for dir in [&users, &leftover] {
        let before = snapshot(dir);
        let output = run(&as_strs(&small_run(dir, &[])));
        assert_one_line_error(&output, "is not empty", &dir.display().to_string());
        assert_eq!(snapshot(dir), before, "{} changed", dir.display());
    }
    // An empty folder the user made is taken, and kept.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    finished_run(&empty);
    assert!(empty.join("config.json").is_file());
}

/// Sends `signal` to `child`.
fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_ctrl_c_during_a_study_ends_it_with_130_and_keeps_the_last_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("long.toml");
    // Far more training than 30 short tries reach: every try starts inside the run.
    std::fs::write(
        &file,
        "seeds = [1]\n[train]\nmodel = \"small-cnn\"\nwidth = 8\nepochs = 200\ntrain-subset = 3000\nbatch-size = 50\n[[arm]]\nname = \"manifold\"\n",
    )
    .unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut pause = |most_ms: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        Duration::from_millis(rng % most_ms.max(1))
    };
    // One plain Ctrl-C first, so that there is a checkpoint for the double ones to keep.
    let tries = std::iter::once(false).chain(std::iter::repeat_n(true, 30));
    for (attempt, twice) in tries.enumerate() {
        let mut child = mmix()
            .args(["study", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The handler is installed once the run has announced itself.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.starts_with("started") || line.starts_with("resumed"));
        assert!(started, "attempt {attempt}: the run never started");
        std::thread::sleep(Duration::from_millis(50) + pause(400));
        signal(&child, "-INT");
        if twice {
            std::thread::sleep(pause(30));
            signal(&child, "-INT");
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(130),
            "attempt {attempt}: {:?} {}",
            output.status,
            text(&output.stderr)
        );
    }
    // Each try resumed from the latest checkpoint (a damaged one would have ended it with 1):
    // every one of them was whole.
    let checkpoint = root.path().join("long/runs/manifold/seed-1/checkpoint");
    let latest = std::fs::read_to_string(checkpoint.join("latest")).unwrap();
    let state = std::fs::read(checkpoint.join(latest.trim()).join("state.json")).unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&state).is_ok());
}

/// A folder data set of one class: one 4×4 image to train on and one to test on.
fn tiny_folder_data_set(root: &Path) -> PathBuf {
    let images = root.join("images");
    for split in ["train", "test"] {
        let folder = images.join(split).join("cat");
        std::fs::create_dir_all(&folder).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]))
            .save(folder.join("0.png"))
            .unwrap();
    }
    images
}

#[test]
fn sizes_beyond_the_machine_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let images = tiny_folder_data_set(root.path());
    let out_flag = ["--out", out.to_str().unwrap()];
    let data = [
        "--dataset",
        "folder",
        "--data-dir",
        images.to_str().unwrap(),
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train", "--model", "mlp", "--width", "100000"],
            "of memory",
        ),
        (
            vec!["train", "--model", "wrn-1000000000000-1"],
            "wrn depth must be at most",
        ),
        (
            vec!["train", "--model", "wrn-28-100000"],
            "widen factor must be at most",
        ),
        (
            [&["train", "--image-size", "100000"][..], &data].concat(),
            "--image-size must be at most",
        ),
        (
            [
                &["train", "--image-size", "4096", "--model", "mlp"][..],
                &data,
            ]
            .concat(),
            "of memory",
        ),
        (
            // One training row fits; the evaluation's 500 rows of 1024×1024 maps do not.
            vec![
                "train",
                "--width",
                "512",
                "--pad-to",
                "1024",
                "--train-subset",
                "100",
                "--batch-size",
                "1",
            ],
            "lower --eval-batch-size",
        ),
        (vec!["bench", "--width", "1000000"], "of memory"),
        (vec!["bench", "--width", "2000000"], "width must be at most"),
        (
            vec!["bench", "--width", "60000", "--steps", "1"],
            "of memory",
        ),
        (vec!["bench", "--batch-size", "100000000"], "of memory"),
    ];
    for (args, expected) in cases {
        let args = match args[0] {
            "train" => [&args[..], &out_flag].concat(),
            _ => args,
        };
        let started = Instant::now();
        let output = run(&args);
        assert_one_line_error(&output, expected, &format!("{args:?}"));
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn a_saved_configuration_passes_the_checks_a_new_one_does() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    finished_run(&dir);
    let config_path = dir.join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    for (key, value, expected) in [
        (
            "lr",
            serde_json::json!(-5.0),
            "config.json: `lr` must be a positive number, got -5",
        ),
        (
            "epochs",
            serde_json::json!(0),
            "config.json: `epochs` must be at least 1",
        ),
        (
            "partner_groups",
            serde_json::json!(1000),
            "`partner-groups` (1000",
        ),
    ] {
        let saved = config["train"][key].clone();
        config["train"][key] = value;
        std::fs::write(&config_path, config.to_string()).unwrap();
        let before = snapshot(&dir);
        let path = dir.to_str().unwrap();
        for args in [vec!["train", "--resume", path], vec!["eval", path]] {
            assert_one_line_error(&run(&args), expected, &format!("{key} {args:?}"));
        }
        assert_eq!(snapshot(&dir), before, "{key}");
        config["train"][key] = saved;
    }
}

#[test]
fn a_run_that_diverges_before_its_first_checkpoint_leaves_its_folder_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    for existed in [false, true] {
        let dir = root.path().join(format!("existed-{existed}"));
        if existed {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let output = run(&as_strs(&small_run(&dir, &["--lr", "1e12"])));
        assert_one_line_error(
            &output,
            "no checkpoint was written",
            "a run diverging at once",
        );
        assert!(text(&output.stderr).contains("epoch 1"));
        match existed {
            true => assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0),
            false => assert!(!dir.exists()),
        }
        // The same command with another learning rate then starts there.
        let mut args = small_run(&dir, &["--lr", "0.05"]);
        let at = args.iter().position(|a| a == "--epochs").unwrap();
        args[at + 1] = "1".into();
        let output = run(&as_strs(&args));
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
}

#[test]
fn out_in_a_config_file_is_honoured_and_flags_win() {
    let root = tempfile::tempdir().unwrap();
    let (from_file, from_flag) = (root.path().join("from-file"), root.path().join("from-flag"));
    let config = root.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "out = {:?}\nmodel = \"small-cnn\"\nwidth = 4\nepochs = 1\ntrain-subset = 100\nbatch-size = 50\n",
            from_file.display().to_string()
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let output = run(&["train", "--config", path]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(from_file.join("config.json").is_file());
    let output = run(&[
        "train",
        "--config",
        path,
        "--out",
        from_flag.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(from_flag.join("config.json").is_file());
}

#[test]
fn the_smaller_items_are_refused_or_said_clearly() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    finished_run(&dir);
    let run_dir = dir.to_str().unwrap();
    let out = root.path().join("out");
    let out = out.to_str().unwrap();
    let no_toml = root.path().join("study");
    std::fs::write(&no_toml, "seeds = [1]\n[[arm]]\nname = \"a\"\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "eval",
                run_dir,
                "--attack",
                "fgsm:0.03",
                "--attack-examples",
                "0",
            ],
            "--attack-examples must be at least 1",
        ),
        (
            vec![
                "train",
                "--attack",
                "fgsm:0.03",
                "--attack-examples",
                "0",
                "--out",
                out,
            ],
            "--attack-examples must be at least 1",
        ),
        (vec!["compare"], "<DIRS>"),
        (vec!["eval"], "<DIR>"),
        (vec!["study"], "<FILE>"),
        (vec!["compare", run_dir, run_dir], "named twice"),
        (vec!["study", no_toml.to_str().unwrap()], "ends in .toml"),
        (
            vec![
                "train",
                "--partner-groups",
                "1000",
                "--batch-size",
                "100",
                "--out",
                out,
            ],
            "--batch-size (100) is smaller than --partner-groups (1000",
        ),
        (
            vec!["train", "--attack", "fgsm:2", "--out", out],
            "ε must be in [0, 1]",
        ),
        (
            vec!["eval", run_dir, "--attack", "pgd:1.5:3"],
            "ε must be in [0, 1]",
        ),
    ];
    for (args, expected) in cases {
        let output = run(&args);
        assert_one_line_error(&output, expected, &format!("{args:?}"));
    }
    assert!(!Path::new(out).exists());
}

#[test]
fn report_only_leaves_out_runs_made_under_another_version_of_the_study() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("tiny.toml");
    let study = |epochs: usize| {
        format!(
            "seeds = [1]\n[train]\nmodel = \"small-cnn\"\nwidth = 4\nepochs = {epochs}\ntrain-subset = 100\nbatch-size = 50\n[[arm]]\nname = \"none\"\nmix = \"none\"\n"
        )
    };
    std::fs::write(&file, study(1)).unwrap();
    let path = file.to_str().unwrap();
    let output = run(&["study", path]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = run(&["study", path, "--report-only"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // The arm now asks for two epochs: its one-epoch run is not reported under it.
    std::fs::write(&file, study(2)).unwrap();
    let report = std::fs::read(root.path().join("tiny/report.md")).unwrap();
    let output = run(&["study", path, "--report-only"]);
    assert!(
        text(&output.stdout).contains("left out:"),
        "{}",
        text(&output.stdout)
    );
    assert_one_line_error(
        &output,
        "no run of the study",
        "report-only of a changed study",
    );
    assert_eq!(
        std::fs::read(root.path().join("tiny/report.md")).unwrap(),
        report
    );
    // A study folder holding a file of the user's is refused, not written into.
    std::fs::write(&file, study(1)).unwrap();
    std::fs::write(root.path().join("tiny/notes.txt"), b"mine").unwrap();
    let output = run(&["study", path, "--report-only"]);
    assert_one_line_error(
        &output,
        "notes.txt, which mmix did not write",
        "a foreign file",
    );
}

/// Runs `mmix` with `args`, failing the test if it is still running after `limit`.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut child = mmix()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("{args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_folder_data_set_reads_regular_files_only() {
    let root = tempfile::tempdir().unwrap();
    let images = tiny_folder_data_set(root.path());
    let fifo = images.join("train/cat/x.png");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let out = root.path().join("out");
    let args = [
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let output = run_within(&args, Duration::from_secs(30));
    assert_one_line_error(
        &output,
        "x.png: not a regular file",
        "a FIFO among the images",
    );
    std::fs::remove_file(&fifo).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    let output = run_within(&args, Duration::from_secs(30));
    assert_one_line_error(&output, "x.png: not a regular file", "a link to /dev/zero");
    assert!(!out.exists());
}

#[test]
fn outputs_of_compare_and_inspect_replace_only_their_own_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    finished_run(&dir);
    let notes = root.path().join("notes.png");
    std::fs::write(&notes, b"not an image").unwrap();
    let output = run(&[
        "compare",
        dir.to_str().unwrap(),
        "--plot",
        notes.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &output,
        "is not a PNG image mmix wrote",
        "compare over a file",
    );
    assert_eq!(std::fs::read(&notes).unwrap(), b"not an image");
    let plot = root.path().join("compare.png");
    for _ in 0..2 {
        let output = run(&[
            "compare",
            dir.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let inspect = root.path().join("inspect");
    std::fs::create_dir_all(&inspect).unwrap();
    std::fs::write(inspect.join("thesis.tex"), b"mine").unwrap();
    let output = run(&["data", "inspect", "--out", inspect.to_str().unwrap()]);
    assert_one_line_error(&output, "thesis.tex, which mmix did not write", "inspect");
}
