//! libFuzzer target: see `resnetc_fuzz::cifar`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = resnetc_fuzz::cifar(data);
});
