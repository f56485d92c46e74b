//! Helpers shared by the runtime's file-format tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared/data` next to the repository, or `None` (with a notice) where it is absent.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "notice: {} not found, skipping the real-data part of this test",
            p.display()
        );
        None
    }
}

/// A fresh, unique temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "resnetc-io-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
