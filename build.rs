//! Compiles the oneDNN bridge (`native/onednn_conv.cpp`) when oneDNN is installed, and then
//! sets `cfg(mmix_onednn)`, which turns the oneDNN convolution route on. Where it is not, the
//! crate builds on Burn's own convolutions and says so at run time.
//!
//! - `DNNL_ROOT` points at a oneDNN install (`include/`, `lib/`); otherwise the system's
//!   (Debian: `apt-get install libdnnl-dev`).
//! - `MMIX_ONEDNN=off` (or `0`, `false`) builds without it even where it is installed.
//! - The `onednn` feature makes its absence an error instead.

use std::path::PathBuf;

const SOURCE: &str = "native/onednn_conv.cpp";

/// The source revision this build is made from: the git commit, with "+dirty" when tracked
/// files differ from it, or "unknown" outside a checkout. Rebuilt when the commit or the
/// sources change.
fn record_revision() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let in_checkout = std::path::Path::new(".git").exists();
    let revision = match git(&["rev-parse", "HEAD"]).filter(|_| in_checkout) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|changes| !changes.is_empty());
            if dirty { format!("{head}+dirty") } else { head }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=MMIX_REVISION={revision}");
    for path in [
        ".git/HEAD",
        ".git/index",
        ".git/packed-refs",
        "src",
        "Cargo.toml",
        "native",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(reference) = std::fs::read_to_string(".git/HEAD")
        .ok()
        .and_then(|head| head.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        println!("cargo:rerun-if-changed=.git/{reference}");
    }
}

fn main() {
    record_revision();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=DNNL_ROOT");
    println!("cargo:rerun-if-env-changed=MMIX_ONEDNN");
    println!("cargo::rustc-check-cfg=cfg(mmix_onednn)");
    let required = std::env::var_os("CARGO_FEATURE_ONEDNN").is_some();
    let opted_out = matches!(
        std::env::var("MMIX_ONEDNN").as_deref(),
        Ok("off" | "0" | "false")
    );
    if opted_out {
        if required {
            panic!("the `onednn` feature and MMIX_ONEDNN=off contradict each other");
        }
        return;
    }
    let root = std::env::var_os("DNNL_ROOT").map(PathBuf::from);
    let include_dirs: Vec<PathBuf> = match &root {
        Some(root) => vec![root.join("include")],
        None => vec!["/usr/include".into(), "/usr/local/include".into()],
    };
    let found = include_dirs
        .iter()
        .any(|dir| dir.join("oneapi/dnnl/dnnl.hpp").is_file());
    if !found {
        if required {
            panic!(
                "the `onednn` feature needs oneDNN's headers (oneapi/dnnl/dnnl.hpp) in {}: \
                 install them with `apt-get install libdnnl-dev`, or set DNNL_ROOT to a oneDNN install",
                include_dirs
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        for dir in &include_dirs {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join("oneapi/dnnl/dnnl.hpp").display()
            );
        }
        return;
    }
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").file(SOURCE).warnings(true);
    if let Some(root) = &root {
        build.include(root.join("include"));
        println!(
            "cargo:rustc-link-search=native={}",
            root.join("lib").display()
        );
    }
    build.compile("mmix_onednn");
    println!("cargo:rustc-link-lib=dnnl");
    println!("cargo:rustc-cfg=mmix_onednn");
}
