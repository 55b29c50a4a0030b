//! W3C Trace Context (`traceparent`) for records: read from an input record's headers, carried
//! through processing, and written, with the pipeline's own span id, into the headers of every
//! output record (decision, labels, dead letter), so a trace started by the listing service
//! continues through moderation to whoever consumes the outputs.
//!
//! Format (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case;
//! all-zero ids are invalid. An input without a valid `traceparent` starts a new trace.

use sha2::{Digest, Sha256};

/// The header name.
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span that caused this one.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Lower-case hex of exactly `out.len()` bytes (the format allows no upper case).
fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(s, out).ok()
}

impl TraceParent {
    /// Parses a version-00 `traceparent` value; `None` when it is not one.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        hex_into(trace, &mut tp.trace_id)?;
        hex_into(parent, &mut tp.parent_id)?;
        let mut f = [0u8; 1];
        hex_into(flags, &mut f)?;
        tp.flags = f[0];
        let valid = tp.trace_id != [0; 16] && tp.parent_id != [0; 8];
        valid.then_some(tp)
    }

    /// The context for one record: the input's trace continued with a span id derived from
    /// `seed` (e.g. the record's coordinates and receive time), or a new sampled trace when the
    /// input carried none.
    pub fn for_record(input: Option<&str>, seed: &[u8]) -> Self {
        let digest = Sha256::digest(seed);
        let mut span = [0u8; 8];
        span.copy_from_slice(&digest[..8]);
        if span == [0; 8] {
            span[7] = 1;
        }
        match input.and_then(Self::parse) {
            Some(parent) => TraceParent {
                trace_id: parent.trace_id,
                parent_id: span,
                flags: parent.flags,
            },
            None => {
                let mut trace = [0u8; 16];
                trace.copy_from_slice(&digest[8..24]);
                if trace == [0; 16] {
                    trace[15] = 1;
                }
                TraceParent {
                    trace_id: trace,
                    parent_id: span,
                    flags: 1,
                }
            }
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_w3c_example() {
        let tp = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(tp.to_string(), SAMPLE);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_continues_the_input_trace_with_its_own_span() {
        let tp = TraceParent::for_record(Some(SAMPLE), b"topic/0/42");
        let input = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(tp.trace_id, input.trace_id);
        assert_ne!(tp.parent_id, input.parent_id);
        assert_eq!(tp.flags, input.flags);
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));

        let fresh = TraceParent::for_record(None, b"topic/0/42");
        assert_ne!(fresh.trace_id, input.trace_id);
        assert_eq!(fresh.flags, 1);
        let other = TraceParent::for_record(Some("garbage"), b"topic/0/43");
        assert_ne!(other.trace_id, fresh.trace_id);
    }
}
