//! skein-cli: the `skein` command-line client. It talks to any node's HTTP
//! API and shares only the request and response types of `skein_raft::api`.
//!
//! - [`args`]: the command line (clap derive), help texts and examples;
//! - [`addr`]: `--addr` parsing: `host:port`, `http://host:port`, lists;
//! - [`client`]: the HTTP client: node failover, leader redirect, timeouts,
//!   and one error type with messages a user can act on;
//! - [`commands`]: one module per command group, each printing a table or
//!   the server's JSON;
//! - [`render`]: pure table and time formatting.
//!
//! `main.rs` only parses the arguments, runs [`run`] and maps its error to
//! an exit code (1 for errors; clap exits with 2 on usage errors).

pub mod addr;
pub mod args;
pub mod cert;
pub mod client;
pub mod commands;
pub mod plan_args;
pub mod policy_args;
pub mod render;

use std::io::Write;

pub use args::Cli;
use client::ClientError;

/// Runs one parsed command line, printing its answer to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    // One crypto provider, named, before any HTTPS client is built.
    skein_tls::install_provider();
    let client = client::Client::new(cli.addr, cli.token, cli.ca.as_deref())?;
    let mut ctx = commands::Ctx { client, output: cli.output, out };
    commands::run(&mut ctx, cli.command).await?;
    ctx.out.flush()?;
    Ok(())
}

/// The text to print on standard error for a failed command: `error: ...`,
/// and a `hint: ...` line when there is advice to give.
pub fn report(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err:#}");
    if let Some(hint) = err.downcast_ref::<ClientError>().and_then(ClientError::hint) {
        text.push_str("\nhint: ");
        text.push_str(&hint);
    }
    text
}

/// Whether the command failed only because standard output was closed
/// (`skein tasks list | head`): not worth an error message.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_message_code_and_hint() {
        let err = anyhow::Error::new(ClientError::Api {
            status: 503,
            code: skein_raft::api::ErrorCode::Unavailable,
            message: "no leader elected yet".into(),
            leader: None,
        });
        let text = report(&err);
        assert!(text.starts_with("error: no leader elected yet (unavailable, HTTP 503)\nhint: "), "{text}");
        let err = err.context("after enqueueing 1000 of 5000 tasks");
        assert!(report(&err).starts_with("error: after enqueueing 1000 of 5000 tasks: no leader elected yet"));
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let err = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
