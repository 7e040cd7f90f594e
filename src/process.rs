//! Process-wide settings for a training process, made once at start-up before any tensor
//! exists. The `mmix` binary and `cargo bench` call [`configure`]; a program embedding the
//! library may too.

/// Applies every setting below.
pub fn configure() {
    share_cores_among_local_ranks();
    #[cfg(mmix_onednn)]
    openmp_waits_passively();
    keep_freed_memory();
    quiet_on_closed_pipe();
    fail_writes_past_the_file_size_limit();
}

/// Ranks of a data-parallel run on one machine split its cores, instead of each starting a
/// thread per core and all of them contending. Set before any thread pool exists (and before
/// the re-execution below, which passes it to OpenMP); a count the caller chose is kept.
fn share_cores_among_local_ranks() {
    let ranks = crate::distributed::ranks_on_this_machine();
    if ranks <= 1 {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / ranks).max(1).to_string();
    for variable in ["RAYON_NUM_THREADS", "OMP_NUM_THREADS"] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: called first thing in `main`, before any other thread exists.
            unsafe { std::env::set_var(variable, &threads) };
        }
    }
}

/// Past a file-size limit (`ulimit -f`), the kernel kills a writing process with SIGXFSZ
/// unless it ignores the signal; ignored, the write fails with EFBIG, which the atomic writes
/// report in one line naming the file, leaving the previous version in place.
fn fail_writes_past_the_file_size_limit() {
    #[cfg(unix)]
    // SAFETY: ignoring a signal touches no memory of the program.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Ends the process quietly when its output is a closed pipe (`mmix study … | head`), as Unix
/// tools do, instead of panicking in `println!`. Rust ignores SIGPIPE by default.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition touches no memory of the program.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps freed tensor buffers in the heap for reuse. glibc returns any allocation above its
/// mmap threshold (32 MiB at most) to the kernel when it is freed, so each step's largest
/// activations would fault in freshly zeroed pages every time: about 15% of a PreActResNet-18
/// width-64 step on oneDNN, measured with `perf`. Peak memory is unchanged; the process keeps
/// what it reached.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// oneDNN runs its kernels on OpenMP threads, whose default is to spin after each parallel
/// region; those spins take the cores from Burn's own (rayon) threads that run everything
/// between two convolutions. libgomp reads `OMP_WAIT_POLICY` once, when it is loaded and so
/// before `main`, so the only way to set it from inside is to start again with it set: this
/// re-executes the program once, unless the caller chose a policy already.
#[cfg(mmix_onednn)]
fn openmp_waits_passively() {
    use std::os::unix::process::CommandExt;
    const POLICY: &str = "OMP_WAIT_POLICY";
    if std::env::var_os(POLICY).is_some() {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    // `exec` returns only if it failed, and then the process simply goes on spinning.
    let _ = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(POLICY, "passive")
        .exec();
}
