//! The `wasmpay` binary: parses arguments and hands over to the library. This is the edge of
//! the program, the one place errors become `anyhow` reports.
//!
//! Layout: `cli` parses the command line and runs `serve`, `pay`, `account` and `ledger`;
//! `plugins` runs `plugin list|push|activate|rollback|remove`;
//! `demo` runs the main job on embedded defaults; `bench` measures a node beside its baselines;
//! `nats` starts a private NATS server for the last two. They talk to nodes through
//! `wasmpay::client`.

mod bench;
mod cli;
mod demo;
mod nats;
mod plugins;
mod postgres;

fn main() -> std::process::ExitCode {
    cli::main()
}
