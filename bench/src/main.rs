//! `skein-bench`: see `skein-bench --help` and the crate docs.

use std::process::ExitCode;

use clap::Parser;
use skein_bench::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tokio::spawn(cleanup_on_signal());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let json = args.json.clone();
    let (report, all_ok) = match skein_bench::scenarios::run(args, command).await {
        Ok(r) => r,
        Err(e) => {
            skein_bench::cleanup();
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report.render());
    match serde_json::to_string_pretty(&report) {
        Ok(text) => match std::fs::write(&json, text) {
            Ok(()) => println!("results written to {}", json.display()),
            Err(e) => eprintln!("error: writing {}: {e}", json.display()),
        },
        Err(e) => eprintln!("error: encoding the results: {e}"),
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: some scenarios failed (see the notes above)");
        ExitCode::FAILURE
    }
}

/// Ctrl-C or SIGTERM: kill every node and server, remove the work
/// directory, exit 130.
async fn cleanup_on_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("bench: interrupted; killing the clusters");
    skein_bench::cleanup();
    std::process::exit(130);
}
