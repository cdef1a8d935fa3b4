//! The client side of the codec on any answer to any route: `decode_response` (and the error
//! decoding it falls back to) never panics, whatever the status and body.

#![no_main]

use std::sync::OnceLock;

use fleetsim_core::api::ApiRequest;
use fleetsim_core::codec;
use libfuzzer_sys::fuzz_target;

fn calls() -> &'static [ApiRequest] {
    static CALLS: OnceLock<Vec<ApiRequest>> = OnceLock::new();
    CALLS.get_or_init(fleetsim_fuzz::every_call)
}

fuzz_target!(|data: &[u8]| {
    let calls = calls();
    if let Some((route, resp)) = fleetsim_fuzz::call_and_response(data, calls) {
        let _ = codec::decode_response(&calls[route], &resp);
    }
});
