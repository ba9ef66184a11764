//! The `wasmpay` binary: parses arguments and hands over to [`wasmpay::cli`].

fn main() -> std::process::ExitCode {
    wasmpay::cli::main()
}
