//! Fuzzes the peer scheduler (`PeerSched`) with arbitrary message sequences from arbitrary peers: the input decodes
//! into (sender, message, time step) steps, and the machine's invariants are checked after each
//! (see `shoal_core::fuzzing::peer_sched`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shoal_core::fuzzing::peer_sched(data);
});
