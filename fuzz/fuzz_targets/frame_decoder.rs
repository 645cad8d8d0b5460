//! Fuzzes the wire frame decoder: any bytes must decode to a message or a typed error, never
//! panic, and whatever decodes must re-encode to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::wire::{DEFAULT_MAX_FRAME, decode_frame, decode_payload, encode_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok((msg, used)) = decode_frame(data, DEFAULT_MAX_FRAME) {
        assert!(used <= data.len());
        let again = encode_frame(&msg, DEFAULT_MAX_FRAME).expect("a decoded message re-encodes");
        let (back, _) = decode_frame(&again, DEFAULT_MAX_FRAME).expect("a re-encoded frame decodes");
        assert_eq!(back, msg);
    }
    let _ = decode_payload(data);
});
