//! libFuzzer target: `parse_client_frame` on any UTF-8 text (the WebSocket layer rejects
//! anything else with 1007 before the parser sees it). It must return, never panic; a rejection
//! must carry a parser code and a bounded message.
#![no_main]

use hubbub::protocol::{ErrorCode, Limits, parse_client_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(rejection) = parse_client_frame(
        text,
        Limits {
            max_message_bytes: 4096,
        },
    ) {
        assert!(matches!(
            rejection.code,
            ErrorCode::BadJson
                | ErrorCode::UnknownType
                | ErrorCode::BadRoom
                | ErrorCode::BadName
                | ErrorCode::TooLong
        ));
        assert!(rejection.message.len() <= 512);
    }
});
