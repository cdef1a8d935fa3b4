//! Scenario loading on any text: `load_str` gives a scenario or diagnostics, never a panic,
//! and every diagnostic renders.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diagnostics) = fleetsim_scenario::load_str("fuzz.toml", text, &[]) {
        let _ = diagnostics.lines();
    }
});
