//! IndexedDB backend (wasm32): being written.
