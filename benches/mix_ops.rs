//! `cargo bench --bench mix_ops`: the mixing work of a train step alone (draws, mixes at
//! PreActResNet-18's points, targets, backward through the mixes) for every mode of the family,
//! at widths 16 and 64, batch 128, in alternated rounds; one JSON line each, then the median
//! extra time of each mode over manifold mixing. `-- TEXT` keeps the modes whose name has TEXT
//! (manifold always runs, as the reference).

use std::collections::BTreeMap;

use burn::tensor::Device;
use manifold_mixup::bench::{MIX_FAMILY, bench_mix_op};
use manifold_mixup::mixup::MixConfig;

fn main() {
    manifold_mixup::process::configure();
    let device = Device::flex();
    let only = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let mut medians: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
    for _round in 0..3 {
        for width in [16, 64] {
            for (mode, per_example) in MIX_FAMILY {
                let config = MixConfig {
                    per_example,
                    ..MixConfig::new(mode, 2.0, vec![0, 1, 2])
                };
                let name = format!("{mode}{}", if per_example { " per-example" } else { "" });
                if !name.contains(&only) && name != "manifold" {
                    continue;
                }
                let result = bench_mix_op(&config, width, 128, 10, &device).expect("a valid mix");
                println!("{}", serde_json::to_string(&result).expect("serialisable"));
                medians
                    .entry((width, result.mix.clone()))
                    .or_default()
                    .push(result.median_ms);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for width in [16, 64] {
        let base = median(medians[&(width, "manifold".to_string())].clone());
        for ((w, mix), times) in &medians {
            if *w == width {
                let m = median(times.clone());
                println!(
                    "width {width}: {mix:>22} {m:8.2} ms, {:+7.2} ms over manifold",
                    m - base
                );
            }
        }
    }
}
