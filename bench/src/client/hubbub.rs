//! hubbub mode: protocol v1 (docs/protocol.md).
//!
//! A connection reads `welcome`, sends `join` and waits for `joined` for its room; presence and
//! replayed history that arrive meanwhile are skipped. Posts are `msg` frames with a numeric
//! `ref`, so the sender can time the `ack` that follows the durable commit.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::{Incoming, Ws};

/// `{"type":"msg","room":..,"data":..,"ref":seq}`.
pub fn encode_post(room: &str, text: &str, seq: u64) -> String {
    serde_json::json!({"type": "msg", "room": room, "data": text, "ref": seq}).to_string()
}

/// The fields of a server frame the load generator looks at.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref")]
    reference: Option<serde_json::Value>,
    room: Option<String>,
}

/// Classify a non-delivery frame. Only frames that might be an ack or an error are parsed, so
/// the presence flood of a filling room costs a substring search each, not a JSON parse.
pub fn classify(frame: &str) -> Incoming<'_> {
    if frame.contains("\"ack\"")
        && let Ok(h) = serde_json::from_str::<Head>(frame)
        && h.kind == "ack"
        && let Some(r) = h.reference.and_then(|r| r.as_u64())
    {
        return Incoming::Ack(r);
    }
    if frame.contains("\"error\"")
        && let Ok(h) = serde_json::from_str::<Head>(frame)
        && h.kind == "error"
    {
        return Incoming::Error(frame);
    }
    Incoming::Other
}

/// `welcome`, then `join` → `joined`.
pub async fn handshake(ws: &mut Ws, room: &str) -> Result<()> {
    loop {
        let h = next_head(ws).await?;
        if h.kind == "welcome" {
            break;
        }
    }
    let join = serde_json::json!({"type": "join", "room": room}).to_string();
    ws.send(Message::text(join)).await.context("send join")?;
    loop {
        let h = next_head(ws).await?;
        match h.kind.as_str() {
            "joined" if h.room.as_deref() == Some(room) => return Ok(()),
            "error" => bail!("join refused"),
            _ => continue,
        }
    }
}

async fn next_head(ws: &mut Ws) -> Result<Head> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .with_context(|| format!("bad frame during handshake: {}", t.as_str()));
            }
            Some(Ok(Message::Close(c))) => bail!("closed during handshake: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("read during handshake"),
            None => bail!("connection ended during handshake"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_errors_are_recognised() {
        assert_eq!(
            classify(r#"{"type":"ack","ref":7,"room":"r","id":42}"#),
            Incoming::Ack(7)
        );
        let e = r#"{"type":"error","ref":7,"data":{"code":"rate_limited","message":"slow down"}}"#;
        assert_eq!(classify(e), Incoming::Error(e));
        assert_eq!(
            classify(r#"{"type":"presence","room":"r","data":{"joined":"a"}}"#),
            Incoming::Other
        );
    }

    #[test]
    fn post_is_a_msg_frame_with_ref() {
        let v: serde_json::Value = serde_json::from_str(&encode_post("r", "hi", 3)).expect("json");
        assert_eq!(v["type"], "msg");
        assert_eq!(v["ref"], 3);
    }
}
