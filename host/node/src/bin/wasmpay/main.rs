//! The `wasmpay` binary: parses arguments and hands over to the library. This is the edge of
//! the program, the one place errors become `anyhow` reports.
//!
//! Layout: `cli` parses the command line and runs `serve`, `pay` and `account`; `demo` runs
//! the main job on embedded defaults. Both talk to nodes through `wasmpay::client`.

mod cli;
mod demo;

fn main() -> std::process::ExitCode {
    cli::main()
}
