//! Replays every input the fuzzers keep (`fuzz/seeds/<target>`, the corpus they grew,
//! `fuzz/corpus/<target>`, and the crashes they found, `fuzz/crashes/<target>`) through the
//! same entry points, so that no reader regresses on an input a fuzzer once reached. An input
//! that panicked is a failure here.

use std::path::Path;

use manifold_mixup::fuzzing;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for folder in ["seeds", "corpus", "crashes"] {
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

/// The JPEGs on which the fuzzer found zune-jpeg's upsampler panicking (through the `image`
/// crate): each is now an error naming the file.
#[test]
fn images_that_crashed_the_decoder_are_errors_naming_the_file() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes/image");
    let mut found = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let size = usize::from(data[0] % 64).max(1);
        let error = manifold_mixup::data::decode_image(Path::new("cat/7.jpg"), &data[1..], size)
            .expect_err("a crash input decodes to an error");
        assert!(
            error
                .to_string()
                .starts_with("cat/7.jpg: cannot read image"),
            "{error}"
        );
        found += 1;
    }
    assert!(found > 0);
}

/// The checkpoints on which the fuzzer found Burn's optimizer-record loader panicking: each
/// optimizer record is now refused as damaged, naming the file.
#[test]
fn optimizer_records_that_crashed_the_loader_are_errors_naming_the_file() {
    use manifold_mixup::train::checkpoint::optimizer_from_bytes;
    let config = fuzzing::checkpoint_config();
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes/checkpoint");
    let mut found = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        let file = entry.unwrap().path();
        let data = std::fs::read(&file).unwrap();
        let [_, record, _] = fuzzing::split_checkpoint_input(&data).unwrap();
        let record = record.to_vec();
        let path = Path::new("run/checkpoint/epoch-0001/optimizer.bpk");
        let error = optimizer_from_bytes(path, record, manifold_mixup::train::optimizer(&config))
            .err()
            .expect("a crash input is refused");
        if std::env::var_os("MMIX_SHOW_ERRORS").is_some() {
            eprintln!("{} {error}", file.display());
        }
        assert!(
            error
                .to_string()
                .contains("optimizer.bpk: damaged or unreadable"),
            "{error}"
        );
        found += 1;
    }
    assert!(found > 0);
}

/// The checkpoint target's seed is a checkpoint that loads, so the fuzzer starts deep inside
/// the loaders rather than at their first check.
#[test]
fn the_checkpoint_seed_loads() {
    use manifold_mixup::train::checkpoint::{
        model_from_bytes, optimizer_from_bytes, state_from_bytes,
    };
    let data = fuzzing::checkpoint_seed();
    let [model_bytes, optimizer_bytes, state] = fuzzing::split_checkpoint_input(&data).unwrap();
    let config = fuzzing::checkpoint_config();
    let path = Path::new("seed");
    model_from_bytes(
        path,
        model_bytes.to_vec(),
        fuzzing::checkpoint_model(&config),
    )
    .unwrap();
    optimizer_from_bytes(
        path,
        optimizer_bytes.to_vec(),
        manifold_mixup::train::optimizer(&config),
    )
    .unwrap();
    assert_eq!(state_from_bytes(path, state).unwrap().epochs_done, 1);
}
