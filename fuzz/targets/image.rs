//! The image-folder reader's decoding of one file (PNG or JPEG), resized to the run's image
//! size. Input: a byte for the size (its value modulo 64; 0 must be refused), then the file.

fn main() {
    afl::fuzz!(|data: &[u8]| manifold_mixup::fuzzing::image(data));
}
