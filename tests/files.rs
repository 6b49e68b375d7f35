//! Files (issue 20, docs/protocol.md "Files", docs/security.md "Uploads"): `POST /api/files`
//! stores the raw body content-addressed under the files directory, refuses one over
//! `--max-upload-bytes` with 413 leaving nothing behind, and `GET /api/files/{hash}` serves it
//! with `nosniff` and a sandboxing CSP always, its image type only for a real PNG, JPEG, GIF or
//! WebP, and as an attachment otherwise. Uploads need CSRF with a session cookie and count
//! against the API rate limit. Real loopback sockets against an in-process server.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::accounts::sign_up;
use common::{TestServer, assert_api_error, http, start_server_with, start_server_with_flags};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A 1x1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

/// A server whose files directory is `files` (so the test can look into it).
async fn server_with_files(files: &Path, max_upload: u64) -> TestServer {
    let files = files.display().to_string();
    let max_upload = max_upload.to_string();
    start_server_with_flags(&["--files-dir", &files, "--max-upload-bytes", &max_upload]).await
}

async fn upload(server: &TestServer, body: Vec<u8>) -> reqwest::Response {
    http()
        .post(server.url("/api/files"))
        .header("content-type", "image/png")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The names in `dir` and in its `tmp` directory.
fn stored(dir: &Path) -> Vec<PathBuf> {
    let mut names = Vec::new();
    for dir in [dir.to_path_buf(), dir.join("tmp")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    names.push(path);
                }
            }
        }
    }
    names
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn an_upload_is_stored_under_its_sha256_and_served_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let bytes: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
    let response = upload(&server, bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let hash = sha256_hex(&bytes);
    assert_eq!(body["hash"], hash.as_str());
    assert_eq!(body["size"], 200_000);
    assert_eq!(body["type"], "application/octet-stream");
    assert_eq!(stored(dir.path()), [dir.path().join(&hash)]);
    let served = http()
        .get(server.url(&format!("/api/files/{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), bytes.as_slice());
    server.stop().await;
}

#[tokio::test]
async fn an_upload_of_several_mebibytes_under_the_default_limit_is_stored_whole() {
    // Over nginx's own 1 MiB default: through the cluster's nginx (deploy/nginx.conf) too.
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 10 << 20).await;
    let bytes: Vec<u8> = (0..(3u32 << 20)).map(|n| (n % 253) as u8).collect();
    let response = upload(&server, bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let hash = sha256_hex(&bytes);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["hash"], hash.as_str());
    let served = http()
        .get(server.url(&format!("/api/files/{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().len(), bytes.len());
    server.stop().await;
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1000).await;
    let response = upload(&server, vec![7u8; 1001]).await;
    assert_api_error(response, 413, "too_long").await;
    assert_eq!(stored(dir.path()), Vec::<PathBuf>::new());
    server.stop().await;
}

#[tokio::test]
async fn a_streamed_upload_without_length_over_the_limit_is_413_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 100_000).await;
    // Chunked, so the server learns the size only as the bytes arrive: 120 KB in 12 chunks
    // (small enough to sit in the socket buffers, so every write completes before the answer).
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut request = b"POST /api/files HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..12 {
        request.extend_from_slice(b"2710\r\n");
        request.extend_from_slice(&[1u8; 10_000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_long"), "{answer}");
    assert_eq!(stored(dir.path()), Vec::<PathBuf>::new());
    server.stop().await;
}

#[tokio::test]
async fn a_real_png_is_served_as_an_image_with_nosniff_and_a_sandbox_csp() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let body: Value = upload(&server, PNG.to_vec()).await.json().await.unwrap();
    assert_eq!(body["type"], "image/png");
    let served = http()
        .get(server.url(&format!("/api/files/{}", body["hash"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    let headers = served.headers();
    assert_eq!(headers["content-type"], "image/png");
    assert!(headers.get("content-disposition").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    server.stop().await;
}

#[tokio::test]
async fn html_sent_as_a_png_is_served_as_an_octet_stream_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let body: Value = upload(&server, html).await.json().await.unwrap();
    assert_eq!(body["type"], "application/octet-stream");
    let served = http()
        .get(server.url(&format!("/api/files/{}", body["hash"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    let headers = served.headers();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-disposition"], "attachment");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_name_that_is_not_a_hash_is_not_found_and_reaches_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    for name in [
        "..%2F..%2Fetc%2Fpasswd",
        "tmp",
        &"A".repeat(64),
        &"a".repeat(63),
    ] {
        let response = http()
            .get(server.url(&format!("/api/files/{name}")))
            .send()
            .await
            .unwrap();
        assert_api_error(response, 404, "not_found").await;
    }
    let missing = http()
        .get(server.url(&format!("/api/files/{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_api_error(missing, 404, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn the_same_bytes_uploaded_twice_are_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let first: Value = upload(&server, b"same".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let second: Value = upload(&server, b"same".to_vec())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["hash"], second["hash"]);
    assert_eq!(stored(dir.path()).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn an_empty_upload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let response = upload(&server, Vec::new()).await;
    assert_api_error(response, 400, "bad_json").await;
    assert_eq!(stored(dir.path()), Vec::<PathBuf>::new());
    server.stop().await;
}

#[tokio::test]
async fn a_cookie_upload_without_the_csrf_token_is_refused_and_with_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_files(dir.path(), 1 << 20).await;
    let alice = sign_up(server.addr, "alice").await;
    let refused = http()
        .post(server.url("/api/files"))
        .header("cookie", &alice.cookie)
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_api_error(refused, 403, "bad_csrf").await;
    assert_eq!(stored(dir.path()), Vec::<PathBuf>::new());
    let origin = format!("http://{}", server.addr);
    let passed = http()
        .post(server.url("/api/files"))
        .header("cookie", &alice.cookie)
        .header("x-csrf-token", &alice.csrf)
        .header("origin", origin)
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn uploads_count_against_the_api_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().to_path_buf();
    let server = start_server_with(move |c| {
        c.files_dir = Some(files);
        c.rate_limit = 1;
        c.rate_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..4u8 {
        statuses.push(upload(&server, vec![n + 1]).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(stored(dir.path()).len() < 4);
    server.stop().await;
}
