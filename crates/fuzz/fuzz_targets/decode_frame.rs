//! Server frames: decoding never panics, and whatever decodes re-encodes to the same
//! messages; the client's flat control view never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_protocol::message::ControlFields;
use tidewire_protocol::{EncodedMessage, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(messages) = decode_frame(text) {
        let encoded: Vec<EncodedMessage> =
            messages.iter().map(|m| EncodedMessage::encode(m).expect("decoded messages encode")).collect();
        let again = decode_frame(&encode_frame(&encoded)).expect("re-encoded frames decode");
        assert_eq!(again, messages);
    }
    let _ = serde_json::from_str::<ControlFields<'_>>(text);
});
