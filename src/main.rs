#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `mmix`: the command line. Errors from the library arrive here and leave as one line.

use clap::Parser;

use manifold_mixup::cli;
use manifold_mixup::cli::args::{Cli, Command, DataCommand};

fn run(cli: Cli) -> anyhow::Result<i32> {
    // `mmix` alone is `mmix demo`, with the demo's own defaults.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["mmix", "demo"])
            .command
            .ok_or_else(|| anyhow::anyhow!("`mmix demo` did not parse as a command"))?,
    };
    let world = manifold_mixup::distributed::init()?;
    if world.size() > 1 && !matches!(command, Command::Train(_) | Command::Bench(_)) {
        anyhow::bail!(
            "only `mmix train` and `mmix bench` run across {} ranks; start this command once, without mpirun or srun",
            world.size()
        );
    }
    match command {
        Command::Train(args) => {
            let result = cli::train::run(&args, false)?;
            if world.rank() == 0 {
                cli::train::print_result(&result);
            }
            if result.interrupted {
                return Ok(cli::train::INTERRUPTED_EXIT);
            }
        }
        Command::Eval(args) => cli::commands::eval(&args)?,
        Command::Compare(args) => cli::commands::compare(&args)?,
        Command::Predict(args) => return cli::predict::run(&args),
        Command::Demo(args) => return cli::commands::demo(&args),
        Command::Models => cli::commands::models()?,
        Command::Data {
            command: DataCommand::Inspect(args),
        } => cli::commands::inspect(&args)?,
        Command::Bench(args) => cli::commands::bench(&args)?,
        Command::Study(args) => return cli::study::run(&args),
        Command::Parity(args) => return cli::commands::parity(&args),
    }
    Ok(0)
}

/// clap's error in one line. Its usage block and tips make many lines: the first says what
/// is wrong, and the indented lines under it (the missing arguments) name what.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let reason = first.strip_prefix("error: ").unwrap_or(first);
    let named: Vec<&str> = lines
        .take_while(|line| line.starts_with("  "))
        .map(str::trim)
        .collect();
    match named.is_empty() {
        true => reason.to_string(),
        false => format!("{} {}", reason, named.join(", ")),
    }
}

fn main() {
    manifold_mixup::process::configure();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("error: {} (see `mmix --help`)", one_line(&error));
            std::process::exit(2);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // One write, so that ranks sharing a terminal cannot interleave their lines.
            let line = format!("error: {error:#}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            1
        }
    };
    // Every rank of a data-parallel run says it is done, as MPI requires.
    manifold_mixup::distributed::finish();
    std::process::exit(code);
}
