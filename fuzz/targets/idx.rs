//! The IDX reader (MNIST, Fashion-MNIST): a pair of images and labels files, each raw or
//! gzip-compressed. Input: a little-endian u16 length of the images file, the images file,
//! then the labels file.

fn main() {
    afl::fuzz!(|data: &[u8]| manifold_mixup::fuzzing::idx(data));
}
