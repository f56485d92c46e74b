//! libFuzzer target: see `resnetc_fuzz::safetensors`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = resnetc_fuzz::safetensors(data);
});
