//! Facts about uploaded files (issue 20) shared by the file routes (transport) and the hub,
//! which fills a message's attachment `type` and `size` from the stored file: the type a file
//! is served with is read from its first bytes, the same way on both paths, so an attachment
//! says exactly what `GET /api/files/{hash}` will answer.

use std::path::Path;

use tokio::io::AsyncReadExt;

use crate::protocol::attachment::is_file_hash;

/// Bytes of a file's start that [`sniff_image`] looks at.
pub(crate) const SNIFF_BYTES: usize = 16;

/// The type every file that is not one of the four images is served with.
pub(crate) const OPAQUE_TYPE: &str = "application/octet-stream";

/// Image types served as themselves: each with the magic bytes that identify it.
pub(crate) fn sniff_image(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// What the server tells about a stored file: the type it is served with and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileFacts {
    /// One of the four image types, else [`OPAQUE_TYPE`].
    pub(crate) mime: &'static str,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// Reads up to [`SNIFF_BYTES`] from the start of `file`.
pub(crate) async fn read_head(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; SNIFF_BYTES];
    let mut read = 0;
    while read < head.len() {
        let n = file.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    head.truncate(read);
    Ok(head)
}

/// The facts of the file named `hash` in `dir`; `None` when no such file is stored (or the
/// hash cannot name one, so nothing but a stored file's name reaches the file system).
pub(crate) async fn stored_file(dir: &Path, hash: &str) -> std::io::Result<Option<FileFacts>> {
    if !is_file_hash(hash) {
        return Ok(None);
    }
    let mut file = match tokio::fs::File::open(dir.join(hash)).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let size = file.metadata().await?.len();
    let head = read_head(&mut file).await?;
    Ok(Some(FileFacts {
        mime: sniff_image(&head).unwrap_or(OPAQUE_TYPE),
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_image_signatures_are_images() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"<html><script>"), None);
        assert_eq!(sniff_image(b"<svg xmlns="), None);
    }

    #[tokio::test]
    async fn a_stored_file_is_described_by_its_bytes_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let png = "ab".repeat(32);
        std::fs::write(dir.path().join(&png), b"\x89PNG\r\n\x1a\n1234").unwrap();
        let facts = stored_file(dir.path(), &png).await.unwrap();
        assert_eq!(
            facts,
            Some(FileFacts {
                mime: "image/png",
                size: 12
            })
        );
        assert_eq!(
            stored_file(dir.path(), &"cd".repeat(32)).await.unwrap(),
            None
        );
        assert_eq!(stored_file(dir.path(), "../x").await.unwrap(), None);
    }
}
