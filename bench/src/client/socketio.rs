//! Socket.IO mode: Engine.IO v4 over a WebSocket, spoken directly.
//!
//! The server opens with `0{...}` (Engine.IO open); the client connects to the default
//! namespace with `40` and the server confirms with `40{...}`. Events are
//! `42["name",payload]`. The server pings with `2` every `pingInterval` and closes clients that
//! do not answer `3`, so the reader answers every ping.

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Incoming, Ws};

/// `42["event",<text as a JSON string>]`.
pub fn encode_event(event: &str, text: &str) -> String {
    // Serialising a &str cannot fail.
    let payload = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
    format!("42[\"{event}\",{payload}]")
}

/// Classify a non-delivery frame.
pub fn classify(frame: &str) -> Incoming<'_> {
    match frame {
        "2" => Incoming::Reply("3"),
        f if f.starts_with("44") => Incoming::Error(f),
        _ => Incoming::Other,
    }
}

/// Engine.IO open, then connect to the default namespace.
pub async fn handshake(ws: &mut Ws) -> Result<()> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        bail!("expected Engine.IO open packet, got {open:?}");
    }
    ws.send(Message::text("40"))
        .await
        .context("send namespace connect")?;
    loop {
        let f = next_text(ws).await?;
        if f.starts_with("40") {
            return Ok(());
        }
        if f == "2" {
            ws.send(Message::text("3")).await.context("send pong")?;
            continue;
        }
        if f.starts_with("44") {
            bail!("namespace connect refused: {f}");
        }
    }
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
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
    fn events_are_json_arrays() {
        assert_eq!(encode_event("message", "a\"b"), r#"42["message","a\"b"]"#);
        assert_eq!(classify("2"), Incoming::Reply("3"));
        assert_eq!(
            classify("44{\"message\":\"no\"}"),
            Incoming::Error("44{\"message\":\"no\"}")
        );
        assert_eq!(classify("3"), Incoming::Other);
    }
}
