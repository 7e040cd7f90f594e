//! `mmix predict`: a run's network on image files. A file that cannot be classified is named
//! in one line on stderr; the others are still classified, and the exit status says so.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use crate::fsio::path_text;
use crate::predict::{Predictor, Ranked};

use super::args::{PredictArgs, PredictFormat};

/// Images decoded and classified together: bounds the memory of a large folder.
const CHUNK: usize = 256;

pub fn run(args: &PredictArgs) -> Result<i32> {
    let device = args.device.open().map_err(|e| anyhow!(e))?;
    let predictor = Predictor::open(&args.dir, &device, !args.uncalibrated)?;
    let (files, unusable_paths) = image_files(&args.images);
    let mut failures = unusable_paths;
    match (args.format, predictor.temperature()) {
        (PredictFormat::Csv, _) => println!("file,rank,class,name,probability"),
        (PredictFormat::Text, Some(t)) => println!(
            "probabilities at temperature {t:.3}, fitted on {}'s validation split (--uncalibrated for plain softmax)",
            args.dir.display()
        ),
        _ => {}
    }
    for chunk in files.chunks(CHUNK) {
        let (mut read, mut pixels) = (Vec::new(), Vec::new());
        for path in chunk {
            match predictor.read_image(path) {
                Ok(image) => {
                    pixels.extend(image);
                    read.push(path);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failures += 1;
                }
            }
        }
        if read.is_empty() {
            continue;
        }
        let ranked = predictor.classify(pixels, usize::from(args.top));
        for (path, classes) in read.into_iter().zip(ranked) {
            println!(
                "{}",
                line(args.format, path, &classes, predictor.temperature())
            );
        }
    }
    if failures > 0 {
        eprintln!(
            "error: {failures} of {} inputs could not be classified",
            files.len() + unusable_paths
        );
        return Ok(1);
    }
    Ok(0)
}

/// The files to classify, in order: each file as given, each folder's image files sorted by
/// name. A path that is neither, or a folder without images, is named on stderr and counted.
fn image_files(paths: &[PathBuf]) -> (Vec<PathBuf>, usize) {
    let (mut files, mut failures) = (Vec::new(), 0);
    for path in paths {
        if !path.is_dir() {
            // A missing or unreadable file is reported when it is read.
            files.push(path.clone());
            continue;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                // Named as images, they are read and any that is not a regular file (a FIFO,
                // a device, a broken link) is named and counted there.
                .filter(|p| crate::data::is_image(p) && !p.is_dir())
                .collect(),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failures += 1;
                continue;
            }
        };
        if entries.is_empty() {
            eprintln!(
                "error: {} holds no image files (.png, .jpg, .jpeg)",
                path.display()
            );
            failures += 1;
        }
        entries.sort();
        files.extend(entries);
    }
    (files, failures)
}

fn line(
    format: PredictFormat,
    path: &Path,
    classes: &[Ranked],
    temperature: Option<f64>,
) -> String {
    match format {
        PredictFormat::Text => {
            let ranked: Vec<String> = classes
                .iter()
                .map(|c| format!("{} {:.1}%", c.name, c.probability * 100.0))
                .collect();
            format!("{}: {}", path_text(path), ranked.join(", "))
        }
        PredictFormat::Json => serde_json::json!({
            "file": path_text(path),
            "top": classes,
            "temperature": temperature,
        })
        .to_string(),
        PredictFormat::Csv => classes
            .iter()
            .enumerate()
            .map(|(rank, c)| {
                format!(
                    "{},{},{},{},{}",
                    csv_field(&path_text(path)),
                    rank + 1,
                    c.class,
                    csv_field(&c.name),
                    c.probability
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// A CSV field, quoted where it holds a separator, a quote or a line break.
fn csv_field(text: &str) -> String {
    match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_with_separators_are_quoted() {
        assert_eq!(csv_field("t-shirt/top"), "t-shirt/top");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
