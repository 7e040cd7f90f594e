//! Replays every input the fuzzers keep (`fuzz/seeds/<target>` and the corpus they grew,
//! `fuzz/corpus/<target>`) through the same entry points, so that no reader regresses on
//! an input a fuzzer once reached. An input that panicked is a failure here.

use std::path::Path;

use manifold_mixup::fuzzing;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for folder in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                inputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs for the {target} target");
    inputs
}

fn replay(target: &str, entry: impl Fn(&[u8])) {
    for (name, data) in inputs(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry(&data)));
        assert!(outcome.is_ok(), "{name} panicked");
    }
}

#[test]
fn idx_inputs() {
    replay("idx", fuzzing::idx);
}

#[test]
fn cifar_inputs() {
    replay("cifar", fuzzing::cifar);
}

#[test]
fn image_inputs() {
    replay("image", fuzzing::image);
}

#[test]
fn checkpoint_inputs() {
    let config = fuzzing::checkpoint_config();
    let model = fuzzing::checkpoint_model(&config);
    replay("checkpoint", |data| {
        fuzzing::checkpoint(data, &config, &model)
    });
}

#[test]
fn config_inputs() {
    replay("config", fuzzing::config);
}
