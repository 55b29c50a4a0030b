//! Parsing and validation of input records into [`ListingEvent`]s.
//!
//! Everything here is pure: bytes in, a typed event or a typed [`ContractError`] out. The error
//! carries the dead-letter class, so the caller never has to guess where a bad record goes.

use std::collections::HashSet;

use crate::{DeadLetterClass, ListingEvent, SCHEMA_VERSION};

/// Bounds applied to input events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Largest accepted payload in bytes.
    pub max_payload_bytes: usize,
    /// Most images per listing.
    pub max_images: usize,
    /// Longest id (event, listing, merchant, image) in bytes.
    pub max_id_len: usize,
    /// Longest URL in bytes.
    pub max_url_len: usize,
    /// Longest title in characters.
    pub max_title_chars: usize,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1 << 20,
            max_images: 50,
            max_id_len: 128,
            max_url_len: 4096,
            max_title_chars: 1000,
        }
    }
}

/// Why a record is not an acceptable listing event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// No payload.
    #[error("record has no payload")]
    Empty,
    /// Over the size limit.
    #[error("payload is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Actual size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not JSON at all.
    #[error("payload is not valid JSON: {0}")]
    Malformed(String),
    /// `schema_version` missing or unknown.
    #[error("unsupported schema_version {0}; this pipeline reads version 1")]
    UnsupportedVersion(String),
    /// JSON of the wrong shape.
    #[error("payload does not match listing event v1: {0}")]
    Schema(String),
    /// A value fails a rule.
    #[error("invalid listing event: {0}")]
    Invalid(String),
}

impl ContractError {
    /// The dead-letter class for this error.
    pub fn class(&self) -> DeadLetterClass {
        match self {
            ContractError::Empty => DeadLetterClass::EmptyPayload,
            ContractError::TooLarge { .. } => DeadLetterClass::PayloadTooLarge,
            ContractError::Malformed(_) => DeadLetterClass::MalformedJson,
            ContractError::UnsupportedVersion(_) => DeadLetterClass::UnsupportedSchemaVersion,
            ContractError::Schema(_) => DeadLetterClass::SchemaViolation,
            ContractError::Invalid(_) => DeadLetterClass::InvalidEvent,
        }
    }
}

impl ListingEvent {
    /// Parses and validates one input record.
    pub fn parse(payload: Option<&[u8]>, limits: &ValidationLimits) -> Result<Self, ContractError> {
        let bytes = match payload {
            None | Some([]) => return Err(ContractError::Empty),
            Some(b) => b,
        };
        if bytes.len() > limits.max_payload_bytes {
            return Err(ContractError::TooLarge {
                size: bytes.len(),
                limit: limits.max_payload_bytes,
            });
        }
        // Two steps so that "not JSON", "wrong version" and "wrong shape" are told apart.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ContractError::Malformed(e.to_string()))?;
        let version = value.get("schema_version");
        match version.and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            _ => {
                let shown = version.map_or_else(|| "missing".to_owned(), ToString::to_string);
                return Err(ContractError::UnsupportedVersion(truncate(&shown, 64)));
            }
        }
        let event: ListingEvent =
            serde_json::from_value(value).map_err(|e| ContractError::Schema(e.to_string()))?;
        event.validate(limits)?;
        Ok(event)
    }

    /// Checks value rules that the JSON shape cannot express.
    pub fn validate(&self, limits: &ValidationLimits) -> Result<(), ContractError> {
        let id = |name: &str, v: &str| check_id(name, v, limits.max_id_len);
        id("event_id", &self.event_id)?;
        id("listing_id", &self.listing_id)?;
        id("merchant_id", &self.merchant_id)?;
        id("marketplace", &self.marketplace)?;
        // Policy rules match marketplaces by name: a look-alike ("tаobao" with a Cyrillic а)
        // must not slip past them as an unknown marketplace.
        if !self
            .marketplace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(invalid(format!(
                "marketplace {:?} must be lower-case ASCII letters, digits, '.', '_' or '-'",
                self.marketplace
            )));
        }
        check_text("category", &self.category, limits.max_title_chars)?;
        // Categories are matched by name too: no invisible or control characters.
        if let Some(c) = self
            .category
            .chars()
            .find(|c| c.is_control() || is_invisible(*c))
        {
            return Err(invalid(format!(
                "category contains forbidden character U+{:04X}",
                c as u32
            )));
        }
        check_text("title", &self.title, limits.max_title_chars)?;
        if self.images.is_empty() {
            return Err(invalid("images must not be empty".into()));
        }
        if self.images.len() > limits.max_images {
            return Err(invalid(format!(
                "{} images, over the limit of {}",
                self.images.len(),
                limits.max_images
            )));
        }
        let mut seen = HashSet::with_capacity(self.images.len());
        for (i, img) in self.images.iter().enumerate() {
            check_id(
                &format!("images[{i}].image_id"),
                &img.image_id,
                limits.max_id_len,
            )?;
            if !seen.insert(img.image_id.as_str()) {
                return Err(invalid(format!(
                    "images[{i}].image_id {:?} is repeated",
                    img.image_id
                )));
            }
            if img.url.is_empty() || img.url.len() > limits.max_url_len {
                return Err(invalid(format!(
                    "images[{i}].url must be 1..={} bytes",
                    limits.max_url_len
                )));
            }
            if img.url.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "images[{i}].url contains control characters"
                )));
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> ContractError {
    ContractError::Invalid(msg)
}

/// Ids are printable, trimmed and bounded; no control or invisible formatting characters, which
/// are used to make two different ids look alike.
fn check_id(name: &str, v: &str, max: usize) -> Result<(), ContractError> {
    if v.is_empty() {
        return Err(invalid(format!("{name} must not be empty")));
    }
    if v.len() > max {
        return Err(invalid(format!(
            "{name} is {} bytes, over the limit of {max}",
            v.len()
        )));
    }
    if v.trim() != v {
        return Err(invalid(format!(
            "{name} has leading or trailing whitespace"
        )));
    }
    if let Some(c) = v.chars().find(|c| c.is_control() || is_invisible(*c)) {
        return Err(invalid(format!(
            "{name} contains forbidden character U+{:04X}",
            c as u32
        )));
    }
    Ok(())
}

fn check_text(name: &str, v: &str, max_chars: usize) -> Result<(), ContractError> {
    if v.chars().count() > max_chars {
        return Err(invalid(format!("{name} is over {max_chars} characters")));
    }
    if v.contains('\0') {
        return Err(invalid(format!("{name} contains a NUL character")));
    }
    Ok(())
}

fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x200B..=0x200F // zero-width space/joiners, LRM/RLM
        | 0x202A..=0x202E // bidi embeddings and overrides
        | 0x2060..=0x2064
        | 0x2066..=0x2069 // bidi isolates
        | 0xFEFF)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeadLetterClass as C;

    const GOOD: &str = r#"{"schema_version":1,"event_id":"e1","event_type":"listing.created",
        "occurred_at":"2026-11-20T10:00:00Z","listing_id":"l1","merchant_id":"m1",
        "marketplace":"taobao","category":"apparel","title":"T-shirt",
        "images":[{"image_id":"i1","url":"https://img.example/1.jpg","role":"main"}]}"#;

    fn check(payload: &[u8], expected: Result<(), C>) {
        let got = ListingEvent::parse(Some(payload), &ValidationLimits::default());
        match (got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(class)) => assert_eq!(e.class(), class, "{e}"),
            (got, exp) => panic!(
                "payload {:?}: got {got:?}, expected {exp:?}",
                String::from_utf8_lossy(payload)
            ),
        }
    }

    fn with(field: &str, value: &str) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn table() {
        check(GOOD.as_bytes(), Ok(()));
        check(b"", Err(C::EmptyPayload));
        check(b"{not json", Err(C::MalformedJson));
        check(b"\xff\xfe", Err(C::MalformedJson));
        check(
            &with("schema_version", "2"),
            Err(C::UnsupportedSchemaVersion),
        );
        check(
            &with("schema_version", "\"1\""),
            Err(C::UnsupportedSchemaVersion),
        );
        check(br#"{"event_id":"x"}"#, Err(C::UnsupportedSchemaVersion));
        check(&with("listing_id", "42"), Err(C::SchemaViolation));
        check(
            &with("event_type", "\"listing.deleted\""),
            Err(C::SchemaViolation),
        );
        check(
            &with("occurred_at", "\"yesterday\""),
            Err(C::SchemaViolation),
        );
        check(&with("images", "[]"), Err(C::InvalidEvent));
        check(&with("event_id", "\"\""), Err(C::InvalidEvent));
        check(&with("event_id", "\"e\\u200b1\""), Err(C::InvalidEvent));
        check(&with("listing_id", "\"l\\u00001\""), Err(C::InvalidEvent));
        check(&with("marketplace", "\"TaoBao\""), Err(C::InvalidEvent));
        check(
            &with("marketplace", "\"t\u{0430}obao\""),
            Err(C::InvalidEvent),
        );
        check(&with("marketplace", "\"tao bao\""), Err(C::InvalidEvent));
        check(&with("marketplace", "\"tmall-hk_2.0\""), Ok(()));
        check(
            &with("category", "\"beau\u{200d}ty\""),
            Err(C::InvalidEvent),
        );
        check(&with("category", "\"美妆\""), Ok(()));
        check(&with("title", "\"a\\u0000b\""), Err(C::InvalidEvent));
        let dup = r#"[{"image_id":"a","url":"http://x/1","role":"main"},{"image_id":"a","url":"http://x/2","role":"sku"}]"#;
        check(&with("images", dup), Err(C::InvalidEvent));
        let many: Vec<String> = (0..51)
            .map(|i| format!(r#"{{"image_id":"i{i}","url":"http://x/{i}","role":"detail"}}"#))
            .collect();
        check(
            &with("images", &format!("[{}]", many.join(","))),
            Err(C::InvalidEvent),
        );
        let big = vec![b' '; (1 << 20) + 1];
        check(&big, Err(C::PayloadTooLarge));
        check(&vec![b'x'; 10 << 20], Err(C::PayloadTooLarge));
    }

    #[test]
    fn missing_payload_is_empty() {
        let e = ListingEvent::parse(None, &ValidationLimits::default()).unwrap_err();
        assert_eq!(e.class(), C::EmptyPayload);
    }
}
