//! `ListingEvent::parse` on arbitrary record payloads: never panics; an accepted event
//! re-serialises to an event that parses to the same value.
#![no_main]

use lg_events::{ListingEvent, ValidationLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ValidationLimits::default();
    match ListingEvent::parse(Some(data), &limits) {
        Ok(event) => {
            let again = serde_json::to_vec(&event).expect("an event serialises");
            let reparsed = ListingEvent::parse(Some(&again), &limits).expect("round trip parses");
            assert_eq!(event, reparsed);
        }
        Err(e) => {
            let _ = (e.class(), e.to_string());
        }
    }
});
