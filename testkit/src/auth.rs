//! The admin token of the clusters this process starts.
//!
//! One per process, made on first use: the bootstrap node takes it with
//! `--admin-token-file`, joining nodes present it (`SKEIN_TOKEN`), the CLI
//! runs get it in `SKEIN_TOKEN`, and every [`crate::Api`] sends it unless
//! made with [`crate::Api::without_token`] or [`crate::Api::with_token`].

use std::sync::OnceLock;

/// This process's admin token (`skein_<id>_<secret>`).
pub fn admin_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| skein_tls::token::issue().text)
}
