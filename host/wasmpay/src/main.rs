//! The `wasmpay` binary: parses arguments and hands over to the libraries. This is the edge of
//! the program, the one place errors become `anyhow` reports.
//!
//! Layout: `cli` parses the command line and runs `serve`, `pay`, `account`, `ledger` and
//! `cluster`; `plugins` runs `plugin list|push|activate|rollback|remove`. `demo` and `bench`
//! live in `wasmpay-tools`. Every command talks to nodes through `wasmpay_node::client`.

mod cli;
mod plugins;

fn main() -> std::process::ExitCode {
    cli::main()
}
