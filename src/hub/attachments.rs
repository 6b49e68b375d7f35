//! Attachments (issue 20): a post names a stored file by hash; the hub checks it is stored and
//! fills the attachment's `type` and `size` from the file itself (crate::files), the same way
//! `GET /api/files/{hash}` serves it, so a client's word about a file is never taken.

use tracing::warn;

use super::Hub;
use super::session::Session;
use crate::protocol::{Attachment, AttachmentRef, ErrorCode, Ref};

/// Why an attachment could not be made. Clients see `not_found` or `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No stored file has that hash (nothing is stored for the post).
    #[error("no such file")]
    Missing,
    /// The file could not be read.
    #[error("the file could not be read: {0}")]
    Unreadable(#[from] std::io::Error),
}

impl AttachError {
    /// The code a client is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::NotFound,
            Self::Unreadable(_) => ErrorCode::StoreUnavailable,
        }
    }

    /// The sentence a client is told (never a path or an OS error).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Missing => "no such file",
            Self::Unreadable(_) => "the file could not be read; try again shortly",
        }
    }
}

impl Hub {
    /// The attachment a post names: the stored file `wanted.hash`, with its served type and
    /// size; [`AttachError::Missing`] when no such file is stored (or the server keeps none).
    pub async fn attachment(&self, wanted: AttachmentRef) -> Result<Box<Attachment>, AttachError> {
        let Some(dir) = self.settings().files_dir.as_deref() else {
            return Err(AttachError::Missing);
        };
        let facts = crate::files::stored_file(dir, &wanted.hash)
            .await
            .inspect_err(
                |err| warn!(hash = %wanted.hash, error = %err, "attached file unreadable"),
            )?
            .ok_or(AttachError::Missing)?;
        Ok(Box::new(Attachment {
            hash: wanted.hash,
            name: wanted.name,
            mime: facts.mime.to_owned(),
            size: facts.size,
        }))
    }
}

impl Session {
    /// The attachment of a post, or `None` after answering the refusal (nothing is stored).
    pub(super) async fn attachment_or_reject(
        &self,
        wanted: AttachmentRef,
        reference: Option<Ref>,
    ) -> Option<Box<Attachment>> {
        match self.hub.attachment(wanted).await {
            Ok(attachment) => Some(attachment),
            Err(err) => {
                self.reject_with(err.code(), err.client_message(), reference);
                None
            }
        }
    }
}
