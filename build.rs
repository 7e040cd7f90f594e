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

fn main() {
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
