//! `resnetc data cifar10` against a small archive served by an HTTP server on 127.0.0.1
//! inside the test (CI has no internet): download, MD5 check, extraction where `run` looks,
//! and the failures (wrong checksum, 404, a download cut short, an archive without the data)
//! that must leave nothing behind.

use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RECORD: usize = 3073;

/// A CIFAR-10-format record: label, then 3072 pixel bytes.
fn records(n: usize, seed: u8) -> Vec<u8> {
    (0..n * RECORD)
        .map(|i| {
            if i % RECORD == 0 {
                ((i / RECORD) % 10) as u8
            } else {
                (i as u8).wrapping_mul(31).wrapping_add(seed)
            }
        })
        .collect()
}

/// A `.tar.gz` with the given files under `cifar-10-batches-bin/`.
fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(
            &mut h,
            format!("cifar-10-batches-bin/{name}"),
            bytes.as_slice(),
        )
        .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn full_archive() -> Vec<u8> {
    let mut files: Vec<(&str, Vec<u8>)> = (1..=5)
        .map(|i| {
            (
                [
                    "",
                    "data_batch_1.bin",
                    "data_batch_2.bin",
                    "data_batch_3.bin",
                    "data_batch_4.bin",
                    "data_batch_5.bin",
                ][i],
                records(8, i as u8),
            )
        })
        .collect();
    files.push(("test_batch.bin", records(8, 9)));
    files.push((
        "batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n".to_vec(),
    ));
    archive(&files)
}

fn md5_hex(b: &[u8]) -> String {
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Serves `routes` (path -> (status line, body, declared length)) until the test ends.
fn serve(routes: Vec<(&'static str, &'static str, Vec<u8>, usize)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = vec![];
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                req.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&req).to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body, declared) = routes
                .iter()
                .find(|r| r.0 == path)
                .map(|r| (r.1, r.2.clone(), r.3))
                .unwrap_or(("404 Not Found", b"no such file".to_vec(), 12));
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            let _ = s.flush();
        }
    });
    format!("http://{addr}")
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(format!("data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn resnetc(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RESNETC_DATA")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Only what `data` leaves on success: the data directory, no temporary files.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn downloads_checks_and_extracts_where_run_looks() {
    let body = full_archive();
    let md5 = md5_hex(&body);
    let n = body.len();
    let base = serve(vec![("/cifar.tar.gz", "200 OK", body, n)]);
    let work = scratch("ok");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet20.resnet");
    let model = model.to_str().unwrap();

    // Before: `run --train` finds nothing and names the command that gets the data.
    let o = resnetc(
        &work,
        &[
            "run",
            model,
            "--train",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--engine",
            "reference",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("resnetc data cifar10"), "{}", text(&o));

    let url = format!("{base}/cifar.tar.gz");
    let o = resnetc(&work, &["data", "cifar10", "--url", &url, "--md5", &md5]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("downloaded {n} bytes")),
        "{}",
        text(&o)
    );
    assert_eq!(entries(&work.join("data")), ["cifar-10-batches-bin"]);
    let got = std::fs::read(work.join("data/cifar-10-batches-bin/data_batch_3.bin")).unwrap();
    assert_eq!(got, records(8, 3));

    // A second call sees a complete copy and downloads nothing.
    let o = resnetc(
        &work,
        &[
            "data",
            "cifar10",
            "--url",
            "http://127.0.0.1:9/none",
            "--md5",
            &md5,
        ],
    );
    assert!(
        o.status.success() && text(&o).contains("already holds CIFAR-10"),
        "{}",
        text(&o)
    );

    // `run` now trains on it without --data.
    let o = resnetc(
        &work,
        &[
            "run",
            model,
            "--train",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--engine",
            "reference",
            "--log",
            "run.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("on 40 images from data/cifar-10-batches-bin, testing on 8"),
        "{}",
        text(&o)
    );
}

#[test]
fn failed_downloads_leave_nothing_behind() {
    let body = full_archive();
    let md5 = md5_hex(&body);
    let n = body.len();
    let half = body[..n / 2].to_vec();
    let no_data = archive(&[("readme.html", b"<html></html>".to_vec())]);
    let no_data_md5 = md5_hex(&no_data);
    let nd = no_data.len();
    let base = serve(vec![
        ("/cifar.tar.gz", "200 OK", body, n),
        ("/short.tar.gz", "200 OK", half, n),
        ("/empty.tar.gz", "200 OK", no_data, nd),
    ]);
    let cases = [
        (
            "/cifar.tar.gz",
            "0123456789abcdef0123456789abcdef".to_string(),
            "checksum mismatch".to_string(),
        ),
        (
            "/nowhere.tar.gz",
            md5.clone(),
            "download failed".to_string(),
        ),
        ("/short.tar.gz", md5.clone(), format!(" of {n}")),
        (
            "/empty.tar.gz",
            no_data_md5,
            "no complete `cifar-10-batches-bin/`".to_string(),
        ),
    ];
    for (i, (path, sum, message)) in cases.iter().enumerate() {
        let work = scratch(&format!("fail{i}"));
        let url = format!("{base}{path}");
        let o = resnetc(&work, &["data", "cifar10", "--url", &url, "--md5", sum]);
        assert!(!o.status.success(), "{path}: {}", text(&o));
        assert!(
            text(&o).contains(message.as_str()) && text(&o).contains(&url),
            "{path}: {}",
            text(&o)
        );
        assert_eq!(entries(&work.join("data")), Vec::<String>::new(), "{path}");
    }
}
