//! One module per command group. Each command asks the cluster, then prints
//! either the server's JSON (`-o json`) or a table made by [`crate::render`].

mod access;
mod admin;
mod cluster;
mod demo;
mod enqueue;
pub mod plan;
mod policy;
mod queue;
mod scale;
mod status;
mod stuck;
mod tasks;
mod watch;

use std::io::Write;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::args::{Command, Output};
use crate::client::Client;

/// What every command needs: the client, the output format and where to print.
pub struct Ctx<'a> {
    pub client: Client,
    pub output: Output,
    pub out: &'a mut dyn Write,
}

impl Ctx<'_> {
    /// Prints a JSON value, pretty, as one document.
    pub fn json(&mut self, value: &Value) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    /// Prints text followed by a newline.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    /// Prints the server's answer as JSON, or as the table `table` makes of
    /// its typed form.
    pub fn show<T: DeserializeOwned>(
        &mut self,
        value: Value,
        what: &str,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Json => self.json(&value),
            Output::Table => {
                let typed: T = typed(value, what)?;
                self.line(&table(&typed))
            }
        }
    }
}

/// Reads the typed body out of a JSON answer.
pub fn typed<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!(
            "the node's answer to {what} is not what this skein expects (are the CLI and the node the same version?)"
        )
    })
}

/// The local wall clock, for "3s ago" in tables.
pub use skein_raft::clock::now_ms;

pub async fn run(ctx: &mut Ctx<'_>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Enqueue(args) => enqueue::run(ctx, args).await,
        Command::Tasks(cmd) => tasks::run(ctx, cmd).await,
        Command::Status(args) => status::run(ctx, args).await,
        Command::Queue(cmd) => queue::run(ctx, cmd).await,
        Command::Cluster(cmd) => cluster::run(ctx, cmd).await,
        Command::Admin(cmd) => admin::run(ctx, cmd).await,
        Command::Watch(args) => watch::run(ctx, args).await,
        Command::Stuck(args) => stuck::run(ctx, args).await,
        Command::Scale(args) => scale::run(ctx, args).await,
        Command::Plan(cmd) => plan::run(ctx, cmd).await,
        Command::Demo(args) => demo::run(ctx, args).await,
        Command::Cert(cmd) => crate::cert::run(cmd, ctx.out),
        Command::Token(cmd) => access::token(ctx, cmd).await,
        Command::Auth(cmd) => access::auth(ctx, cmd).await,
        Command::Audit(args) => access::audit(ctx, args).await,
        Command::Exec(cmd) => policy::exec(ctx, cmd).await,
        Command::Roots(cmd) => policy::roots(ctx, cmd).await,
        Command::Policy(cmd) => policy::policy(ctx, cmd).await,
    }
}
