//! Host bindings of the `payment-method` world. Private to [`crate::plugins`]: the rest of the
//! host sees only the plugin module's own types.
#![allow(unused_qualifications, missing_debug_implementations)]

wasmtime::component::bindgen!({
    world: "payment-method",
    path: "../wit",
});

pub use exports::wasmpay::plugin::{fee_policy, plugin, validator};
pub use wasmpay::plugin::types;
