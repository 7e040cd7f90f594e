//! What a training run shows while it runs: a progress bar where there is a terminal, one
//! line per epoch (on stdout and in the run's `train.log`), and the trace `--trace` asks for.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::trace::TraceWriter;
use crate::train::{EpochRecord, Progress, TrainError};

/// The run's `train.log`, opened once the run has got going: a resume refused for a damaged
/// checkpoint leaves the folder exactly as it was. Lines that cannot be written are dropped;
/// the checkpoint and reports are what a run's result rests on.
pub(super) struct RunLog {
    path: PathBuf,
    headline: String,
    file: RefCell<Option<std::fs::File>>,
}

impl RunLog {
    pub(super) fn new(path: PathBuf, headline: String) -> Self {
        Self {
            path,
            headline,
            file: RefCell::new(None),
        }
    }

    /// Opens the log and writes the headline, once.
    pub(super) fn start(&self) {
        let mut file = self.file.borrow_mut();
        if file.is_none() {
            *file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            if let Some(file) = file.as_mut() {
                writeln!(file, "{}", self.headline).ok();
            }
        }
    }

    /// Appends a line, if the run got going.
    pub(super) fn line(&self, line: &str) {
        if let Some(file) = self.file.borrow_mut().as_mut() {
            writeln!(file, "{line}").ok();
        }
    }
}

/// Shows a run's [`Progress`]: the bar, the epoch lines and the log, and the trace.
pub(super) struct Console {
    epochs: usize,
    bar: Option<ProgressBar>,
    log: RunLog,
    tracer: Option<TraceWriter>,
    trace_error: Option<TrainError>,
}

impl Console {
    /// A console for a run of `epochs` epochs; the bar only where `show_bar` and both stdout
    /// and stderr are terminals. The bar draws on stderr, and prints nothing where it cannot
    /// draw: with stderr redirected (or under mpirun, which gives stdout alone a terminal)
    /// the epoch lines go to stdout plainly.
    #[allow(clippy::expect_used, reason = "cannot fail: valid template")]
    pub(super) fn new(
        epochs: usize,
        show_bar: bool,
        log: RunLog,
        tracer: Option<TraceWriter>,
    ) -> Self {
        let interactive =
            show_bar && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} batches, ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            epochs,
            bar,
            log,
            tracer,
            trace_error: None,
        }
    }

    /// Shows one event of the loop.
    pub(super) fn show(&mut self, event: Progress) {
        match event {
            Progress::EpochStart { epoch, batches } => {
                self.log.start();
                if let Some(bar) = &self.bar {
                    bar.reset();
                    bar.set_length(batches as u64);
                    bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
                }
            }
            Progress::Batch { done, loss, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done as u64);
                    bar.set_message(format!("loss {loss:.4}"));
                }
            }
            Progress::EpochEnd(record) => {
                let line = epoch_line(record, self.epochs);
                match &self.bar {
                    Some(bar) => bar.println(&line),
                    None => println!("{line}"),
                }
                self.log.line(&line);
            }
            Progress::Start { weights } => {
                if let Some(Err(e)) = self.tracer.as_mut().map(|t| t.start(weights)) {
                    (self.tracer, self.trace_error) = (None, Some(e));
                }
            }
            Progress::Step { trace, weights } => {
                if let Some(Err(e)) = self.tracer.as_mut().map(|t| t.step(trace, weights)) {
                    (self.tracer, self.trace_error) = (None, Some(e));
                }
            }
        }
    }

    /// Clears the bar; a trace that could not be written fails the run that asked for it.
    pub(super) fn finish<T>(&mut self, outcome: Result<T, TrainError>) -> Result<T, TrainError> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        match self.trace_error.take() {
            Some(e) => Err(e),
            None => outcome,
        }
    }

    /// The run's log.
    pub(super) fn log(&self) -> &RunLog {
        &self.log
    }
}

/// One epoch as the console and the log show it.
fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    let valid = record
        .valid
        .map(|v| format!(" valid_acc {:.2}%", v.accuracy * 100.0))
        .unwrap_or_default();
    let test = record
        .test
        .map(|t| {
            format!(
                " test_acc {:.2}% test_nll {:.4} test_ece {:.2}%",
                t.accuracy * 100.0,
                t.nll,
                t.ece * 100.0
            )
        })
        .unwrap_or_default();
    let teacher = record
        .teacher_test
        .map(|t| format!(" teacher_test_acc {:.2}%", t.accuracy * 100.0))
        .unwrap_or_default();
    format!(
        "epoch {:>3}/{epochs} lr {:.4} train_loss {:.4} train_acc {:.2}%{valid}{test}{teacher} {:.0} img/s {:.1}s",
        record.epoch,
        record.lr,
        record.train_loss,
        record.train_acc * 100.0,
        record.images_per_second,
        record.seconds
    )
}
