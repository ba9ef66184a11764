//! The repository's guest crates compiled to WebAssembly components by `build.rs`.
//!
//! `CARD` and `WALLET` are the built-in payment methods the host serves by default;
//! `FAULTY` is a test fixture that loops, grows memory or traps on demand.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
