//! What this machine has: memory (checked before a run allocates) and the processor.

/// A configuration that cannot fit in this machine's memory, caught before anything is
/// written or allocated.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "{what} would need up to {} of memory (an estimate from above) and this machine has {}: {hint}",
    gib(*needed),
    gib(*available)
)]
pub struct MemoryError {
    /// What would not fit, in words.
    pub what: String,
    /// Bytes it needs at least.
    pub needed: u64,
    /// Bytes the machine has.
    pub available: u64,
    /// What to lower to fit.
    pub hint: String,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The machine's physical memory in bytes (u64::MAX where it cannot be read).
pub(crate) fn memory_bytes() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system constant and touches no memory of the program.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return (pages as u64).saturating_mul(page as u64);
        }
    }
    u64::MAX
}

/// Refuses `needed` bytes for `what` when they exceed the machine's memory.
pub fn check_fits(what: impl Into<String>, needed: u64, hint: &str) -> Result<(), MemoryError> {
    check_fits_in(what, needed, memory_bytes(), hint)
}

fn check_fits_in(
    what: impl Into<String>,
    needed: u64,
    available: u64,
    hint: &str,
) -> Result<(), MemoryError> {
    if needed <= available {
        return Ok(());
    }
    Err(MemoryError {
        what: what.into(),
        needed,
        available,
        hint: hint.to_string(),
    })
}

/// The source revision this binary was built from: a git commit, "+dirty" when tracked files
/// differed from it, or "unknown" outside a checkout.
pub(crate) const REVISION: &str = env!("MMIX_REVISION");

/// Which code made a run, in which arithmetic and on which machine: saved in its config.json,
/// so that a report can say what produced each of its runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// The crate's version.
    pub crate_version: String,
    /// The git commit built from (`+dirty` when the tree differed), or `unknown`.
    pub revision: String,
    /// The library computing the convolutions: "onednn" or "own" with its instruction set, or
    /// "burn".
    pub convolutions: String,
    /// `f32` or `bf16`.
    pub precision: String,
    /// Threads of the host's thread pool.
    pub threads: usize,
    /// The CPU model.
    pub cpu: String,
}

impl Provenance {
    /// This process, training on `device` in `precision`.
    pub fn here(device: &burn::tensor::Device, precision: crate::kernels::Precision) -> Self {
        let library = crate::kernels::convolution_library(device);
        let convolutions = match crate::kernels::convolution_isa(device, precision) {
            Some(isa) => format!("{library} ({isa})"),
            None => library.to_string(),
        };
        Self {
            crate_version: env!("CARGO_PKG_VERSION").into(),
            revision: REVISION.into(),
            convolutions,
            precision: format!("{precision:?}").to_lowercase(),
            threads: rayon::current_num_threads(),
            cpu: cpu_model(),
        }
    }
}

/// The processor's model name, as the kernel reports it ("unknown" where it does not).
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_memory_are_refused_with_both_figures() {
        assert!(check_fits_in("x", 10, 10, "").is_ok());
        let error = check_fits_in("--width 100000", 3 << 30, 1 << 30, "lower it").unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("--width 100000") && text.contains("3.0 GiB"),
            "{text}"
        );
        assert!(
            text.contains("1.0 GiB") && text.ends_with("lower it"),
            "{text}"
        );
        assert!(memory_bytes() > 1 << 20);
    }
}
