//! Writes `__generate_world!`, the macro the SDK's export macros expand in the plugin's own
//! crate to generate the bindings of the world the plugin is built against.
//!
//! Why in the plugin's crate: every `wit_bindgen::generate!` leaves a description of its world
//! in the compiled code, and the component linker builds the component from the union of the
//! descriptions it finds. Were the SDK to generate one world per role, a validator-only plugin
//! would carry every world's exports and fail to link (a fee policy it never exported). So the
//! SDK generates only what every world imports (`plugin-imports`), and each export macro
//! generates its world where it is invoked, reusing the SDK's types through `with`.
//!
//! The macro needs the contract's path as a literal, and a plugin crate may live anywhere (its
//! own repository, with the SDK as a path or git dependency): the absolute path of the SDK's
//! copy of `wit/` is written into the macro here.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit = manifest_dir.join("../wit").canonicalize().expect("the SDK sits beside the repository's wit/");
    println!("cargo:rerun-if-changed={}", wit.display());
    let version = contract_version(&wit);
    let interface = |name: &str| {
        format!(
            "\"wasmpay:plugin/{name}@{version}\": wasmpay_sdk::__private::bindings::wasmpay::plugin::{}",
            name.replace('-', "_")
        )
    };
    let source = format!(
        r#"/// Generates, in the calling crate, the bindings of one `wasmpay:plugin` world, with the
/// SDK's own types, log and config bindings. Used by the export macros only.
#[doc(hidden)]
#[macro_export]
macro_rules! __generate_world {{
    ($world:tt) => {{
        $crate::__private::wit_bindgen::generate!({{
            path: {wit:?},
            world: $world,
            with: {{
                {types},
                {log},
                {config},
            }},
            runtime_path: "wasmpay_sdk::__private::wit_bindgen::rt",
        }});
    }};
}}
"#,
        wit = wit.display().to_string(),
        types = interface("types"),
        log = interface("log"),
        config = interface("config"),
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("generate_world.rs");
    std::fs::write(out, source).expect("write generate_world.rs");
}

/// The `X.Y.Z` of `package wasmpay:plugin@X.Y.Z;` in `wit/worlds.wit`.
fn contract_version(wit: &std::path::Path) -> String {
    let worlds = std::fs::read_to_string(wit.join("worlds.wit")).expect("read wit/worlds.wit");
    worlds
        .lines()
        .find_map(|line| line.trim().strip_prefix("package wasmpay:plugin@")?.strip_suffix(';').map(str::to_owned))
        .expect("wit/worlds.wit declares package wasmpay:plugin@X.Y.Z")
}
