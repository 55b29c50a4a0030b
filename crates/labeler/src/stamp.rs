//! Writing the GB 45438 implicit label: the XMP property `TC260:AIGC` (namespace
//! [`NS_TC260`]), whose value is a JSON object with `Label, ContentProducer, ProduceID,
//! ReservedCode1, ContentPropagator, PropagateID, ReservedCode2`.
//!
//! [`stamp`] edits the file's container, never its pixels:
//! - JPEG: the XMP `APP1` segment (`http://ns.adobe.com/xap/1.0/\0` + packet) is rewritten in
//!   place, or inserted after the leading `APP0`/`APP1` (JFIF, Exif) segments;
//! - PNG: the `iTXt` chunk `XML:com.adobe.xmp` is rewritten in place, or inserted before the
//!   first `IDAT`.
//!
//! Every other segment or chunk (Exif, ICC, C2PA's `APP11`/`caBX`, text chunks, the entropy-coded
//! data) is copied byte for byte. Inside the XMP packet only the `TC260:AIGC` property changes:
//! the producer's fields (`Label`, `ContentProducer`, `ProduceID`, `ReservedCode1`) and any
//! unknown fields are kept, the propagator's (`ContentPropagator`, `PropagateID`,
//! `ReservedCode2`) are set. A C2PA manifest is kept but, as for any edit, its hard binding no
//! longer matches the new bytes; re-signing is the manifest owner's step.

use std::borrow::Cow;

use lg_events::Tc260Aigc;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use serde_json::{Map, Value};

/// GB 45438-2025 XMP namespace.
pub const NS_TC260: &str = "http://www.tc260.org.cn/ns/AIGC/1.0/";
const NS_RDF: &[u8] = b"http://www.w3.org/1999/02/22-rdf-syntax-ns#";
const JPEG_XMP_HEADER: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
const PNG_SIG: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
const PNG_XMP_KEYWORD: &[u8] = b"XML:com.adobe.xmp";
/// Largest XMP packet one JPEG `APP1` segment holds (65535 - 2 length bytes - the header).
pub const MAX_JPEG_XMP: usize = 65535 - 2 - JPEG_XMP_HEADER.len();
/// Largest XMP packet read back from a compressed PNG `iTXt` chunk.
const MAX_INFLATED: u64 = 4 << 20;

/// The fields in the standard's order.
const FIELDS: [&str; 7] = Tc260Aigc::FIELDS;
/// The fields a propagator writes; the others belong to the producer and are kept.
const PROPAGATOR_FIELDS: [&str; 3] = ["ContentPropagator", "PropagateID", "ReservedCode2"];

/// Why a file could not be stamped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StampError {
    /// Neither JPEG nor PNG.
    #[error("not a JPEG or PNG file (WebP, AVIF, HEIC and others are not written)")]
    UnsupportedFormat,
    /// The container's structure is broken where the label goes.
    #[error("malformed {format}: {detail}")]
    Malformed {
        /// `JPEG` or `PNG`.
        format: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The existing XMP packet is not well-formed XML, so it cannot be edited safely.
    #[error("the file's XMP packet is not well-formed XML: {0}")]
    BadXmp(String),
    /// The updated packet does not fit one JPEG `APP1` segment (extended XMP is not written).
    #[error(
        "the XMP packet would be {0} bytes, over the {MAX_JPEG_XMP} a JPEG APP1 segment holds"
    )]
    XmpTooLarge(usize),
}

/// What [`stamp`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// The new file.
    pub bytes: Vec<u8>,
    /// The label now in the file.
    pub label: Tc260Aigc,
    /// Whether the file already carried a `TC260:AIGC` label (its producer fields were kept).
    pub had_label: bool,
}

/// Writes or updates the file's `TC260:AIGC` label with the propagator fields of `ours`. The
/// producer fields of an existing label are kept; where the file has none, `ours` supplies them.
pub fn stamp(bytes: &[u8], ours: &Tc260Aigc) -> Result<Stamped, StampError> {
    if bytes.starts_with(PNG_SIG) {
        let chunks = png_chunks(bytes)?;
        let xmp = chunks.iter().find(|c| c.is_xmp_in(bytes));
        let old = xmp.map(|c| c.xmp_text(bytes)).transpose()?;
        let (packet, label, had_label) = updated_packet(old.as_deref(), ours)?;
        let chunk = itxt_chunk(&packet);
        let mut out = Vec::with_capacity(bytes.len() + chunk.len());
        match xmp {
            Some(c) => {
                out.extend_from_slice(&bytes[..c.start]);
                out.extend_from_slice(&chunk);
                out.extend_from_slice(&bytes[c.end..]);
            }
            None => {
                let at = chunks
                    .iter()
                    .find(|c| c.kind == *b"IDAT")
                    .map(|c| c.start)
                    .ok_or_else(|| malformed("PNG", "no IDAT chunk"))?;
                out.extend_from_slice(&bytes[..at]);
                out.extend_from_slice(&chunk);
                out.extend_from_slice(&bytes[at..]);
            }
        }
        Ok(Stamped {
            bytes: out,
            label,
            had_label,
        })
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let segments = jpeg_segments(bytes)?;
        let xmp = segments.iter().find(|s| s.is_xmp(bytes));
        let old = xmp.map(|s| {
            let payload = &bytes[s.start + 4 + JPEG_XMP_HEADER.len()..s.end];
            String::from_utf8_lossy(payload).into_owned()
        });
        let (packet, label, had_label) = updated_packet(old.as_deref(), ours)?;
        if packet.len() > MAX_JPEG_XMP {
            return Err(StampError::XmpTooLarge(packet.len()));
        }
        let seg_len = 2 + JPEG_XMP_HEADER.len() + packet.len();
        let mut segment = Vec::with_capacity(seg_len + 2);
        segment.extend_from_slice(&[0xFF, 0xE1]);
        segment.extend_from_slice(&u16::try_from(seg_len).expect("checked").to_be_bytes());
        segment.extend_from_slice(JPEG_XMP_HEADER);
        segment.extend_from_slice(packet.as_bytes());
        let (cut_start, cut_end) = match xmp {
            Some(s) => (s.start, s.end),
            None => {
                // After SOI and any leading JFIF/Exif segments, where readers expect XMP.
                let at = segments
                    .iter()
                    .take_while(|s| matches!(s.marker, 0xE0 | 0xE1))
                    .last()
                    .map_or(2, |s| s.end);
                (at, at)
            }
        };
        let mut out = Vec::with_capacity(bytes.len() + segment.len());
        out.extend_from_slice(&bytes[..cut_start]);
        out.extend_from_slice(&segment);
        out.extend_from_slice(&bytes[cut_end..]);
        Ok(Stamped {
            bytes: out,
            label,
            had_label,
        })
    } else {
        Err(StampError::UnsupportedFormat)
    }
}

fn malformed(format: &'static str, detail: impl Into<String>) -> StampError {
    StampError::Malformed {
        format,
        detail: detail.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

/// One marker segment before the scan: bytes `start..end` from its `FF xx`.
struct Segment {
    marker: u8,
    start: usize,
    end: usize,
}

impl Segment {
    fn is_xmp(&self, bytes: &[u8]) -> bool {
        self.marker == 0xE1 && bytes[self.start + 4..self.end].starts_with(JPEG_XMP_HEADER)
    }
}

/// The marker segments between SOI and the first SOS, each bounds-checked.
fn jpeg_segments(bytes: &[u8]) -> Result<Vec<Segment>, StampError> {
    let mut out = Vec::new();
    let mut i = 2;
    loop {
        let (Some(&ff), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(malformed("JPEG", "ends before the image data"));
        };
        if ff != 0xFF {
            return Err(malformed("JPEG", format!("no marker at byte {i}")));
        }
        match marker {
            // Fill byte.
            0xFF => i += 1,
            // Standalone markers.
            0x01 | 0xD0..=0xD7 => i += 2,
            0xD9 => return Err(malformed("JPEG", "EOI before any image data")),
            _ => {
                let len = bytes
                    .get(i + 2..i + 4)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(|| malformed("JPEG", "truncated segment header"))?;
                if len < 2 || i + 2 + len > bytes.len() {
                    return Err(malformed("JPEG", format!("segment at byte {i} overruns")));
                }
                if marker == 0xDA {
                    return Ok(out);
                }
                out.push(Segment {
                    marker,
                    start: i,
                    end: i + 2 + len,
                });
                i += 2 + len;
            }
        }
    }
}

/// One PNG chunk: bytes `start..end` including length, type and CRC.
struct Chunk {
    kind: [u8; 4],
    start: usize,
    end: usize,
}

impl Chunk {
    fn data<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start + 8..self.end - 4]
    }

    fn is_xmp_in(&self, bytes: &[u8]) -> bool {
        self.kind == *b"iTXt"
            && self
                .data(bytes)
                .strip_prefix(PNG_XMP_KEYWORD)
                .is_some_and(|r| r.first() == Some(&0))
    }

    fn xmp_text(&self, bytes: &[u8]) -> Result<String, StampError> {
        // keyword \0 compressed method lang \0 translated \0 text
        let data = &self.data(bytes)[PNG_XMP_KEYWORD.len() + 1..];
        let bad = || malformed("PNG", "truncated XMP iTXt chunk");
        let (&compressed, rest) = data.split_first().ok_or_else(bad)?;
        let rest = rest.get(1..).ok_or_else(bad)?;
        let lang_end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        let rest = &rest[lang_end + 1..];
        let tr_end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        let text = &rest[tr_end + 1..];
        if compressed == 0 {
            return Ok(String::from_utf8_lossy(text).into_owned());
        }
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(text)
            .take(MAX_INFLATED)
            .read_to_end(&mut out)
            .map_err(|e| malformed("PNG", format!("XMP iTXt does not inflate: {e}")))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The chunks of a PNG up to and including `IEND`, each bounds-checked.
fn png_chunks(bytes: &[u8]) -> Result<Vec<Chunk>, StampError> {
    let mut out = Vec::new();
    let mut i = PNG_SIG.len();
    loop {
        let head = bytes
            .get(i..i + 8)
            .ok_or_else(|| malformed("PNG", "ends before IEND"))?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let end = (i + 12)
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| malformed("PNG", format!("chunk at byte {i} overruns")))?;
        let kind: [u8; 4] = head[4..8].try_into().expect("4 bytes");
        out.push(Chunk {
            kind,
            start: i,
            end,
        });
        if kind == *b"IEND" {
            return Ok(out);
        }
        i = end;
    }
}

/// An uncompressed `iTXt` chunk `XML:com.adobe.xmp` holding `packet`.
fn itxt_chunk(packet: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(PNG_XMP_KEYWORD.len() + 5 + packet.len());
    data.extend_from_slice(PNG_XMP_KEYWORD);
    data.extend_from_slice(&[0, 0, 0, 0, 0]); // NUL, uncompressed, method, empty lang, empty translated
    data.extend_from_slice(packet.as_bytes());
    let mut chunk = Vec::with_capacity(data.len() + 12);
    chunk.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
    chunk.extend_from_slice(b"iTXt");
    chunk.extend_from_slice(&data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"iTXt");
    crc.update(&data);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    chunk
}

// ---------------------------------------------------------------------------------------------
// The XMP packet
// ---------------------------------------------------------------------------------------------

/// Where the existing property is, in the packet's bytes.
enum Found {
    /// `P:AIGC="..."` on the element at `start..end` (the whole start or empty tag).
    Attribute {
        start: usize,
        end: usize,
        value: String,
    },
    /// `<P:AIGC>value</P:AIGC>`: the content `start..end` between the tags.
    Element {
        start: usize,
        end: usize,
        value: String,
    },
}

/// The updated packet, the label it now carries, and whether one was there before.
fn updated_packet(
    old: Option<&str>,
    ours: &Tc260Aigc,
) -> Result<(String, Tc260Aigc, bool), StampError> {
    let Some(old) = old else {
        let (json, label) = merged(None, ours);
        return Ok((fresh_packet(&json), label, false));
    };
    let (found, rdf_end) = locate(old)?;
    let existing = found.as_ref().map(|f| match f {
        Found::Attribute { value, .. } | Found::Element { value, .. } => value.as_str(),
    });
    let (json, label) = merged(existing, ours);
    let escaped = escape(&json);
    let packet = match found {
        Some(Found::Element { start, end, .. }) => {
            format!("{}{}{}", &old[..start], escaped, &old[end..])
        }
        Some(Found::Attribute { start, end, .. }) => {
            let tag = retag(&old[start..end], &escaped)?;
            format!("{}{}{}", &old[..start], tag, &old[end..])
        }
        None => {
            let (at, rdf_prefix) =
                rdf_end.ok_or_else(|| StampError::BadXmp("no rdf:RDF element".into()))?;
            let p = if rdf_prefix.is_empty() {
                String::new()
            } else {
                format!("{rdf_prefix}:")
            };
            format!(
                "{}<{p}Description {p}about=\"\" xmlns:TC260=\"{NS_TC260}\"><TC260:AIGC>{escaped}</TC260:AIGC></{p}Description>{}",
                &old[..at],
                &old[at..]
            )
        }
    };
    Ok((packet, label, existing.is_some()))
}

/// The label JSON: the existing producer fields and unknown fields, our propagator fields, in
/// the standard's field order (unknown fields after).
fn merged(existing: Option<&str>, ours: &Tc260Aigc) -> (String, Tc260Aigc) {
    let theirs: Map<String, Value> = existing
        .and_then(|v| serde_json::from_str(v.trim()).ok())
        .unwrap_or_default();
    let ours_map = match serde_json::to_value(ours) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let pick = |k: &str| -> Value {
        let from_ours = PROPAGATOR_FIELDS.contains(&k) || !theirs.contains_key(k);
        let src = if from_ours { &ours_map } else { &theirs };
        src.get(k).cloned().unwrap_or(Value::String(String::new()))
    };
    let mut pairs: Vec<(String, Value)> =
        FIELDS.iter().map(|k| ((*k).to_owned(), pick(k))).collect();
    pairs.extend(
        theirs
            .iter()
            .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
        .collect();
    let json = format!("{{{}}}", body.join(","));
    let text = |k: &str| match pick(k) {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let label = Tc260Aigc {
        label: text("Label"),
        content_producer: text("ContentProducer"),
        produce_id: text("ProduceID"),
        reserved_code1: text("ReservedCode1"),
        content_propagator: text("ContentPropagator"),
        propagate_id: text("PropagateID"),
        reserved_code2: text("ReservedCode2"),
    };
    (json, label)
}

/// Finds the first `TC260:AIGC` property (by namespace, any prefix, attribute or element form)
/// and where `</rdf:RDF>` starts, with the prefix it uses.
#[allow(clippy::type_complexity)]
fn locate(packet: &str) -> Result<(Option<Found>, Option<(usize, String)>), StampError> {
    let mut reader = NsReader::from_str(packet);
    let mut found = None;
    let mut rdf_end = None;
    // (content start, depth) of an open AIGC element
    let mut open: Option<(usize, usize)> = None;
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).expect("fits");
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| StampError::BadXmp(e.to_string()))?;
        let element_is_aigc = match &ev {
            Event::Start(e) | Event::Empty(e) => is_aigc(&ns, e.local_name().as_ref()),
            _ => false,
        };
        let after = usize::try_from(reader.buffer_position()).expect("fits");
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(ev, Event::Start(_));
                if found.is_none() {
                    if let Some(value) = aigc_attribute(&reader, e)? {
                        found = Some(Found::Attribute {
                            start: before,
                            end: after,
                            value,
                        });
                    } else if element_is_aigc {
                        if is_start {
                            open = Some((after, depth + 1));
                        } else {
                            found = Some(Found::Element {
                                start: after,
                                end: after,
                                value: String::new(),
                            });
                        }
                    }
                }
                if is_start {
                    depth += 1;
                }
            }
            Event::End(ref e) => {
                if let Some((start, d)) = open {
                    if d == depth {
                        let raw = &packet[start..before];
                        let value = quick_xml::escape::unescape(raw)
                            .map(Cow::into_owned)
                            .unwrap_or_else(|_| raw.to_owned());
                        found = Some(Found::Element {
                            start,
                            end: before,
                            value,
                        });
                        open = None;
                    }
                }
                let (ens, local) = reader.resolve_element(e.name());
                if local.as_ref() == b"RDF"
                    && matches!(ens, ResolveResult::Bound(Namespace(NS_RDF)))
                {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    let prefix = name.split_once(':').map_or("", |(p, _)| p).to_owned();
                    rdf_end.get_or_insert((before, prefix));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if open.is_some() {
        return Err(StampError::BadXmp("unclosed TC260:AIGC element".into()));
    }
    Ok((found, rdf_end))
}

fn is_aigc(ns: &ResolveResult<'_>, local: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(Namespace(n)) if *n == NS_TC260.as_bytes())
        && local == b"AIGC"
}

fn aigc_attribute(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
) -> Result<Option<String>, StampError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|e| StampError::BadXmp(e.to_string()))?;
        let (ns, local) = reader.resolve_attribute(attr.key);
        if is_aigc(&ns, local.as_ref()) {
            let v = attr
                .unescape_value()
                .map_err(|e| StampError::BadXmp(e.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// The start (or empty) tag `tag` with its `AIGC` attribute's value replaced by `escaped`;
/// every other attribute is kept as written.
fn retag(tag: &str, escaped: &str) -> Result<String, StampError> {
    let mut reader = NsReader::from_str(tag);
    let (_, ev) = reader
        .read_resolved_event()
        .map_err(|e| StampError::BadXmp(e.to_string()))?;
    let (e, empty) = match ev {
        Event::Start(e) => (e, false),
        Event::Empty(e) => (e, true),
        _ => return Err(StampError::BadXmp("expected a start tag".into())),
    };
    let mut out = format!("<{}", String::from_utf8_lossy(e.name().as_ref()));
    for attr in e.attributes() {
        let attr = attr.map_err(|e| StampError::BadXmp(e.to_string()))?;
        let (ns, local) = reader.resolve_attribute(attr.key);
        let key = String::from_utf8_lossy(attr.key.as_ref());
        let value = if is_aigc(&ns, local.as_ref()) {
            Cow::Borrowed(escaped)
        } else {
            String::from_utf8_lossy(&attr.value)
        };
        out.push_str(&format!(" {key}=\"{}\"", value.replace('"', "&quot;")));
    }
    out.push_str(if empty { "/>" } else { ">" });
    Ok(out)
}

/// XML-escapes text for an element body or a double-quoted attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A new packet holding only the label, with the customary padding for in-place edits.
fn fresh_packet(json: &str) -> String {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  \
         <rdf:Description rdf:about=\"\" xmlns:TC260=\"{NS_TC260}\">\n   \
         <TC260:AIGC>{}</TC260:AIGC>\n  \
         </rdf:Description>\n \
         </rdf:RDF>\n\
         </x:xmpmeta>\n{}<?xpacket end=\"w\"?>",
        escape(json),
        " ".repeat(512)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Tc260Aigc {
        Tc260Aigc {
            label: "3".into(),
            content_producer: String::new(),
            produce_id: String::new(),
            reserved_code1: String::new(),
            content_propagator: "taobao".into(),
            propagate_id: "listing-1/main".into(),
            reserved_code2: "ab12".into(),
        }
    }

    const HEAD: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">"#;
    const TAIL: &str = "</rdf:RDF></x:xmpmeta>";
    const IPTC: &str = r#"<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>"#;

    fn value_in(packet: &str) -> serde_json::Map<String, Value> {
        let (found, _) = locate(packet).unwrap();
        let v = match found.expect("label present") {
            Found::Attribute { value, .. } | Found::Element { value, .. } => value,
        };
        serde_json::from_str(&v).unwrap()
    }

    #[test]
    fn a_new_label_takes_all_fields_from_ours_in_the_standards_order() {
        let (packet, label, had) = updated_packet(None, &ours()).unwrap();
        assert!(!had);
        assert_eq!(label, ours());
        let json = serde_json::to_string(&value_in(&packet)).unwrap();
        assert!(
            json.contains("\"PropagateID\":\"listing-1/main\""),
            "{json}"
        );
        let inner = &packet[packet.find("<TC260:AIGC>").unwrap()..];
        let order: Vec<usize> = FIELDS.iter().map(|f| inner.find(f).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{inner}");
    }

    #[test]
    fn the_producers_fields_and_other_properties_are_kept() {
        for form in [
            // attribute form, with entities
            r#"<rdf:Description rdf:about="" xmlns:tc="http://www.tc260.org.cn/ns/AIGC/1.0/" tc:AIGC="{&quot;Label&quot;:&quot;1&quot;,&quot;ContentProducer&quot;:&quot;producer-9&quot;,&quot;ProduceID&quot;:&quot;p-1&quot;,&quot;Extra&quot;:&quot;x&quot;}"/>"#,
            // element form
            r#"<rdf:Description rdf:about="" xmlns:TC260="http://www.tc260.org.cn/ns/AIGC/1.0/"><TC260:AIGC>{"Label":"1","ContentProducer":"producer-9","ProduceID":"p-1","Extra":"x"}</TC260:AIGC></rdf:Description>"#,
        ] {
            let old = format!("{HEAD}{IPTC}{form}{TAIL}");
            let (packet, label, had) = updated_packet(Some(&old), &ours()).unwrap();
            assert!(had, "{form}");
            assert!(packet.contains(IPTC), "{packet}");
            let v = value_in(&packet);
            assert_eq!(v["Label"], "1");
            assert_eq!(v["ContentProducer"], "producer-9");
            assert_eq!(v["ProduceID"], "p-1");
            assert_eq!(v["Extra"], "x");
            assert_eq!(v["ContentPropagator"], "taobao");
            assert_eq!(v["PropagateID"], "listing-1/main");
            assert_eq!(label.label, "1");
            assert_eq!(label.content_producer, "producer-9");
            assert_eq!(label.reserved_code2, "ab12");
            // Stamping the result again changes nothing.
            let (again, _, _) = updated_packet(Some(&packet), &ours()).unwrap();
            assert_eq!(again, packet);
        }
    }

    #[test]
    fn a_packet_without_the_label_gains_a_description() {
        let old = format!("{HEAD}{IPTC}{TAIL}");
        let (packet, _, had) = updated_packet(Some(&old), &ours()).unwrap();
        assert!(!had);
        assert!(packet.starts_with(&format!("{HEAD}{IPTC}")), "{packet}");
        assert!(packet.ends_with(TAIL));
        assert_eq!(value_in(&packet)["Label"], "3");
    }

    #[test]
    fn broken_xmp_is_refused_rather_than_rewritten() {
        let old = format!("{HEAD}<rdf:Description>{TAIL}");
        assert!(matches!(
            updated_packet(Some(&old), &ours()),
            Err(StampError::BadXmp(_))
        ));
        assert!(matches!(
            updated_packet(Some("<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>"), &ours()),
            Err(StampError::BadXmp(_))
        ));
    }

    #[test]
    fn containers_are_checked() {
        assert_eq!(
            stamp(b"RIFF....WEBP", &ours()),
            Err(StampError::UnsupportedFormat)
        );
        assert!(matches!(
            stamp(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x40, 1, 2], &ours()),
            Err(StampError::Malformed { format: "JPEG", .. })
        ));
        let mut png = PNG_SIG.to_vec();
        png.extend_from_slice(&[0, 0, 0, 13, b'I', b'H', b'D', b'R']);
        assert!(matches!(
            stamp(&png, &ours()),
            Err(StampError::Malformed { format: "PNG", .. })
        ));
    }
}
