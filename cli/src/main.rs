//! `skein`: the command-line client of a skein cluster. See `skein --help`.

use std::process::ExitCode;

use clap::Parser;
use skein_cli::{is_broken_pipe, report, run, Cli};

fn main() -> ExitCode {
    // Usage errors (and --help, --version) exit here: 2 for errors, 0 for help.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(run(cli, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}
