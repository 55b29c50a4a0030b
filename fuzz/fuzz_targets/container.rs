//! The PNG chunk / JPEG segment walker (and XMP scan of other containers) on arbitrary bytes:
//! never panics, and inflated text stays under its cap.
#![no_main]

use lg_detector::fuzzing::{container, MAX_INFLATED_TEXT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let meta = container(data);
    // Lossy UTF-8/Latin-1 conversion may triple a byte count, never more.
    let bound = 3 * MAX_INFLATED_TEXT.max(data.len());
    for p in &meta.xmp {
        assert!(p.len() <= bound);
    }
    for (k, v) in &meta.texts {
        assert!(k.len() <= 2 * data.len() && v.len() <= bound);
    }
});
