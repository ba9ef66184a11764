//! The repository's guest crates compiled to WebAssembly components by `build.rs`, and the
//! manifests beside them.
//!
//! `CARD`, `WALLET`, `MOBILE` and `XBORDER` are the built-in payment methods the host serves by
//! default, and `FX_TABLE` its FX plugin (which quotes nothing until an operator states rates). The rest
//! are test fixtures: `FAULTY` loops, grows memory or traps on demand, `STALLING` waits on
//! host calls, `CARD_V2` is another version of `card` with another fee rule,
//! `BAD_DESCRIBE` traps in `describe`, and `CONTRACT_0_1_0` was built against the frozen
//! `wasmpay:plugin@0.1.0` contract without the SDK; `SCREEN` (a validator) and `FLAT_FEE` (a fee
//! policy) are built with the SDK's single-role export macros.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// The manifest of [`CARD`] (without its `sha256`: the build makes the component).
pub const CARD_MANIFEST: &str = include_str!("../../card/wasmpay-plugin.toml");
/// The manifest of [`WALLET`].
pub const WALLET_MANIFEST: &str = include_str!("../../wallet/wasmpay-plugin.toml");
/// The manifest of [`MOBILE`].
pub const MOBILE_MANIFEST: &str = include_str!("../../mobile/wasmpay-plugin.toml");
/// The manifest of [`XBORDER`].
pub const XBORDER_MANIFEST: &str = include_str!("../../xborder/wasmpay-plugin.toml");
/// The manifest of [`FX_TABLE`].
pub const FX_TABLE_MANIFEST: &str = include_str!("../../fx-table/wasmpay-plugin.toml");
/// The manifest of [`CARD_V2`].
pub const CARD_V2_MANIFEST: &str = include_str!("../../../tests/fixtures/card_v2/wasmpay-plugin.toml");
