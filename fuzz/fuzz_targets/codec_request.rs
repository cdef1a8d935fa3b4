//! The server side of the codec on any request: `decode_request` never panics, and what it
//! accepts survives encode → decode unchanged (the round trip the codec tests prove for the
//! calls they build, here for whatever the fuzzer finds that decodes).

#![no_main]

use fleetsim_core::api::Request;
use fleetsim_core::codec;
use libfuzzer_sys::fuzz_target;

/// The emulator's default body bound, so bodies are parsed, not refused for size.
const MAX_BODY_BYTES: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let wire = fleetsim_fuzz::wire_request(data);
    let Ok(request) = codec::decode_request(&wire, MAX_BODY_BYTES) else {
        return;
    };
    let again = codec::encode_request(&request, "");
    let decoded: Request = codec::decode_request(&again, usize::MAX)
        .unwrap_or_else(|e| panic!("{request:?} encoded to {again:?}, which fails: {e:?}"));
    assert_eq!(decoded, request, "re-encoded as {again:?}");
});
