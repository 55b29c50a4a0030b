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

use lg_events::Tc260Aigc;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use serde_json::value::RawValue;
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
    /// The existing label is not a JSON object, so the producer's fields cannot be kept; it
    /// is not overwritten.
    #[error("the file's TC260:AIGC value is not a JSON object: {0}")]
    BadLabel(String),
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
/// Where the file has several XMP packets, the one holding the label is edited (else the first).
pub fn stamp(bytes: &[u8], ours: &Tc260Aigc) -> Result<Stamped, StampError> {
    if bytes.starts_with(PNG_SIG) {
        let chunks = png_chunks(bytes)?;
        let packets = chunks
            .iter()
            .filter(|c| c.is_xmp_in(bytes))
            .map(|c| Ok((c, c.xmp_text(bytes)?)))
            .collect::<Result<Vec<_>, StampError>>()?;
        let chosen = choose(&packets);
        let old = chosen.map(|(_, text)| text.as_str());
        let (packet, label, had_label) = updated_packet(old, ours)?;
        let chunk = itxt_chunk(&packet);
        let (cut_start, cut_end) = match chosen {
            Some((c, _)) => (c.start, c.end),
            None => {
                let at = chunks
                    .iter()
                    .find(|c| c.kind == *b"IDAT")
                    .map(|c| c.start)
                    .ok_or_else(|| malformed("PNG", "no IDAT chunk"))?;
                (at, at)
            }
        };
        Ok(Stamped {
            bytes: splice(bytes, cut_start, cut_end, &chunk),
            label,
            had_label,
        })
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let segments = jpeg_segments(bytes)?;
        let packets = segments
            .iter()
            .filter(|s| s.is_xmp(bytes))
            .map(|s| {
                let payload = &bytes[s.start + 4 + JPEG_XMP_HEADER.len()..s.end];
                let text = std::str::from_utf8(payload)
                    .map_err(|_| StampError::BadXmp("the XMP packet is not UTF-8".into()))?;
                Ok((s, text.to_owned()))
            })
            .collect::<Result<Vec<_>, StampError>>()?;
        let chosen = choose(&packets);
        let (packet, label, had_label) = updated_packet(chosen.map(|(_, t)| t.as_str()), ours)?;
        if packet.len() > MAX_JPEG_XMP {
            return Err(StampError::XmpTooLarge(packet.len()));
        }
        let seg_len = 2 + JPEG_XMP_HEADER.len() + packet.len();
        let mut segment = Vec::with_capacity(seg_len + 2);
        segment.extend_from_slice(&[0xFF, 0xE1]);
        segment.extend_from_slice(&u16::try_from(seg_len).expect("checked").to_be_bytes());
        segment.extend_from_slice(JPEG_XMP_HEADER);
        segment.extend_from_slice(packet.as_bytes());
        let (cut_start, cut_end) = match chosen {
            Some((s, _)) => (s.start, s.end),
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
        Ok(Stamped {
            bytes: splice(bytes, cut_start, cut_end, &segment),
            label,
            had_label,
        })
    } else {
        Err(StampError::UnsupportedFormat)
    }
}

/// The packet holding a `TC260:AIGC` property, else the first.
fn choose<T>(packets: &[(T, String)]) -> Option<&(T, String)> {
    packets
        .iter()
        .find(|(_, text)| {
            let (_, body) = split_bom(text);
            locate(body).is_ok_and(|l| l.found.is_some())
        })
        .or_else(|| packets.first())
}

/// `bytes` with `start..end` replaced by `with`.
fn splice(bytes: &[u8], start: usize, end: usize, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + with.len());
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&bytes[end..]);
    out
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
        let utf8 = |b: Vec<u8>| {
            String::from_utf8(b)
                .map_err(|_| StampError::BadXmp("the XMP packet is not UTF-8".into()))
        };
        if compressed == 0 {
            return utf8(text.to_vec());
        }
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(text)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut out)
            .map_err(|e| malformed("PNG", format!("XMP iTXt does not inflate: {e}")))?;
        if out.len() as u64 > MAX_INFLATED {
            return Err(malformed("PNG", "compressed XMP inflates past 4 MiB"));
        }
        utf8(out)
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
#[derive(Debug)]
enum Found {
    /// The value lies at `start..end` (inside an attribute's quotes, or between an element's
    /// tags) and is replaced there.
    Value {
        start: usize,
        end: usize,
        value: String,
    },
    /// An empty property element `<P:AIGC/>` (perhaps with `rdf:resource`) at `start..end`,
    /// replaced by `<name>value</name>`.
    EmptyElement {
        start: usize,
        end: usize,
        name: String,
        value: String,
    },
}

/// Where a new `rdf:Description` can go.
#[derive(Debug)]
enum RdfSpot {
    /// Before `</rdf:RDF>` at this offset.
    BeforeEnd(usize),
    /// The empty `<rdf:RDF .../>` tag at `start..end`.
    Empty { start: usize, end: usize },
    /// No `rdf:RDF` element.
    Missing,
}

/// What [`locate`] found.
#[derive(Debug)]
struct Located {
    found: Option<Found>,
    rdf: RdfSpot,
    /// `rdf:about` of the first `rdf:Description`: every top-level description must share it.
    about: String,
}

/// A leading byte-order mark, and the rest (positions are taken after the mark).
fn split_bom(packet: &str) -> (&str, &str) {
    match packet.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", packet),
    }
}

/// The updated packet, the label it now carries, and whether one was there before.
fn updated_packet(
    old: Option<&str>,
    ours: &Tc260Aigc,
) -> Result<(String, Tc260Aigc, bool), StampError> {
    let Some(old) = old else {
        let (json, label) = merged(None, ours)?;
        return Ok((fresh_packet(&json, ""), label, false));
    };
    let (bom, body) = split_bom(old);
    let located = locate(body)?;
    // An empty property is no label.
    let existing = located
        .found
        .as_ref()
        .map(|f| match f {
            Found::Value { value, .. } | Found::EmptyElement { value, .. } => value.as_str(),
        })
        .filter(|v| !v.trim().is_empty());
    let (json, label) = merged(existing, ours)?;
    let escaped = escape(&json);
    let had = existing.is_some();
    let packet = match located.found {
        Some(Found::Value { start, end, .. }) => {
            format!("{bom}{}{escaped}{}", &body[..start], &body[end..])
        }
        Some(Found::EmptyElement {
            start, end, name, ..
        }) => format!(
            "{bom}{}<{name}>{escaped}</{name}>{}",
            &body[..start],
            &body[end..]
        ),
        None => {
            let description = description(&escaped, &located.about);
            match located.rdf {
                RdfSpot::BeforeEnd(at) => {
                    format!("{bom}{}{description}{}", &body[..at], &body[at..])
                }
                RdfSpot::Empty { start, end } => {
                    let tag = &body[start..end];
                    let open = tag.trim_end().trim_end_matches("/>").trim_end();
                    let name = open[1..].split_whitespace().next().unwrap_or("rdf:RDF");
                    format!(
                        "{bom}{}{open}>{description}</{name}>{}",
                        &body[..start],
                        &body[end..]
                    )
                }
                // A wrapper without RDF holds no properties: a fresh packet replaces it.
                RdfSpot::Missing => fresh_packet(&json, ""),
            }
        }
    };
    Ok((packet, label, had))
}

/// A top-level description holding only the label. It declares its own prefixes, so it reads
/// the same whatever the packet binds `rdf` or `TC260` to (or whether RDF is the default
/// namespace).
fn description(escaped: &str, about: &str) -> String {
    format!(
        "<rdf:Description xmlns:rdf=\"{}\" rdf:about=\"{}\" xmlns:TC260=\"{NS_TC260}\"><TC260:AIGC>{escaped}</TC260:AIGC></rdf:Description>",
        String::from_utf8_lossy(NS_RDF),
        escape(about)
    )
}

/// The label JSON: the existing producer fields and unknown fields (their JSON text kept
/// exactly), our propagator fields, in the standard's field order (unknown fields after).
fn merged(existing: Option<&str>, ours: &Tc260Aigc) -> Result<(String, Tc260Aigc), StampError> {
    type Raw = std::collections::BTreeMap<String, Box<RawValue>>;
    let theirs: Raw = match existing {
        None => Raw::new(),
        Some(v) => serde_json::from_str(v.trim()).map_err(|e| {
            StampError::BadLabel(format!("{e}; the producer's value is left as it is"))
        })?,
    };
    let ours_map = match serde_json::to_value(ours) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let pick = |k: &str| -> String {
        match theirs.get(k) {
            Some(raw) if !PROPAGATOR_FIELDS.contains(&k) => raw.get().to_owned(),
            _ => ours_map
                .get(k)
                .cloned()
                .unwrap_or(Value::String(String::new()))
                .to_string(),
        }
    };
    let mut body: Vec<String> = FIELDS
        .iter()
        .map(|k| format!("{}:{}", Value::String((*k).to_owned()), pick(k)))
        .collect();
    body.extend(
        theirs
            .iter()
            .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
            .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v.get())),
    );
    let json = format!("{{{}}}", body.join(","));
    let text = |k: &str| {
        let raw = pick(k);
        serde_json::from_str::<String>(&raw).unwrap_or(raw)
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
    Ok((json, label))
}

/// Finds the first `TC260:AIGC` property (by namespace, any prefix; attribute, element or empty
/// element form), where a new description could go, and the packet's `rdf:about`.
fn locate(packet: &str) -> Result<Located, StampError> {
    let bad = |e: &dyn std::fmt::Display| StampError::BadXmp(e.to_string());
    let mut reader = NsReader::from_str(packet);
    let mut found = None;
    let mut rdf = RdfSpot::Missing;
    let mut about: Option<String> = None;
    // An open AIGC element: content start, its depth, text so far.
    let mut open: Option<(usize, usize, String)> = None;
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).expect("fits");
        let (ns, ev) = reader.read_resolved_event().map_err(|e| bad(&e))?;
        let (element_is_aigc, element_is_rdf, element_is_description) = match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let l = e.local_name();
                let rdf_ns = matches!(ns, ResolveResult::Bound(Namespace(n)) if n == NS_RDF);
                (
                    is_aigc(&ns, l.as_ref()),
                    rdf_ns && l.as_ref() == b"RDF",
                    rdf_ns && l.as_ref() == b"Description",
                )
            }
            _ => (false, false, false),
        };
        let after = usize::try_from(reader.buffer_position()).expect("fits");
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(ev, Event::Start(_));
                if open.is_some() {
                    return Err(StampError::BadXmp(
                        "TC260:AIGC holds nested markup, not a JSON string; not edited".into(),
                    ));
                }
                if element_is_description && about.is_none() {
                    about = Some(rdf_about(&reader, e)?.unwrap_or_default());
                }
                if element_is_rdf && !is_start {
                    rdf = RdfSpot::Empty {
                        start: before,
                        end: after,
                    };
                }
                if found.is_none() {
                    let tag = &packet[before..after];
                    if let Some((key, value)) = aigc_attribute(&reader, e)? {
                        let (start, end) = attr_value_range(tag, &key).ok_or_else(|| {
                            StampError::BadXmp(format!("cannot find the {key} attribute's value"))
                        })?;
                        found = Some(Found::Value {
                            start: before + start,
                            end: before + end,
                            value,
                        });
                    } else if element_is_aigc {
                        if is_start {
                            open = Some((after, depth + 1, String::new()));
                        } else {
                            found = Some(Found::EmptyElement {
                                start: before,
                                end: after,
                                name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                                value: rdf_resource(&reader, e)?.unwrap_or_default(),
                            });
                        }
                    }
                }
                if is_start {
                    depth += 1;
                }
            }
            Event::Text(t) => {
                if let Some((_, _, buf)) = open.as_mut() {
                    buf.push_str(&t.unescape().map_err(|e| bad(&e))?);
                }
            }
            Event::CData(t) => {
                if let Some((_, _, buf)) = open.as_mut() {
                    buf.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(ref e) => {
                if let Some((start, d, value)) = open.take() {
                    if d == depth {
                        found = Some(Found::Value {
                            start,
                            end: before,
                            value,
                        });
                    } else {
                        open = Some((start, d, value));
                    }
                }
                let (ens, local) = reader.resolve_element(e.name());
                if local.as_ref() == b"RDF"
                    && matches!(ens, ResolveResult::Bound(Namespace(n)) if n == NS_RDF)
                    && matches!(rdf, RdfSpot::Missing)
                {
                    rdf = RdfSpot::BeforeEnd(before);
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
    Ok(Located {
        found,
        rdf,
        about: about.unwrap_or_default(),
    })
}

fn is_aigc(ns: &ResolveResult<'_>, local: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(Namespace(n)) if *n == NS_TC260.as_bytes())
        && local == b"AIGC"
}

/// The `AIGC` attribute in the TC260 namespace: its raw name as written and its value.
fn aigc_attribute(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
) -> Result<Option<(String, String)>, StampError> {
    rdf_attribute(reader, e, is_aigc)
}

fn rdf_about(reader: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Result<Option<String>, StampError> {
    Ok(rdf_attribute(reader, e, |ns, l| is_rdf(ns, l, b"about"))?.map(|(_, v)| v))
}

fn rdf_resource(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
) -> Result<Option<String>, StampError> {
    Ok(rdf_attribute(reader, e, |ns, l| is_rdf(ns, l, b"resource"))?.map(|(_, v)| v))
}

fn is_rdf(ns: &ResolveResult<'_>, local: &[u8], name: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(Namespace(n)) if *n == NS_RDF) && local == name
}

/// The first attribute whose resolved name satisfies `want`: raw name and unescaped value.
fn rdf_attribute(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    want: impl Fn(&ResolveResult<'_>, &[u8]) -> bool,
) -> Result<Option<(String, String)>, StampError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|e| StampError::BadXmp(e.to_string()))?;
        let (ns, local) = reader.resolve_attribute(attr.key);
        if want(&ns, local.as_ref()) {
            let v = attr
                .unescape_value()
                .map_err(|e| StampError::BadXmp(e.to_string()))?;
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            return Ok(Some((key, v.into_owned())));
        }
    }
    Ok(None)
}

/// The byte range of attribute `key`'s value (inside its quotes) within the tag text `tag`.
fn attr_value_range(tag: &str, key: &str) -> Option<(usize, usize)> {
    let bytes = tag.as_bytes();
    let mut from = 0;
    while let Some(i) = tag[from..].find(key).map(|i| i + from) {
        from = i + key.len();
        if !bytes
            .get(i.wrapping_sub(1))
            .is_some_and(u8::is_ascii_whitespace)
        {
            continue;
        }
        let rest = tag[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let quote = rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            continue;
        }
        let start = tag.len() - rest.len() + 1;
        let end = start + tag[start..].find(quote)?;
        return Some((start, end));
    }
    None
}

/// XML-escapes text for an element body or a quoted attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A new packet holding only the label, with the customary padding for in-place edits.
fn fresh_packet(json: &str, about: &str) -> String {
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  \
         <rdf:Description rdf:about=\"{}\" xmlns:TC260=\"{NS_TC260}\">\n   \
         <TC260:AIGC>{}</TC260:AIGC>\n  \
         </rdf:Description>\n \
         </rdf:RDF>\n\
         </x:xmpmeta>\n{}<?xpacket end=\"w\"?>",
        escape(about),
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
        let located = locate(split_bom(packet).1).unwrap();
        let v = match located.found.expect("label present") {
            Found::Value { value, .. } | Found::EmptyElement { value, .. } => value,
        };
        serde_json::from_str(&v).unwrap()
    }

    const PRODUCER: &str = r#"{"Label":"1","ContentProducer":"producer-9","ProduceID":"p-1"}"#;

    /// Stamps `old`, checks the producer's fields survived, the result reads back and a second
    /// stamp changes nothing.
    fn producer_kept(old: &str) -> String {
        let (packet, label, had) = updated_packet(Some(old), &ours()).unwrap();
        assert!(had, "{old}");
        assert_eq!(label.content_producer, "producer-9", "{packet}");
        let v = value_in(&packet);
        assert_eq!(v["Label"], "1", "{packet}");
        assert_eq!(v["PropagateID"], "listing-1/main", "{packet}");
        let (again, _, _) = updated_packet(Some(&packet), &ours()).unwrap();
        assert_eq!(again, packet);
        packet
    }

    #[test]
    fn awkward_but_valid_packets_are_edited_in_place() {
        let esc = PRODUCER.replace('"', "&quot;");
        let ns = r#"xmlns:TC260="http://www.tc260.org.cn/ns/AIGC/1.0/""#;
        // A byte-order mark before the packet, and multi-byte text after the label.
        let p = producer_kept(&format!(
            "\u{feff}{HEAD}<rdf:Description {ns} TC260:AIGC=\"{esc}\" dc:title=\"生成 🎨\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\"/>{TAIL}"
        ));
        assert!(p.starts_with('\u{feff}') && p.contains("生成 🎨"));
        // The prefix bound on rdf:RDF, the attribute in single quotes.
        producer_kept(&format!(
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" {ns}><rdf:Description rdf:about='' TC260:AIGC='{esc}'/>{TAIL}"
        ));
        // CDATA, and an rdf:resource on an empty property element.
        producer_kept(&format!(
            "{HEAD}<rdf:Description {ns}><TC260:AIGC><![CDATA[{PRODUCER}]]></TC260:AIGC></rdf:Description>{TAIL}"
        ));
        producer_kept(&format!(
            "{HEAD}<rdf:Description {ns}><TC260:AIGC rdf:resource=\"{esc}\"/></rdf:Description>{TAIL}"
        ));
        // An empty property element gains the value as its content.
        let (p, _, had) = updated_packet(
            Some(&format!(
                "{HEAD}<rdf:Description {ns}><TC260:AIGC/></rdf:Description>{TAIL}"
            )),
            &ours(),
        )
        .unwrap();
        assert!(!had);
        assert_eq!(value_in(&p)["Label"], "3", "{p}");
        assert!(p.contains("<TC260:AIGC>{"), "{p}");
    }

    #[test]
    fn producer_numbers_keep_their_exact_text() {
        let old = format!(
            "{HEAD}<rdf:Description xmlns:TC260=\"http://www.tc260.org.cn/ns/AIGC/1.0/\"><TC260:AIGC>{{\"Label\":1,\"ContentProducer\":\"producer-9\",\"Big\":18446744073709551617,\"F\":1e400}}</TC260:AIGC></rdf:Description>{TAIL}"
        );
        let (p, label, _) = updated_packet(Some(&old), &ours()).unwrap();
        let p = p.replace("&quot;", "\"");
        assert!(p.contains("\"Label\":1,"), "{p}");
        assert!(p.contains("\"Big\":18446744073709551617"), "{p}");
        assert!(p.contains("\"F\":1e400"), "{p}");
        assert_eq!(label.label, "1");
    }

    #[test]
    fn a_label_that_is_not_a_json_object_is_not_overwritten() {
        for v in ["not json", "[1,2]", "\"1\""] {
            let old = format!(
                "{HEAD}<rdf:Description xmlns:TC260=\"http://www.tc260.org.cn/ns/AIGC/1.0/\"><TC260:AIGC>{v}</TC260:AIGC></rdf:Description>{TAIL}"
            );
            assert!(
                matches!(
                    updated_packet(Some(&old), &ours()),
                    Err(StampError::BadLabel(_))
                ),
                "{v}"
            );
        }
        let nested = format!(
            "{HEAD}<rdf:Description xmlns:TC260=\"http://www.tc260.org.cn/ns/AIGC/1.0/\"><TC260:AIGC><rdf:Alt><rdf:li>{PRODUCER}</rdf:li></rdf:Alt></TC260:AIGC></rdf:Description>{TAIL}"
        );
        assert!(matches!(
            updated_packet(Some(&nested), &ours()),
            Err(StampError::BadXmp(_))
        ));
    }

    #[test]
    fn empty_rdf_and_default_namespace_rdf_gain_a_self_contained_description() {
        for old in [
            r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>"#,
            r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"/>"#,
            r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><RDF xmlns="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><Description about="uuid:1"/></RDF></x:xmpmeta>"#,
        ] {
            let (p, _, had) = updated_packet(Some(old), &ours()).unwrap();
            assert!(!had);
            assert_eq!(value_in(&p)["PropagateID"], "listing-1/main", "{p}");
        }
        let (p, _, _) = updated_packet(
            Some(r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><RDF xmlns="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><Description xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" rdf:about="uuid:1"/></RDF></x:xmpmeta>"#),
            &ours(),
        )
        .unwrap();
        assert!(p.contains(r#"rdf:about="uuid:1" xmlns:TC260"#), "{p}");
    }

    #[test]
    fn the_packet_holding_the_label_is_the_one_edited() {
        let jpeg_with = |packets: &[String]| {
            let mut b = vec![0xFF, 0xD8];
            for p in packets {
                let len = 2 + JPEG_XMP_HEADER.len() + p.len();
                b.extend_from_slice(&[0xFF, 0xE1]);
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(JPEG_XMP_HEADER);
                b.extend_from_slice(p.as_bytes());
            }
            b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9]);
            b
        };
        let first = format!("{HEAD}{IPTC}{TAIL}");
        let second = format!(
            "{HEAD}<rdf:Description xmlns:TC260=\"http://www.tc260.org.cn/ns/AIGC/1.0/\"><TC260:AIGC>{PRODUCER}</TC260:AIGC></rdf:Description>{TAIL}"
        );
        let file = jpeg_with(&[first.clone(), second]);
        let out = stamp(&file, &ours()).unwrap();
        assert!(out.had_label);
        assert_eq!(out.label.content_producer, "producer-9");
        let text = String::from_utf8_lossy(&out.bytes);
        assert!(text.contains(&first), "the first packet is untouched");
        assert_eq!(
            text.matches("AIGC>").count(),
            2,
            "one label element: {text}"
        );
        // A packet that is not UTF-8 is refused, not rewritten lossily.
        let latin1 = jpeg_with(&[]);
        let mut bad = latin1[..2].to_vec();
        let p = b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">Jos\xe9</x:xmpmeta>";
        let len = 2 + JPEG_XMP_HEADER.len() + p.len();
        bad.extend_from_slice(&[0xFF, 0xE1]);
        bad.extend_from_slice(&(len as u16).to_be_bytes());
        bad.extend_from_slice(JPEG_XMP_HEADER);
        bad.extend_from_slice(p);
        bad.extend_from_slice(&latin1[2..]);
        assert!(matches!(stamp(&bad, &ours()), Err(StampError::BadXmp(_))));
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
