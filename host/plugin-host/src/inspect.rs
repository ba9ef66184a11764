//! What a component is, as `wasmpay plugin inspect` shows an integrator: what it imports and
//! which of those imports the sandbox offers, traps or refuses; what it exports and so which
//! world of `wasmpay:plugin` it fits; and what `describe` answers. Read-only: nothing it finds
//! is kept.

use std::sync::Arc;

use wasmtime::component::{Component, types::ComponentItem};

use crate::contract::PluginInfo;
use crate::runtime::{PluginRuntime, RuntimeError};
use crate::sandbox::describe_error;
use crate::settings::SandboxSettings;
use crate::version::LoadedPlugin;

/// How the sandbox meets one import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Import {
    /// One of the contract's (`wasmpay:plugin/log`, `config`, `types`, any `0.1.x`).
    Offered,
    /// A WASI interface: linked, but every call traps and fails the payment (a clock, a file,
    /// randomness: a plugin's decision must be a pure function of its input). A toolchain's
    /// runtime may import these without calling them.
    Trapped,
    /// Anything else: the component cannot be linked and is refused at load.
    Refused,
}

/// What a component is.
#[derive(Debug)]
pub struct Inspection {
    /// Its imports, by name, and how the sandbox meets each.
    pub imports: Vec<(String, Import)>,
    /// Its exports, by name.
    pub exports: Vec<String>,
    /// The largest `wasmpay:plugin` world its exports fit, if any.
    pub world: Option<&'static str>,
    /// What `describe` answered, or why the host would refuse to load it.
    pub described: Result<PluginInfo, String>,
}

/// Inspects `bytes` with `settings`' sandbox.
pub fn inspect(settings: &SandboxSettings, source_name: &str, bytes: &[u8]) -> Result<Inspection, RuntimeError> {
    let runtime: Arc<PluginRuntime> = PluginRuntime::new(settings)?;
    let component = match Component::new(&runtime.engine, bytes) {
        Ok(component) => component,
        Err(error) => {
            let described = Err(format!("not a valid component: {}", describe_error(&error)));
            return Ok(Inspection { imports: Vec::new(), exports: Vec::new(), world: None, described });
        }
    };
    let component_type = component.component_type();
    let imports = component_type
        .imports(&runtime.engine)
        .map(|(name, item)| {
            let how = match item.ty {
                _ if contract_interface(name) => Import::Offered,
                ComponentItem::ComponentInstance(_) if name.starts_with("wasi:") => Import::Trapped,
                _ => Import::Refused,
            };
            (name.to_owned(), how)
        })
        .collect();
    let exports: Vec<String> = component_type.exports(&runtime.engine).map(|(name, _)| name.to_owned()).collect();
    let exported = |interface: &str| exports.iter().any(|name| is_interface(name, interface));
    let roles = (exported("validator"), exported("fee-policy"), exported("refund-fee"), exported("fx"));
    let world = match (exported("plugin"), roles) {
        (true, (true, true, true, false)) => Some("payment-method-with-refunds"),
        (true, (true, true, false, false)) => Some("payment-method"),
        (true, (false, true, true, false)) => Some("fee-policy-with-refunds"),
        (true, (false, true, false, false)) => Some("fee-policy-plugin"),
        (true, (true, false, _, false)) => Some("validator-plugin"),
        (true, (false, false, false, true)) => Some("fx-plugin"),
        (true, (_, _, _, true)) => Some("host-view"),
        _ => None,
    };
    let described = LoadedPlugin::load(&runtime, source_name, bytes, &|_| Default::default())
        .map(|plugin| plugin.info().clone())
        .map_err(|error| error.to_string());
    Ok(Inspection { imports, exports, world, described })
}

/// `wasmpay:plugin/<interface>@0.1.x`.
fn is_interface(name: &str, interface: &str) -> bool {
    name.strip_prefix("wasmpay:plugin/")
        .and_then(|rest| rest.strip_prefix(interface))
        .and_then(|rest| rest.strip_prefix("@0.1."))
        .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the contract's host side offers `name`.
fn contract_interface(name: &str) -> bool {
    ["log", "config", "types"].into_iter().any(|interface| is_interface(name, interface))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_interfaces_match_any_0_1_patch() {
        assert!(is_interface("wasmpay:plugin/log@0.1.0", "log"));
        assert!(is_interface("wasmpay:plugin/refund-fee@0.1.1", "refund-fee"));
        assert!(!is_interface("wasmpay:plugin/log@0.2.0", "log"));
        assert!(!is_interface("wasmpay:plugin/logger@0.1.0", "log"));
        assert!(!is_interface("wasmpay:plugin/log@0.1.", "log"));
        assert!(contract_interface("wasmpay:plugin/config@0.1.1"));
        assert!(!contract_interface("wasi:clocks/wall-clock@0.2.0"));
    }
}
