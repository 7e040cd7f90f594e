//! The checkpoint loader: `model.bpk`, `optimizer.bpk` and `state.json` onto a small model.
//! Input: little-endian u32 lengths of the model and optimizer records, the model record,
//! the optimizer record, then the state.

use manifold_mixup::fuzzing;

fn main() {
    let config = fuzzing::checkpoint_config();
    // A loader's panic aborts the run either way; the template is never mutated.
    let model = std::panic::AssertUnwindSafe(fuzzing::checkpoint_model(&config));
    afl::fuzz!(|data: &[u8]| fuzzing::checkpoint(data, &config, &model));
}
