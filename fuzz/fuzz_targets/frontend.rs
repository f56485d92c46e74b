//! libFuzzer target: see `src/frontend.rs`.
#![no_main]

use resnetc_fuzz::{Outcome, MODEL_FILE};

#[path = "../src/frontend.rs"]
mod frontend;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = frontend::frontend(data);
});
