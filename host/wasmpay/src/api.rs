//! How a command reaches a node's HTTP API: shared by every command that talks to one.

use clap::Args;
use serde_json::Value;
use wasmpay_node::client::http_call;

use crate::exit::{fail, of_http};

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

impl ApiArgs {
    /// The URL of `path` on the node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.trim_end_matches('/'))
    }
}

/// One call of the node's HTTP API, sent once: its JSON answer, or a failure of the kind its
/// status says (a refusal, a retryable error, a refused token) naming the URL.
pub async fn call(api: &ApiArgs, method: hyper::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let url = api.url(path);
    let (status, text) = http_call(method, &url, &api.token, body).await?;
    answer(&url, status, &text)
}

/// A node's answer as JSON, or the failure its status says, with the node's code and message.
pub fn answer(url: &str, status: hyper::StatusCode, text: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    if !status.is_success() {
        let code = value["code"].as_str().unwrap_or("error");
        let message = value["message"].as_str().unwrap_or(text);
        let said = format!("{url} answered {status}: {code}: {message}");
        return Err(match of_http(status) {
            Some(exit) => fail(exit, said),
            None => anyhow::anyhow!(said),
        });
    }
    Ok(value)
}
