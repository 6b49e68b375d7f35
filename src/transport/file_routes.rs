//! Uploaded files (issue 20): `POST /api/files` and `GET /api/files/{hash}`.
//!
//! An upload is the raw request body (any `Content-Type`; the server never trusts it). It is
//! streamed to a temporary file under `<files>/tmp` while its SHA-256 is computed, never held
//! whole in memory, and counted against `--max-upload-bytes` as it arrives (413 at once when
//! `Content-Length` says it is too large, else as soon as it is): a refused or broken upload
//! leaves no file behind (the temporary file is removed when the handler ends, also when the
//! client goes away mid-body). A complete one is synced and renamed to `<files>/<sha256 hex>`, so
//! a file is either there whole or not at all, and the same bytes are kept once.
//!
//! A download is served with the type read from its first bytes, and only for PNG, JPEG, GIF
//! and WebP; anything else is `application/octet-stream` with `Content-Disposition: attachment`.
//! Every file response carries `X-Content-Type-Options: nosniff` and
//! `Content-Security-Policy: default-src 'none'; sandbox`, so an uploaded file never runs script
//! in the server's origin (docs/security.md "Uploads"). The name in the path must be 64
//! lower-case hex digits: nothing else reaches the file system.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::admission::{Door, Entry};
use super::{ApiError, AppState};
use crate::config::UploadTypes;
use crate::files::{OPAQUE_TYPE, SNIFF_BYTES, read_head, sniff_image};
use crate::protocol::ErrorCode;
use crate::protocol::attachment::is_file_hash;

/// The security headers of every file response.
const FILE_CSP: &str = "default-src 'none'; sandbox";

/// A temporary upload file, removed when dropped unless it was renamed into place.
struct TempUpload {
    path: Option<PathBuf>,
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(err) = std::fs::remove_file(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %err, "could not remove a temporary upload");
        }
    }
}

/// Distinguishes this process's temporary uploads from each other.
static UPLOAD_COUNTER: AtomicU64 = AtomicU64::new(0);

fn internal(err: std::io::Error) -> ApiError {
    warn!(error = %err, "file storage failed");
    ApiError::new(
        ErrorCode::StoreUnavailable,
        "the file could not be stored; try again shortly",
    )
}

fn too_large(limit: u64) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: ErrorCode::TooLong,
        message: format!("the file is larger than the limit of {limit} bytes"),
    }
}

/// `POST /api/files`: stores the body, answers `201 {"hash", "size", "type"}`.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    door: Door,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    door.admit(&state, Entry::Api { room: None }).await?;
    let limit = state.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let dir = state.config.files_path();
    let tmp_dir = dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(internal)?;
    let tmp_path = tmp_dir.join(format!(
        "upload-{}-{}",
        std::process::id(),
        UPLOAD_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut temp = TempUpload {
        path: Some(tmp_path.clone()),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .await
        .map_err(internal)?;
    let (hash, size, head) = stream_into(&mut file, body, limit).await?;
    file.sync_all().await.map_err(internal)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::new(ErrorCode::BadJson, "the file is empty"));
    }
    let image = sniff_image(&head);
    if state.config.upload_types == UploadTypes::Images && image.is_none() {
        // The temporary file goes when `temp` drops: nothing is kept.
        return Err(ApiError::new(
            ErrorCode::BadType,
            "this server keeps only PNG, JPEG, GIF and WebP images",
        ));
    }
    let final_path = dir.join(&hash);
    tokio::fs::rename(&tmp_path, &final_path)
        .await
        .map_err(internal)?;
    temp.path = None;
    let kind = image.unwrap_or(OPAQUE_TYPE);
    info!(hash = %hash, size, kind, "file stored");
    Ok((
        StatusCode::CREATED,
        Json(json!({"hash": hash, "size": size, "type": kind})),
    )
        .into_response())
}

/// Writes the body into `file`, hashing and counting it: (hex SHA-256, size, first 16 bytes).
async fn stream_into(
    file: &mut tokio::fs::File,
    body: Body,
    limit: u64,
) -> Result<(String, u64, Vec<u8>), ApiError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::new(ErrorCode::BadJson, format!("the upload broke off: {err}"))
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    Ok((hex(&hasher.finalize()), size, head))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /api/files/{hash}`: the file, with the headers of the module doc.
pub async fn download(
    State(state): State<Arc<AppState>>,
    door: Door,
    UrlPath(hash): UrlPath<String>,
) -> Result<Response, ApiError> {
    door.admit(&state, Entry::Api { room: None }).await?;
    if !is_file_hash(&hash) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such file"));
    }
    let path = state.config.files_path().join(&hash);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(ErrorCode::NotFound, "no such file"));
        }
        Err(err) => return Err(internal(err)),
    };
    let size = file.metadata().await.map_err(internal)?.len();
    let head = read_head(&mut file).await.map_err(internal)?;
    let kind = sniff_image(&head);
    let rest = tokio_util::io::ReaderStream::new(file);
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(axum::body::Bytes::from(head))
    })
    .chain(rest);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.unwrap_or(OPAQUE_TYPE)),
    );
    if kind.is_none() {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FILE_CSP),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_64_lower_case_hex_digits_and_nothing_else() {
        assert!(is_file_hash(&"ab".repeat(32)));
        assert!(!is_file_hash(&"AB".repeat(32)));
        assert!(!is_file_hash("../../etc/passwd"));
        assert!(!is_file_hash(&format!("{}/x", "a".repeat(62))));
    }
}
