//! `mmix`: the command line. Errors from the library arrive here and leave as one line.

use clap::Parser;

use manifold_mixup::cli;
use manifold_mixup::cli::args::{Cli, Command, DataCommand, DemoArgs};

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command.unwrap_or(Command::Demo(DemoArgs {
        out: None,
        epochs: None,
        seed: 0,
        device: "cpu".into(),
    })) {
        Command::Train(args) => {
            let result = cli::train::run(&args, false)?;
            cli::train::print_result(&result);
            if result.interrupted {
                return Ok(cli::train::INTERRUPTED_EXIT);
            }
        }
        Command::Eval(args) => cli::commands::eval(&args)?,
        Command::Compare(args) => cli::commands::compare(&args)?,
        Command::Demo(args) => cli::commands::demo(&args)?,
        Command::Models => cli::commands::models()?,
        Command::Data {
            command: DataCommand::Inspect(args),
        } => cli::commands::inspect(&args)?,
        Command::Bench(args) => cli::commands::bench(&args)?,
        Command::Study(args) => return cli::study::run(&args),
    }
    Ok(0)
}

fn main() {
    manifold_mixup::process::configure();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            // clap's usage block and tips make many lines; the first says what is wrong.
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let reason = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {reason} (see `mmix --help`)");
            std::process::exit(2);
        }
    };
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}
