//! Writes the seeds that are easier made with the crates than by hand: a JPEG for the image
//! target and a checkpoint for the checkpoint target. Run it as `make-seeds fuzz/seeds`
//! (the other seeds are committed as written).

fn main() {
    let seeds = std::path::PathBuf::from(std::env::args().nth(1).expect("the seeds folder"));
    std::fs::write(
        seeds.join("checkpoint/mid-epoch"),
        manifold_mixup::fuzzing::checkpoint_seed(),
    )
    .expect("the seeds folder is writable");
    let out = seeds.join("image/jpeg");
    let image = image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 90]));
    // The first byte is the target's image size, the encoded file follows.
    let mut jpeg = std::io::Cursor::new(vec![6u8]);
    jpeg.set_position(1);
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .expect("a JPEG encodes");
    let jpeg = jpeg.into_inner();
    std::fs::write(&out, &jpeg).expect("the seeds folder is writable");
}
