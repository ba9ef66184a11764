//! `wasmpay plugin new` and `wasmpay plugin build`: an integrator's plugin as a crate of its
//! own, outside this workspace, from a template that builds as it is, to the pair every other
//! command takes: `dist/<name>.wasm` and its manifest `dist/<name>.toml`.
//!
//! One naming rule for manifests everywhere a component is (push, test, the watched plugin
//! directory, `[plugins.<name>] path`): the manifest of `X.wasm` is `X.toml` beside it. In a
//! plugin's source the manifest is `wasmpay-plugin.toml`, as a crate's is `Cargo.toml`; `build`
//! writes it beside the component with the component's sha256.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use wasmpay_plugin_host::{Manifest, Sha256};

/// The source manifest of a plugin crate.
pub const SOURCE_MANIFEST: &str = "wasmpay-plugin.toml";

/// The Rust target components are built for.
const TARGET: &str = "wasm32-wasip2";

/// Where `build` writes the component and its manifest, in the crate.
const DIST: &str = "dist";

/// The template's files: (path in the crate, text with `{{name}}`, `{{type_name}}`, `{{sdk}}`).
const TEMPLATE: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("../templates/plugin/Cargo.toml.tmpl")),
    (SOURCE_MANIFEST, include_str!("../templates/plugin/wasmpay-plugin.toml.tmpl")),
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs.tmpl")),
    ("README.md", include_str!("../templates/plugin/README.md.tmpl")),
    (".gitignore", include_str!("../templates/plugin/gitignore.tmpl")),
];

/// The SDK of the checkout this binary was built from, when it is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
    sdk.join("Cargo.toml").is_file().then(|| sdk.canonicalize().ok()).flatten()
}

/// Writes a new plugin crate named `name` into `directory` (by default `./<name>`), its SDK
/// dependency on `sdk` (by default this checkout's); the crate's directory.
pub fn new(name: &str, directory: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let starts_with_letter = name.bytes().next().is_some_and(|byte| byte.is_ascii_lowercase());
    if !wasmpay_plugin_host::valid_plugin_name(name) || !starts_with_letter {
        bail!("a plugin name is 1-32 characters of a-z 0-9 -, starting with a letter (`{name}` is not)");
    }
    if KEYWORDS.contains(&name) {
        bail!("`{name}` is a Rust keyword, which Cargo refuses as a crate's name: choose another");
    }
    let sdk = match sdk.or_else(default_sdk) {
        Some(sdk) => sdk.canonicalize().with_context(|| format!("the SDK at {}", sdk.display()))?,
        None => bail!("no wasmpay SDK found beside this binary: pass --sdk PATH (the sdk/ directory of a checkout)"),
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the wasmpay SDK (no Cargo.toml): pass the sdk/ directory of a checkout", sdk.display());
    }
    let directory = directory.unwrap_or_else(|| PathBuf::from(name));
    if directory.exists() && std::fs::read_dir(&directory).map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty: choose another --dir", directory.display());
    }
    let sdk_text = sdk.to_str().with_context(|| format!("the SDK's path {} is not UTF-8", sdk.display()))?;
    if sdk_text.chars().any(char::is_control) {
        bail!("the SDK's path {sdk_text:?} holds control characters, which Cargo.toml cannot carry");
    }
    for (path, template) in TEMPLATE {
        let text = template
            .replace("{{name}}", name)
            .replace("{{type_name}}", &type_name(name))
            .replace("{{sdk}}", &sdk_text.replace('\\', "\\\\").replace('"', "\\\""));
        let path = directory.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(directory)
}

/// `card-plus` → `CardPlusPlugin`: the template's plugin type. The suffix keeps it clear of
/// the SDK's types the template imports (`Payment`, `Config`, ...) and of `Self`.
fn type_name(name: &str) -> String {
    let words = name.split('-').flat_map(|word| {
        let mut chars = word.chars();
        chars.next().map(|first| first.to_ascii_uppercase()).into_iter().chain(chars)
    });
    words.chain("Plugin".chars()).collect()
}

/// Rust's keywords, which Cargo refuses as package names.
const KEYWORDS: [&str; 51] = [
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
    "try", "type", "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// What `build` made.
#[derive(Debug)]
pub struct Built {
    /// `dist/<name>.wasm`.
    pub component: PathBuf,
    /// `dist/<name>.toml`.
    pub manifest: PathBuf,
    /// The component's size.
    pub bytes: usize,
    /// The component's hash, as its manifest states it.
    pub sha256: Sha256,
    /// The plugin's name and version, from its manifest.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Builds the plugin crate in `directory` in release for `wasm32-wasip2` (adding the target
/// with rustup when it is missing) and writes `dist/<name>.wasm` and `dist/<name>.toml`.
/// Cargo's progress and diagnostics go to stderr as usual.
pub fn build(directory: &Path) -> anyhow::Result<Built> {
    let source = directory.join(SOURCE_MANIFEST);
    let text = std::fs::read_to_string(&source).with_context(|| {
        format!("reading {}: is this a plugin crate? (`wasmpay plugin new NAME` makes one)", source.display())
    })?;
    let manifest = Manifest::parse(&text).with_context(|| source.display().to_string())?;
    add_target_when_missing(directory)?;
    let (built, version) = compile(directory)?;
    if version != manifest.version {
        bail!(
            "Cargo.toml says version {version} (what `describe` reports), {} says {}: make them the same",
            source.display(),
            manifest.version
        );
    }
    let component = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let sha256 = Sha256::of(&component);
    let text = match &manifest.sha256 {
        None => Manifest::stamped(&text, &sha256),
        Some(stated) if *stated == sha256 => text,
        Some(stated) => bail!(
            "{} states sha256 {stated} but the build made {sha256}: remove the line, `plugin build` fills it in",
            source.display()
        ),
    };
    let dist = directory.join(DIST);
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let (wasm, toml) = (dist.join(format!("{}.wasm", manifest.name)), dist.join(format!("{}.toml", manifest.name)));
    std::fs::write(&wasm, &component).with_context(|| format!("writing {}", wasm.display()))?;
    std::fs::write(&toml, text).with_context(|| format!("writing {}", toml.display()))?;
    Ok(Built {
        component: wasm,
        manifest: toml,
        bytes: component.len(),
        sha256,
        name: manifest.name,
        version: manifest.version,
    })
}

/// `rustup target add wasm32-wasip2` unless it is installed, for the toolchain the crate
/// builds with (its `rust-toolchain.toml`, if any). Without rustup, cargo says what is missing.
fn add_target_when_missing(directory: &Path) -> anyhow::Result<()> {
    let Ok(installed) = Command::new("rustup").args(["target", "list", "--installed"]).current_dir(directory).output()
    else {
        eprintln!("rustup not found: building with the toolchain on PATH, which needs the {TARGET} target");
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    eprintln!("adding the Rust target {TARGET}");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(directory)
        .status()
        .context("running rustup")?;
    if !added.success() {
        bail!("`rustup target add {TARGET}` failed ({added})");
    }
    Ok(())
}

/// Runs cargo in the crate and returns the component it wrote for the crate itself (not a
/// dependency), as cargo reports it wherever the target directory is (`CARGO_TARGET_DIR`, a
/// workspace's, the crate's own), with the crate's version.
fn compile(directory: &Path) -> anyhow::Result<(PathBuf, String)> {
    let cargo_toml = directory.join("Cargo.toml");
    let cargo_toml = cargo_toml.canonicalize().with_context(|| format!("{}", cargo_toml.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET, "--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&cargo_toml)
        .current_dir(directory)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo build failed ({}): its errors are above", output.status);
    }
    let ours = |message: &serde_json::Value| {
        message["reason"] == "compiler-artifact"
            && message["manifest_path"].as_str().map(Path::new) == Some(cargo_toml.as_path())
            && message["target"]["kind"].as_array().is_some_and(|kinds| kinds.contains(&"cdylib".into()))
    };
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(ours)
        .collect();
    let components: Vec<PathBuf> = messages
        .iter()
        .filter_map(|message| message["filenames"].as_array())
        .flatten()
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .filter(|file| file.extension().is_some_and(|extension| extension == "wasm"))
        .collect();
    // `path+file:///…/voucher#0.1.0`, or `…#voucher@0.1.0` when the directory's name differs.
    let version = messages
        .first()
        .and_then(|message| message["package_id"].as_str())
        .and_then(|id| id.rsplit(['#', '@']).next())
        .unwrap_or_default()
        .to_owned();
    match components.as_slice() {
        [component] => Ok((component.clone(), version)),
        [] => bail!("cargo built no component: the crate needs `crate-type = [\"cdylib\", ...]` under [lib]"),
        _ => bail!("cargo built {} components; a plugin crate builds one", components.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_the_name_in_upper_camel_case() {
        assert_eq!(type_name("card-plus"), "CardPlusPlugin");
        assert_eq!(type_name("payment"), "PaymentPlugin");
        assert_eq!(type_name("pay-2-go"), "Pay2GoPlugin");
    }

    #[test]
    fn new_refuses_bad_names_and_a_directory_with_files() {
        let directory = tempfile::tempdir().expect("temp dir");
        for bad in ["", "Card", "9lives", "under_score", "a/b", "type", &"x".repeat(33)] {
            let refused = new(bad, Some(directory.path().join("x")), None);
            assert!(refused.is_err(), "{bad:?} was accepted");
        }
        let odd = directory.path().join("sdk\nhere");
        std::fs::create_dir(&odd).expect("a directory");
        std::fs::write(odd.join("Cargo.toml"), "").expect("a manifest");
        let refused = new("voucher", Some(directory.path().join("y")), Some(odd)).expect_err("a newline");
        assert!(refused.to_string().contains("control characters"), "{refused}");
        std::fs::write(directory.path().join("file"), "").expect("a file");
        let refused = new("voucher", Some(directory.path().to_owned()), None).expect_err("not empty");
        assert!(refused.to_string().contains("not empty"), "{refused}");
    }
}
