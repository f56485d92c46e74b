//! `resnetc data cifar10`: download the official CIFAR-10 binary archive, check its published
//! MD5, and extract it where `run` looks for data.
//!
//! Nothing is left half-done: the archive is streamed to a temporary file next to the target
//! while its checksum is computed, extracted into a temporary directory, checked, and only
//! then renamed into place. A failed or corrupt download removes its temporary files.

use crate::driver::CliError;
use md5::{Digest, Md5};
use resnetc_runtime::error::RuntimeError;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The official archive (https://www.cs.toronto.edu/~kriz/cifar.html).
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its MD5, as published on that page.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The directory the archive holds, and where `run` looks: `data/cifar-10-batches-bin`.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
/// The files `run` needs from it.
pub const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];
const RECORD: u64 = 3073;

/// Where to get the archive and where to put it.
pub struct Download {
    /// Parent directory of `cifar-10-batches-bin` (default `data`).
    pub dir: PathBuf,
    pub url: String,
    pub md5: String,
    /// Replace an existing copy.
    pub force: bool,
}

impl Default for Download {
    fn default() -> Self {
        Download {
            dir: PathBuf::from("data"),
            url: CIFAR10_URL.into(),
            md5: CIFAR10_MD5.into(),
            force: false,
        }
    }
}

/// What happened.
pub enum Outcome {
    /// Downloaded, checked and extracted: the data directory and the bytes downloaded.
    Fetched { dir: PathBuf, bytes: u64 },
    /// A complete copy was already there.
    Present(PathBuf),
}

fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::Runtime(RuntimeError::io(path, e))
}

/// Whether `dir` holds every file `run` reads, each a whole number of records.
pub fn is_complete(dir: &Path) -> bool {
    CIFAR10_FILES
        .iter()
        .all(|f| std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0 && m.len() % RECORD == 0))
}

/// Removes a path on drop unless disarmed: temporary files never outlive a failure.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Downloads, checks and extracts CIFAR-10. `progress(done, total)` is called as bytes arrive.
pub fn fetch_cifar10(
    d: &Download,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Outcome, CliError> {
    let target = d.dir.join(CIFAR10_DIR);
    if !d.force && is_complete(&target) {
        return Ok(Outcome::Present(target));
    }
    std::fs::create_dir_all(&d.dir).map_err(|e| io(&d.dir, e))?;
    let pid = std::process::id();
    let archive = d.dir.join(format!(".cifar-10-binary.{pid}.tar.gz.part"));
    let _archive_guard = Cleanup(Some(archive.clone()));
    let bytes = download(&d.url, &archive, &d.md5, progress)?;

    let staging = d.dir.join(format!(".cifar-10-extract.{pid}"));
    let _staging_guard = Cleanup(Some(staging.clone()));
    extract(&archive, &staging)?;
    let extracted = staging.join(CIFAR10_DIR);
    if !is_complete(&extracted) {
        let missing: Vec<&str> = CIFAR10_FILES
            .iter()
            .copied()
            .filter(|f| !extracted.join(f).is_file())
            .collect();
        return Err(CliError::Runtime(RuntimeError::format(
            Path::new(&d.url),
            format!(
                "the archive has no complete `{CIFAR10_DIR}/` directory (missing or truncated: {}); \
                 it is not the CIFAR-10 binary version",
                if missing.is_empty() {
                    "a file with a partial record".to_string()
                } else {
                    missing.join(", ")
                }
            ),
        )));
    }
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
    }
    std::fs::rename(&extracted, &target).map_err(|e| io(&target, e))?;
    Ok(Outcome::Fetched { dir: target, bytes })
}

/// Streams `url` into `to`, checking the length the server announced and the MD5.
fn download(
    url: &str,
    to: &Path,
    md5_hex: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<u64, CliError> {
    let failed = |what: String| {
        CliError::Runtime(RuntimeError::format(
            Path::new(url),
            format!("{what}; check the network and the URL, and run `resnetc data cifar10` again"),
        ))
    };
    let response = ureq::get(url)
        .call()
        .map_err(|e| failed(format!("download failed: {e}")))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();
    let mut reader = body.with_config().limit(u64::MAX).reader();
    let mut file = std::fs::File::create(to).map_err(|e| io(to, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(failed(format!(
                    "the download broke off after {done} bytes{}: {e}",
                    total.map_or(String::new(), |t| format!(" of {t}"))
                )))
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| io(to, e))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(|e| io(to, e))?;
    if let Some(t) = total.filter(|&t| t != done) {
        return Err(failed(format!(
            "the download ended after {done} of {t} bytes"
        )));
    }
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !got.eq_ignore_ascii_case(md5_hex) {
        return Err(CliError::Runtime(RuntimeError::format(
            Path::new(url),
            format!(
                "checksum mismatch: MD5 {got}, expected {md5_hex}; the download is corrupt or \
                 not the official archive, so nothing was extracted; run `resnetc data cifar10` \
                 again"
            ),
        )));
    }
    Ok(done)
}

/// Extracts a `.tar.gz` into `into`. Entries that would land outside it are refused by `tar`.
fn extract(archive: &Path, into: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(into).map_err(|e| io(into, e))?;
    let f = std::fs::File::open(archive).map_err(|e| io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let bad = |e: std::io::Error| {
        CliError::Runtime(RuntimeError::format(
            archive,
            format!("cannot extract the archive: {e}; it is not a valid .tar.gz"),
        ))
    };
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entry.unpack_in(into).map_err(bad)?;
    }
    Ok(())
}
