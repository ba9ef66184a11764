//! The `wasmpay` binary: parses arguments and hands over to the libraries. This is the edge of
//! the program, the one place errors become `anyhow` reports.
//!
//! Layout: `cli` parses the command line and runs `serve`, `pay`, `account`, `ledger` and
//! `cluster`; `plugins` defines and runs `plugin …`, `plugin_crate` holds `plugin new` and
//! `plugin build` (an integrator's plugin crate); `api`
//! holds the arguments every command that calls a node's HTTP API takes and the call itself;
//! `output` prints tables or JSON; `exit` is the exit-code contract. `demo` and `bench`
//! live in `wasmpay-tools`. Every command talks to nodes through `wasmpay_node::client`.

mod api;
mod cli;
mod exit;
mod output;
mod plugin_crate;
mod plugins;

fn main() -> std::process::ExitCode {
    cli::main()
}
