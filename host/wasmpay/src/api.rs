//! How a command reaches a node's HTTP API: shared by every command that talks to one.

use clap::Args;

/// The node's HTTP API and the admin token.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Base URL of a node's HTTP API.
    #[arg(long, env = "WASMPAY_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Admin bearer token.
    #[arg(long, env = "WASMPAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}
