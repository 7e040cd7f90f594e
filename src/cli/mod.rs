//! The `mmix` command line: argument types, the commands, and the configuration they resolve.

pub mod args;
pub mod commands;
mod console;
pub mod evaluate;
pub mod predict;
pub mod study;
pub mod train;

/// Says once per process that a faster precision exists where the CPU has bf16, or else how
/// to get the CPU's fast path where `device` lacks it: on stdout, with the run's headline, so
/// that stderr holds only what went wrong.
pub fn note_fast_path(device: &burn::tensor::Device, precision: crate::kernels::Precision) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let note = crate::kernels::bf16_note(device, precision)
        .or_else(|| crate::kernels::fast_path_note(device));
    if let Some(note) = note {
        ONCE.call_once(|| println!("{note}"));
    }
}

/// An output path given as an empty string would write into the current folder.
pub(crate) fn require_path(flag: &str, path: &std::path::Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        anyhow::bail!("{flag} is empty: it must name a path");
    }
    Ok(())
}
