//! A source's store file is read back before every sync and at start. Damaged bytes must be
//! refused, never panic; each input is tried raw and framed with a valid header, source name
//! and identity, so the state decoder is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mispd::sync::store_file::{decode, frame};

const IDENTITY: [u8; 32] = [0; 32];

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, "s", &IDENTITY);
    if let Ok(state) = decode(&frame("s", &IDENTITY, data), "s", &IDENTITY) {
        // What was accepted is a store the worker can use: its size is its attributes'.
        assert_eq!(state.store.iter().count(), state.store.len());
    }
});
