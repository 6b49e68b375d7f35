//! A file attached to a message (issue 20): what a client names when it posts (`hash` and
//! `name`), and what every `msg` then carries (`hash`, `name`, `type`, `size`). The server
//! fills `type` and `size` from the stored file itself, never from the client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ErrorCode, Rejection};

/// Longest attachment name in bytes, after trimming: a file name, not a document.
pub const MAX_ATTACHMENT_NAME_BYTES: usize = 255;

/// A file attached to a stored message, as every `msg` carries it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's SHA-256 in lower-case hex: `GET /api/files/{hash}` serves it.
    pub hash: String,
    /// The name the poster gave it (checked by [`attachment_name`]).
    pub name: String,
    /// The type `GET /api/files/{hash}` serves it with (one of the four image types, else
    /// `application/octet-stream`), read from the file when the message was posted.
    #[serde(rename = "type")]
    pub mime: String,
    /// The file's size in bytes.
    pub size: u64,
}

/// What a client names in a post: a stored file and the name to show. Both are checked (the
/// hash's form here, its existence by the hub); the type and size come from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    /// 64 lower-case hex digits.
    pub hash: String,
    /// Trimmed, 1..=255 bytes, no control characters, no `/` or `\`.
    pub name: String,
}

/// Whether `hash` has the form of a stored file's name: 64 lower-case hex digits.
pub fn is_file_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks an attachment's name: trimmed, 1..=255 bytes, no control characters and no path
/// separators (a name is shown and offered as a download name, never used as a path).
pub fn attachment_name(raw: &str) -> Result<String, Rejection> {
    let name = raw.trim();
    if name.is_empty() || name.len() > MAX_ATTACHMENT_NAME_BYTES {
        return Err(bad_json(format!(
            "\"attachment.name\" must be 1 to {MAX_ATTACHMENT_NAME_BYTES} bytes"
        )));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(bad_json(
            "\"attachment.name\" may not hold control characters, '/' or '\\'",
        ));
    }
    Ok(name.to_owned())
}

/// A post's `attachment`: absent, null, or `{"hash", "name"}`; shared with the HTTP API. A hash
/// that cannot name a stored file is `not_found` (as `GET /api/files/{hash}` answers it).
pub fn attachment_ref(value: Option<&Value>) -> Result<Option<AttachmentRef>, Rejection> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(bad_json("\"attachment\" must be an object")),
    };
    let hash = match object.get("hash") {
        Some(Value::String(hash)) => hash,
        _ => return Err(bad_json("\"attachment.hash\" must be a string")),
    };
    let name = match object.get("name") {
        Some(Value::String(name)) => attachment_name(name)?,
        _ => return Err(bad_json("\"attachment.name\" must be a string")),
    };
    if !is_file_hash(hash) {
        return Err(Rejection::new(ErrorCode::NotFound, "no such file"));
    }
    Ok(Some(AttachmentRef {
        hash: hash.clone(),
        name,
    }))
}

fn bad_json(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadJson, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Option<AttachmentRef>, Rejection> {
        let value: Value = serde_json::from_str(json).unwrap();
        attachment_ref(Some(&value))
    }

    #[test]
    fn an_attachment_names_a_hash_and_a_trimmed_name() {
        let hash = "ab".repeat(32);
        let parsed = parse(&format!(r#"{{"hash":"{hash}","name":"  photo.png "}}"#)).unwrap();
        assert_eq!(
            parsed,
            Some(AttachmentRef {
                hash,
                name: "photo.png".into()
            })
        );
    }

    #[test]
    fn names_with_separators_controls_or_bad_lengths_are_bad_json() {
        let hash = "ab".repeat(32);
        let long = "x".repeat(256);
        for name in [
            "",
            "   ",
            "a/b",
            "a\\\\b",
            "a\\u0000b",
            "a\\nb",
            long.as_str(),
        ] {
            let json = format!(r#"{{"hash":"{hash}","name":"{name}"}}"#);
            assert_eq!(parse(&json).unwrap_err().code, ErrorCode::BadJson, "{name}");
        }
        let longest = "é".repeat(127);
        assert!(parse(&format!(r#"{{"hash":"{hash}","name":"{longest}x"}}"#)).is_ok());
    }

    #[test]
    fn a_hash_that_cannot_name_a_file_is_not_found() {
        for hash in ["AB".repeat(32), "../etc/passwd".into(), "ab".repeat(31)] {
            let json = format!(r#"{{"hash":"{hash}","name":"x"}}"#);
            assert_eq!(
                parse(&json).unwrap_err().code,
                ErrorCode::NotFound,
                "{hash}"
            );
        }
    }

    #[test]
    fn the_wire_shape_spells_type() {
        let attachment = Attachment {
            hash: "h".into(),
            name: "n".into(),
            mime: "image/png".into(),
            size: 3,
        };
        assert_eq!(
            serde_json::to_string(&attachment).unwrap(),
            r#"{"hash":"h","name":"n","type":"image/png","size":3}"#
        );
    }
}
