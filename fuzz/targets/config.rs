//! The TOML configurations: a `mmix train --config` file resolved into a run's
//! configuration, or a `mmix study` file checked as the study command checks it. Input: a
//! byte choosing which (even: run, odd: study), then the text.

fn main() {
    afl::fuzz!(|data: &[u8]| manifold_mixup::fuzzing::config(data));
}
