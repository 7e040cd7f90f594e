//! The CIFAR binary reader. Input: a byte choosing CIFAR-10, CIFAR-100 fine or coarse
//! labels, then the file.

fn main() {
    afl::fuzz!(|data: &[u8]| manifold_mixup::fuzzing::cifar(data));
}
