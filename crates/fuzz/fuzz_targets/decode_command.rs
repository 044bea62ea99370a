//! Client commands: decoding never panics, errors always carry a code and a message,
//! and whatever decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire_protocol::decode_command;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match decode_command(text) {
        Ok(command) => {
            let json = serde_json::to_string(&command).expect("commands encode");
            assert_eq!(decode_command(&json).expect("encoded commands decode"), command);
        }
        Err(error) => assert!(!error.message.is_empty()),
    }
});
