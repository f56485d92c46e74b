//! libFuzzer target: see `resnetc_fuzz::npy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = resnetc_fuzz::npy(data);
});
