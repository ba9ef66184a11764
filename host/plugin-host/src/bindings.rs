//! Host bindings of the `payment-method` world. Private: the rest of the crate, and every
//! crate above it, sees only this crate's own types.
#![allow(unused_qualifications, missing_debug_implementations)]

wasmtime::component::bindgen!({
    world: "payment-method",
    path: "../../wit",
});

pub use exports::wasmpay::plugin::{fee_policy, plugin, validator};
pub use wasmpay::plugin::types;
