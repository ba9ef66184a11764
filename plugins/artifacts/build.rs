//! Compiles the guest crates to `wasm32-wasip2` components and embeds them in this crate,
//! the pattern of wasmtime's `crates/test-programs/artifacts/build.rs`: binaries are made from
//! source by every build and never committed.
//!
//! The guests are built by a nested `cargo` into their own target directory (the outer
//! build holds the lock on its own) with the workspace's `plugin` profile.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";
/// (crate, constant, source directory)
const GUESTS: [(&str, &str, &str); 12] = [
    ("card", "CARD", "plugins/card"),
    ("wallet", "WALLET", "plugins/wallet"),
    ("mobile", "MOBILE", "plugins/mobile"),
    ("fx_table", "FX_TABLE", "plugins/fx-table"),
    ("xborder", "XBORDER", "plugins/xborder"),
    ("faulty", "FAULTY", "tests/fixtures/faulty"),
    ("stalling", "STALLING", "tests/fixtures/stalling"),
    ("card_v2", "CARD_V2", "tests/fixtures/card_v2"),
    ("bad_describe", "BAD_DESCRIBE", "tests/fixtures/bad_describe"),
    ("contract_0_1_0", "CONTRACT_0_1_0", "tests/fixtures/contract_0_1_0"),
    ("screen", "SCREEN", "tests/fixtures/screen"),
    ("flat_fee", "FLAT_FEE", "tests/fixtures/flat_fee"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.ancestors().nth(2).expect("plugins/artifacts sits two levels deep").to_path_buf();
    for watched in ["sdk", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    for (_, _, dir) in GUESTS {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }

    ensure_target_installed();
    let target_dir = guest_target_dir(&workspace);
    build_guests(&workspace, &target_dir);

    let mut source = String::new();
    for (name, constant, dir) in GUESTS {
        let wasm = target_dir.join(TARGET).join(PROFILE).join(format!("{name}.wasm"));
        assert!(wasm.exists(), "{} was not produced", wasm.display());
        let _ = writeln!(
            source,
            "/// The `{name}` component, built from `{dir}/`.\npub const {constant}: &[u8] = include_bytes!({:?});",
            wasm.display().to_string()
        );
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("artifacts.rs");
    std::fs::write(out, source).expect("write artifacts.rs");
}

/// A directory shared by every outer profile (debug, release, clippy), so the guests are
/// compiled once, not once per profile.
fn guest_target_dir(workspace: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target")).join("wasm-guests")
}

fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    match status {
        Ok(status) if status.success() => {}
        _ => panic!("the {TARGET} target is missing and `rustup target add {TARGET}` failed: install it by hand"),
    }
}

fn build_guests(workspace: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--locked", "--quiet", "--target", TARGET, "--profile", PROFILE, "--target-dir"])
        .arg(target_dir);
    for (name, _, _) in GUESTS {
        command.args(["-p", name]);
    }
    // What the outer build sets for itself (flags, clippy's wrapper, coverage) must not leak
    // into the guest build.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE",
    ] {
        command.env_remove(variable);
    }
    let status = command.status().expect("run cargo to build the plugins");
    assert!(status.success(), "building the plugins for {TARGET} failed");
}
