//! Every kind of bad file gives a typed error naming the file; good files read back exactly.

use std::io::Write;

use super::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write_mnist_like(dir: &Path, count: usize, labels: Vec<u8>, compress: bool) {
    let pixels: Vec<u8> = (0..count * 16).map(|i| (i % 251) as u8).collect();
    for (split, n) in [("train", count), ("t10k", count)] {
        let images = encode_idx(&[n, 4, 4], &pixels);
        let labels = encode_idx(&[labels.len()], &labels);
        let (images, labels, suffix) = if compress {
            (gzip(&images), gzip(&labels), ".gz")
        } else {
            (images, labels, "")
        };
        std::fs::write(
            dir.join(format!("{split}-images-idx3-ubyte{suffix}")),
            images,
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte{suffix}")),
            labels,
        )
        .unwrap();
    }
}

fn options(dir: &Path) -> LoadOptions {
    LoadOptions {
        data_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn idx_reads_back_gzip_and_raw() {
    for compress in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        write_mnist_like(dir.path(), 3, vec![0, 9, 4], compress);
        let data = load(DatasetName::Mnist, &options(dir.path())).unwrap();
        assert_eq!(data.train.labels, vec![0, 9, 4]);
        assert_eq!(data.train.size, 4);
        assert_eq!(data.train.image(1)[0], 16);
        assert!(!data.default_augmentation().horizontal_flip);
    }
}

#[test]
fn embedded_subset_is_stratified_fashion_mnist() {
    let data = load(DatasetName::FashionMnistMini, &LoadOptions::default()).unwrap();
    assert_eq!(data.train.class_counts(10), vec![600; 10]);
    assert_eq!(data.test.class_counts(10), vec![100; 10]);
    assert_eq!((data.train.channels, data.train.size), (1, 28));
    let (mean, std) = data.train.channel_stats();
    // Fashion-MNIST's well-known statistics are mean 0.286, std 0.353.
    assert!(
        (mean[0] - 0.286).abs() < 0.02 && (std[0] - 0.353).abs() < 0.02,
        "{mean:?} {std:?}"
    );
}

/// The error as `mmix` prints it: the message and every cause below it.
fn message(err: DataError) -> String {
    format!("{:#}", anyhow::Error::new(err))
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = message(load(DatasetName::Mnist, &options(dir.path())).unwrap_err());
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert_eq!(
        err.matches("(os error").count(),
        1,
        "the reason once: {err}"
    );
}

#[test]
fn missing_folder_says_where_it_looked() {
    let err = load(
        DatasetName::Cifar10,
        &options(Path::new("/nonexistent/cifar")),
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }));
    assert!(message(err).contains("/nonexistent/cifar"));
}

#[test]
fn wrong_magic_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 2, vec![1, 2], false);
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2] = 0x0d; // float data, which the trainer does not read
    std::fs::write(&path, bytes).unwrap();
    let err = load(DatasetName::Mnist, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
    assert!(message(err).contains("train-images-idx3-ubyte"));
}

#[test]
fn truncated_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 2, vec![1, 2], false);
    let path = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = load(DatasetName::Mnist, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
}

#[test]
fn truncated_gzip_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 20, vec![1; 20], true);
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(DatasetName::Mnist, &options(dir.path())).unwrap_err();
    assert!(message(err).contains("train-images-idx3-ubyte.gz"));
}

#[test]
fn count_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 3, vec![1, 2], false);
    let err = load(DatasetName::Mnist, &options(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn label_out_of_range_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 2, vec![1, 12], false);
    let err = load(DatasetName::Mnist, &options(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                label: 12,
                index: 1,
                ..
            }
        ),
        "{err}"
    );
}

fn cifar_record(label_bytes: &[u8], fill: u8) -> Vec<u8> {
    let mut record = label_bytes.to_vec();
    record.extend(std::iter::repeat_n(fill, 3072));
    record
}

#[test]
fn cifar10_binary_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        let bytes = [cifar_record(&[i as u8], i as u8), cifar_record(&[0], 200)].concat();
        std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), cifar_record(&[9], 7)).unwrap();
    let data = load(DatasetName::Cifar10, &options(dir.path())).unwrap();
    assert_eq!(data.train.labels, vec![1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
    assert_eq!(data.test.labels, vec![9]);
    assert_eq!((data.train.channels, data.train.size), (3, 32));
    assert!(data.train.image(2).iter().all(|&p| p == 2));
    assert_eq!(data.class_names[9], "truck");
}

#[test]
fn cifar100_uses_fine_labels_by_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.bin"),
        [cifar_record(&[3, 77], 1), cifar_record(&[19, 99], 2)].concat(),
    )
    .unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar_record(&[0, 5], 3)).unwrap();
    let fine = load(DatasetName::Cifar100, &options(dir.path())).unwrap();
    assert_eq!(fine.train.labels, vec![77, 99]);
    assert_eq!(fine.classes(), 100);
    let coarse = load(
        DatasetName::Cifar100,
        &LoadOptions {
            cifar100_coarse: true,
            ..options(dir.path())
        },
    )
    .unwrap();
    assert_eq!(coarse.train.labels, vec![3, 19]);
}

#[test]
fn cifar_truncated_and_out_of_range_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.bin"),
        &cifar_record(&[3, 77], 1)[..1000],
    )
    .unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar_record(&[0, 5], 3)).unwrap();
    let err = load(DatasetName::Cifar100, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err}");
    std::fs::write(dir.path().join("train.bin"), cifar_record(&[3, 100], 1)).unwrap();
    let err = load(DatasetName::Cifar100, &options(dir.path())).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { label: 100, .. }),
        "{err}"
    );
}

fn write_png(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(5, 7, image::Rgb([shade, 0, 255 - shade]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders_read_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        write_png(&dir.path().join(split).join("cat/a.png"), 10);
        write_png(&dir.path().join(split).join("dog/b.png"), 240);
    }
    let data = load(
        DatasetName::Folder,
        &LoadOptions {
            image_size: 8,
            ..options(dir.path())
        },
    )
    .unwrap();
    assert_eq!(data.class_names, vec!["cat", "dog"]);
    assert_eq!(data.train.labels, vec![0, 1]);
    assert_eq!((data.train.channels, data.train.size), (3, 8));
    let red_plane = &data.train.image(1)[..64];
    assert!(red_plane.iter().all(|&p| p == 240));
}

#[test]
fn unlabelled_folders_read_the_images_directly_in_them_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("b.png"), 200);
    write_png(&dir.path().join("a.png"), 10);
    write_png(&dir.path().join("nested/c.png"), 90);
    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    let pool = super::read_unlabeled_folder(dir.path(), 4, 1).unwrap();
    assert_eq!((pool.len(), pool.channels, pool.size), (2, 1, 4));
    let grey = |name: &str| {
        let path = dir.path().join(name);
        super::decode_image_in(&path, &std::fs::read(&path).unwrap(), 4, 1).unwrap()
    };
    assert_eq!(pool.image(0), &grey("a.png")[..]);
    assert_eq!(pool.image(1), &grey("b.png")[..]);
    assert_ne!(pool.image(0), pool.image(1));
    // Padded as a labelled set is: the 4×4 image centred in zeros.
    let padded = pool.padded(6).unwrap();
    assert_eq!((padded.len(), padded.size), (2, 6));
    let first = padded.image(0);
    assert_eq!(&first[7..11], &pool.image(0)[..4]);
    assert!(first[..6].iter().all(|&p| p == 0));

    let empty = tempfile::tempdir().unwrap();
    write_png(&empty.path().join("only-in-a-subfolder/a.png"), 1);
    let err = super::read_unlabeled_folder(empty.path(), 4, 1).unwrap_err();
    assert!(matches!(err, DataError::NoUnlabeledImages { .. }), "{err}");
    std::fs::write(empty.path().join("broken.jpg"), b"not a jpeg").unwrap();
    let err = super::read_unlabeled_folder(empty.path(), 4, 1).unwrap_err();
    assert!(message(err).contains("broken.jpg"));
}

#[test]
fn empty_folder_and_unreadable_image_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("train/cat")).unwrap();
    let err = load(DatasetName::Folder, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::EmptyFolder { .. }), "{err}");
    // Beside a class with images, an empty class folder is named, not dropped.
    write_png(&dir.path().join("train/dog/a.png"), 1);
    let err = load(DatasetName::Folder, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass { .. }), "{err}");
    assert!(message(err).contains("cat"));
    write_png(&dir.path().join("train/cat/a.png"), 1);
    write_png(&dir.path().join("test/dog/a.png"), 1);

    write_png(&dir.path().join("test/cat/a.png"), 1);
    std::fs::write(dir.path().join("train/cat/broken.png"), b"not a png").unwrap();
    let err = load(DatasetName::Folder, &options(dir.path())).unwrap_err();
    assert!(matches!(err, DataError::UnreadableImage { .. }), "{err}");
    assert!(message(err).contains("broken.png"));
}

#[test]
fn unknown_dataset_name_is_an_error() {
    assert!(matches!(
        "imagenet".parse::<DatasetName>(),
        Err(DataError::UnknownDataset(_))
    ));
    assert_eq!(
        "cifar10".parse::<DatasetName>().unwrap(),
        DatasetName::Cifar10
    );
}

#[test]
fn a_decoders_debug_form_of_a_png_chunk_becomes_its_name() {
    let text = "Format error decoding Png: CRC error: expected 0xa8668048 have 0x57668048 while decoding ChunkType { type: IHDR, critical: true, private: false, reserved: false, safecopy: false } chunk.";
    assert_eq!(
        super::folder::decoder_message(text),
        "Format error decoding Png: CRC error: expected 0xa8668048 have 0x57668048 while decoding IHDR chunk."
    );
    assert_eq!(super::folder::decoder_message("plain"), "plain");
}

#[test]
fn a_jpeg_coded_as_the_decoder_cannot_read_is_named_for_its_coding() {
    let frame = |marker: u8| {
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        bytes.extend([0xFF, marker, 0x00, 0x0B, 8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
        bytes.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0, 0xFF, 0xD9]);
        bytes
    };
    let coding = super::folder::unsupported_jpeg_coding;
    assert_eq!(coding(&frame(0xC3)), Some("lossless"));
    assert_eq!(coding(&frame(0xC9)), Some("arithmetic-coded"));
    assert_eq!(coding(&frame(0xC0)), None);
    assert_eq!(coding(&frame(0xC2)), None);
    assert_eq!(coding(b"\x89PNG"), None);
    assert_eq!(coding(&[0xFF, 0xD8, 0xFF]), None);
    let error = super::decode_image(Path::new("lossless.jpg"), &frame(0xC3), 4).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("lossless.jpg") && text.contains("a lossless JPEG"),
        "{text}"
    );
}
