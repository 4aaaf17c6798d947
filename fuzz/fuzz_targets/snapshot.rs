//! The snapshot file is read back at every start. Damaged bytes must be refused, never panic;
//! each input is tried raw and framed with a valid header, so the JSON body decoder is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mispd::snapshot::{decode_bytes, frame};

fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes(data);
    let _ = decode_bytes(&frame(data));
});
