//! EXIF (via `kamadak-exif`): generator names in `Software`/`Make`/`Model`, and A1111
//! parameters or a `TC260:AIGC` label in `UserComment`.

use std::io::{BufReader, Cursor};

use exif::{Tag, Value};
use lg_events::{Marker, MarkerKind};

use super::generators::{known_generator, looks_like_a1111};
use super::{marker, xmp::aigc_marker};

pub(crate) fn read(bytes: &[u8], markers: &mut Vec<Marker>) {
    // Generators write sloppy EXIF (A1111's has a bogus next-IFD offset); keep what parses.
    let parsed = exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut BufReader::new(Cursor::new(bytes)))
        .or_else(|e| {
            e.distill_partial_result(|errs| tracing::debug!(?errs, "EXIF partly malformed"))
        });
    let Ok(exif) = parsed else {
        return;
    };
    let ascii = |tag: Tag| {
        exif.fields()
            .find(|f| f.tag == tag)
            .and_then(|f| match &f.value {
                Value::Ascii(parts) => parts
                    .first()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                _ => None,
            })
    };
    if let (Some(description), Some(artist)) = (ascii(Tag::ImageDescription), ascii(Tag::Artist)) {
        if is_xai_signature(&description, &artist) {
            markers.push(marker(
                MarkerKind::GeneratorHint,
                false,
                Some("xAI Grok".to_owned()),
                format!(
                    "EXIF ImageDescription holds a signature and Artist a UUID, as xAI's Grok writes them (Artist = {artist})"
                ),
            ));
        }
    }
    for f in exif.fields() {
        match f.tag {
            Tag::Software | Tag::Make | Tag::Model | Tag::ImageDescription | Tag::Artist => {
                let Value::Ascii(parts) = &f.value else {
                    continue;
                };
                for part in parts {
                    let text = String::from_utf8_lossy(part);
                    if let Some(g) = known_generator(&text) {
                        markers.push(marker(
                            MarkerKind::ExifSoftware,
                            true,
                            Some(g.to_owned()),
                            format!("EXIF {} = {text}", f.tag),
                        ));
                    }
                }
            }
            Tag::UserComment => {
                let Value::Undefined(raw, _) = &f.value else {
                    continue;
                };
                let text = user_comment(raw);
                read_user_comment(&text, markers);
            }
            _ => {}
        }
    }
}

/// xAI's Grok writes no C2PA or IPTC; its images carry `ImageDescription = "Signature: <base64>"`
/// and a UUID as `Artist`. A hint, not a declaration.
fn is_xai_signature(description: &str, artist: &str) -> bool {
    let Some(sig) = description.trim().strip_prefix("Signature:") else {
        return false;
    };
    let sig = sig.trim();
    let base64ish = sig.len() >= 32
        && sig
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
    let a = artist.trim();
    let uuid = a.len() == 36
        && a.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    base64ish && uuid
}

fn read_user_comment(text: &str, markers: &mut Vec<Marker>) {
    let lower = text.to_ascii_lowercase();
    let labelled = lower.contains("\"label\"") || lower.contains("\"aigc\"");
    if let Some(start) = text.find('{').filter(|_| labelled) {
        markers.push(aigc_marker(&text[start..], "EXIF UserComment TC260:AIGC"));
    } else if looks_like_a1111(text) {
        markers.push(marker(
            MarkerKind::GeneratorParameters,
            true,
            Some("AUTOMATIC1111".to_owned()),
            format!("EXIF UserComment: {text}"),
        ));
    } else if let Some(g) = known_generator(text) {
        markers.push(marker(
            MarkerKind::ExifSoftware,
            true,
            Some(g.to_owned()),
            format!("EXIF UserComment: {text}"),
        ));
    }
}

/// Decodes an EXIF UserComment: an 8-byte character-code prefix, then the text.
fn user_comment(raw: &[u8]) -> String {
    let (code, body) = if raw.len() >= 8 {
        raw.split_at(8)
    } else {
        (&b""[..], raw)
    };
    let body = body.strip_suffix(&[0, 0]).unwrap_or(body);
    if code == b"UNICODE\0" {
        // UTF-16 in either byte order; writers disagree. Pick the one with NULs in high bytes.
        let even_zeros = body.iter().step_by(2).filter(|&&b| b == 0).count();
        let odd_zeros = body.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
        let units = body.chunks_exact(2).map(|c| {
            if even_zeros >= odd_zeros {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or('\u{FFFD}'))
            .collect()
    } else {
        String::from_utf8_lossy(body)
            .trim_end_matches('\0')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_comment_encodings() {
        let mut be = b"UNICODE\0".to_vec();
        be.extend("Steps: 1".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(user_comment(&be), "Steps: 1");
        let mut le = b"UNICODE\0".to_vec();
        le.extend("Steps: 1".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(user_comment(&le), "Steps: 1");
        assert_eq!(user_comment(b"ASCII\0\0\0hello\0"), "hello");
    }

    #[test]
    fn xai_signature_fields() {
        let sig = "Signature: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlq";
        assert!(is_xai_signature(
            sig,
            "3f2b6c1e-9a4d-4e0b-8c7a-1d2e3f4a5b6c"
        ));
        assert!(!is_xai_signature(sig, "Jane Doe"));
        assert!(!is_xai_signature(
            "A sunset",
            "3f2b6c1e-9a4d-4e0b-8c7a-1d2e3f4a5b6c"
        ));
        assert!(!is_xai_signature(
            "Signature: short",
            "3f2b6c1e-9a4d-4e0b-8c7a-1d2e3f4a5b6c"
        ));
    }

    #[test]
    fn user_comment_markers() {
        let mut m = Vec::new();
        read_user_comment(r#"{"AIGC":{"Label":"1","ContentProducer":"q"}}"#, &mut m);
        assert_eq!(
            m.pop().map(|m| (m.declares_ai, m.generator)),
            Some((true, Some("q".into())))
        );
        read_user_comment(r#"AIGC {"Label":"1","ContentProducer":"p"}"#, &mut m);
        read_user_comment("cat\nSteps: 20, Sampler: Euler a, Seed: 5", &mut m);
        read_user_comment("holiday photo", &mut m);
        let kinds: Vec<_> = m.iter().map(|m| (m.kind, m.generator.as_deref())).collect();
        assert_eq!(
            kinds,
            vec![
                (MarkerKind::Tc260Aigc, Some("p")),
                (MarkerKind::GeneratorParameters, Some("AUTOMATIC1111"))
            ]
        );
    }
}
