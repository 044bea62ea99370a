//! Field deltas: applying a merge patch on JSON text (what the browser client does with
//! whatever a server sends) never panics, and whenever both halves are JSON it agrees
//! with applying it on a JSON tree; a diff, applied, gives back the new value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidewire_protocol::delta::{apply, apply_to_text, diff};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (target, patch) = text.split_once('\n').unwrap_or((text, "{}"));
    let rebuilt = apply_to_text(target, patch);
    let (Ok(tree), Ok(patch_tree)) = (serde_json::from_str::<Value>(target), serde_json::from_str::<Value>(patch))
    else {
        return;
    };
    let mut expected = tree.clone();
    apply(&mut expected, &patch_tree);
    let rebuilt: Value = serde_json::from_str(&rebuilt.expect("JSON halves apply")).expect("the result is JSON");
    assert_eq!(rebuilt, expected);
    if let Some(patch) = diff(&tree, &expected) {
        let mut again = tree.clone();
        apply(&mut again, &patch);
        assert_eq!(again, expected);
    }
});
