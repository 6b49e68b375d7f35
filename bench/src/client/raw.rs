//! Raw mode: the peers (Node `ws`, Go gorilla hub) relay each text frame verbatim to every
//! connected client, so a post is the payload itself and there is no handshake. Anything that
//! is not a delivery (there is nothing else on these servers) is ignored.

/// A post is the text itself.
pub fn encode_post(text: &str) -> String {
    text.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn post_is_verbatim() {
        assert_eq!(super::encode_post("hi"), "hi");
    }
}
