//! Host bindings of the `host-view` world of `wasmpay:plugin@0.1.2`: every export a plugin
//! may have. Which ones a component has is found
//! per interface when it loads (`version`). Wasmtime matches `0.1.x` names semver-compatibly,
//! so a component built against 0.1.0 links and runs on these bindings too. Private: the rest
//! of the crate, and every crate above it, sees only this crate's own types.
#![allow(unused_qualifications, missing_debug_implementations)]

wasmtime::component::bindgen!({
    world: "host-view",
    path: "../../wit",
});

pub use exports::wasmpay::plugin::{fee_policy, fx, plugin, refund_fee, validator};
pub use wasmpay::plugin::types;
