//! The one place the host reads the skill contract (`sdk/wit/skill.wit`).
//!
//! Invariant: every other module uses these generated types; nothing else names WIT items
//! by string. The `wasi:*` interfaces the contract imports are mapped onto wasmtime-wasi's
//! and wasmtime-wasi-http's own bindings so their host implementations apply unchanged.

#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "warden:skill/skill",
    imports: { default: trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});
