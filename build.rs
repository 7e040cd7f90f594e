//! Compiles the oneDNN bridge (`native/onednn_conv.cpp`) when the `onednn` feature is on.
//! The pure-Rust build needs nothing from here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "onednn")]
    onednn::build();
}

#[cfg(feature = "onednn")]
mod onednn {
    use std::path::PathBuf;

    const SOURCE: &str = "native/onednn_conv.cpp";

    /// `DNNL_ROOT` points at a oneDNN install (`include/`, `lib/`); otherwise the system one
    /// (Debian: `apt-get install libdnnl-dev`).
    pub fn build() {
        println!("cargo:rerun-if-changed={SOURCE}");
        println!("cargo:rerun-if-env-changed=DNNL_ROOT");
        let root = std::env::var_os("DNNL_ROOT").map(PathBuf::from);
        let include_dirs: Vec<PathBuf> = match &root {
            Some(root) => vec![root.join("include")],
            None => vec!["/usr/include".into(), "/usr/local/include".into()],
        };
        if !include_dirs
            .iter()
            .any(|dir| dir.join("oneapi/dnnl/dnnl.hpp").is_file())
        {
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
    }
}
