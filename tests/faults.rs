//! Faults injected into short runs: kills at random moments and inside checkpoint writes,
//! a file-size limit, an unwritable folder, damaged files. The CI-sized share of
//! `scripts/fault-injection.py`, which runs more of each.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{
    assert_one_line_error, kill_after_first_epoch, mmix, outcome, run, small_run, snapshot, text,
};

/// Two epochs of 600 embedded images: a checkpoint per epoch and one at the end.
fn run_args(out: &Path) -> Vec<String> {
    small_run(out, &[])
}

fn train(out: &Path) -> Output {
    mmix().args(run_args(out)).output().unwrap()
}

fn reference(root: &Path) -> PathBuf {
    let dir = root.join("reference");
    let output = train(&dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    dir
}

fn write_under_way(checkpoint_dir: &Path) -> bool {
    std::fs::read_dir(checkpoint_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with('.'))
    })
}

/// Resumes until the run is done; a run killed before its config.json exists is started again.
fn finish(dir: &Path) {
    let output = if dir.join("config.json").exists() {
        run(&["train", "--resume", dir.to_str().unwrap()])
    } else {
        let _ = std::fs::remove_dir_all(dir);
        train(dir)
    };
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn kills_at_any_moment_and_inside_checkpoint_writes_resume_to_the_same_run() {
    let root = tempfile::tempdir().unwrap();
    let reference = reference(root.path());
    let started = Instant::now();
    let _ = train(&root.path().join("timed"));
    let duration = started.elapsed();
    for trial in 0..6u32 {
        let dir = root.path().join(format!("killed-{trial}"));
        let mut child = mmix()
            .args(run_args(&dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if trial % 2 == 0 {
            // Spread over the run: start-up, training, checkpoints, final evaluation.
            std::thread::sleep(duration.mul_f64((trial + 1) as f64 / 6.0));
        } else {
            // Just inside a checkpoint write, or a moment after it: the first epoch's, then
            // the last's twice (after it come the reports and the final evaluation).
            let (wanted, delay) = [(1, 0), (2, 1), (2, 4)][trial as usize / 2];
            let deadline = Instant::now() + duration * 3;
            let mut writes = 0;
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if write_under_way(&dir.join("checkpoint")) {
                    writes += 1;
                    if writes == wanted {
                        break;
                    }
                    while write_under_way(&dir.join("checkpoint")) {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_millis(delay));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        finish(&dir);
        assert!(
            outcome(&dir) == outcome(&reference),
            "trial {trial}: the resumed run differs"
        );
    }
}

/// A run stopped by SIGKILL once its first epoch's checkpoint is committed.
fn stopped_after_one_epoch(dir: &Path) {
    let child = mmix()
        .args(run_args(dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_first_epoch(child, dir);
}

#[test]
fn a_full_disk_or_unwritable_folder_is_one_line_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let reference = reference(root.path());

    // A file-size limit below a checkpoint's size: the write fails (EFBIG), not the process.
    let limited = root.path().join("limited");
    stopped_after_one_epoch(&limited);
    let output = mmix()
        .args(["train", "--resume", limited.to_str().unwrap()])
        .pre_exec_limit_file_size(2_000)
        .output()
        .unwrap();
    assert_one_line_error(&output, "File too large", "resume under a file-size limit");
    assert_eq!(
        std::fs::read_to_string(limited.join("checkpoint/latest")).unwrap(),
        "epoch-0001",
        "latest still names the last complete checkpoint"
    );
    finish(&limited);
    assert!(outcome(&limited) == outcome(&reference));

    // The next checkpoint cannot be written (its staging folder's name is taken by a file).
    let blocked = root.path().join("blocked");
    stopped_after_one_epoch(&blocked);
    let obstacle = blocked.join("checkpoint/.staging-epoch-0002");
    std::fs::write(&obstacle, "in the way").unwrap();
    let output = run(&["train", "--resume", blocked.to_str().unwrap()]);
    assert_one_line_error(
        &output,
        ".staging-epoch-0002",
        "resume into a blocked folder",
    );
    assert_eq!(
        std::fs::read_to_string(blocked.join("checkpoint/latest")).unwrap(),
        "epoch-0001"
    );
    std::fs::remove_file(&obstacle).unwrap();
    finish(&blocked);
    assert!(outcome(&blocked) == outcome(&reference));

    // A read-only run folder: refused in one line, and nothing in it changes.
    let frozen = root.path().join("frozen");
    stopped_after_one_epoch(&frozen);
    let before = snapshot(&frozen);
    let Some(read_only) = ReadOnly::make(&frozen) else {
        eprintln!("note: cannot make a read-only folder here; that case is skipped");
        return;
    };
    let output = run(&["train", "--resume", frozen.to_str().unwrap()]);
    let expected = if read_only.mounted {
        "Read-only file system"
    } else {
        "Permission denied"
    };
    assert_one_line_error(&output, expected, "resume in a read-only folder");
    assert_eq!(
        snapshot(&frozen),
        before,
        "the failed resume changed the folder"
    );
}

/// A folder made read-only for as long as this lives: a read-only bind mount as root (whom
/// permissions do not stop), else permissions.
struct ReadOnly {
    dir: PathBuf,
    mounted: bool,
}

impl ReadOnly {
    fn make(dir: &Path) -> Option<Self> {
        let mounted = unsafe { libc::geteuid() } == 0;
        if mounted {
            let mount = |args: &[&str]| {
                Command::new("mount")
                    .args(args)
                    .arg(dir)
                    .arg(dir)
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if !mount(&["--bind"]) {
                return None;
            }
            if !mount(&["-o", "remount,bind,ro"]) {
                let _ = Command::new("umount").arg(dir).status();
                return None;
            }
        } else {
            set_folder_modes(dir, 0o555);
        }
        Some(Self {
            dir: dir.to_path_buf(),
            mounted,
        })
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        } else {
            set_folder_modes(&self.dir, 0o755);
        }
    }
}

fn set_folder_modes(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            set_folder_modes(&path, mode);
        }
    }
}

/// Sets RLIMIT_FSIZE in the child before it runs mmix.
trait LimitFileSize {
    fn pre_exec_limit_file_size(&mut self, bytes: u64) -> &mut Self;
}

impl LimitFileSize for Command {
    fn pre_exec_limit_file_size(&mut self, bytes: u64) -> &mut Self {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            self.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

#[test]
fn damaged_run_files_are_refused_in_one_line_and_left_as_they_were() {
    let root = tempfile::tempdir().unwrap();
    let reference = reference(root.path());
    let checkpoint = std::fs::read_to_string(reference.join("checkpoint/latest")).unwrap();
    let checkpoint_file = |name: &str| format!("checkpoint/{checkpoint}/{name}");
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: [(&str, Damage); 3] = [
        ("empty", |_| Vec::new()),
        ("truncated", |b| b[..b.len() / 2].to_vec()),
        ("junk", |_| b"\x00\xffnot what was written\n".to_vec()),
    ];
    // (file, commands that must refuse it): `eval` and `compare` do not read the optimizer,
    // and nothing reads metrics.csv, which every report rewrites from the checkpoint.
    let targets = [
        (
            "checkpoint/latest".to_string(),
            &["resume", "eval", "compare"][..],
        ),
        (checkpoint_file("model.bpk"), &["resume", "eval"][..]),
        (checkpoint_file("optimizer.bpk"), &["resume"][..]),
        (
            checkpoint_file("state.json"),
            &["resume", "eval", "compare"][..],
        ),
        (
            "config.json".to_string(),
            &["resume", "eval", "compare"][..],
        ),
        ("metrics.csv".to_string(), &[][..]),
    ];
    let plot = root.path().join("compare.png");
    for (target, must_refuse) in &targets {
        for (damage, apply) in damages {
            for command in ["resume", "eval", "compare"] {
                let dir = root.path().join("damaged");
                let _ = std::fs::remove_dir_all(&dir);
                copy_folder(&reference, &dir);
                let path = dir.join(target);
                std::fs::write(&path, apply(&std::fs::read(&path).unwrap())).unwrap();
                let before = snapshot(&dir);
                let dir_arg = dir.to_str().unwrap();
                let output = match command {
                    "resume" => run(&["train", "--resume", dir_arg]),
                    "eval" => run(&["eval", dir_arg]),
                    _ => run(&["compare", dir_arg, "--plot", plot.to_str().unwrap()]),
                };
                let what = format!("{command} with {damage} {target}");
                let stderr = text(&output.stderr);
                assert!(!stderr.contains("panicked"), "{what}: {stderr}");
                if output.status.success() {
                    assert!(!must_refuse.contains(&command), "{what} succeeded");
                    continue;
                }
                assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
                let file_name = Path::new(target).file_name().unwrap().to_string_lossy();
                assert!(stderr.contains(&*file_name), "{what}: {stderr}");
                assert_eq!(snapshot(&dir), before, "{what} changed the folder");
            }
        }
    }
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_folder(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
