//! wasm bindings.
