//! `skein admin`: backups of the replicated state.

use crate::args::{AdminCommand, Output};

use super::Ctx;

pub async fn run(ctx: &mut Ctx<'_>, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Backup { file } => {
            let (bytes, snapshot) = ctx.client.download("/api/v1/admin/backup", &file).await?;
            match ctx.output {
                Output::Json => ctx.json(&serde_json::json!({
                    "file": file.display().to_string(),
                    "bytes": bytes,
                    "snapshot": snapshot,
                })),
                Output::Table => ctx.line(&format!(
                    "backup written to {} ({bytes} bytes, snapshot {}); restore it with: skein-node --restore {} \
                     --bootstrap --data-dir EMPTY_DIR ...",
                    file.display(),
                    snapshot.as_deref().unwrap_or("?"),
                    file.display()
                )),
            }
        }
    }
}
