//! C2PA manifests, read with the `c2pa` crate (the Content Authenticity Initiative's own SDK).
//!
//! Built without network features: a manifest that is only referenced by URL is reported as
//! [`MarkerKind::C2paRemoteManifest`] and never fetched.

use std::io::Cursor;

use c2pa::{Context, Reader};
use lg_events::{Marker, MarkerKind};

use super::container::find;
use super::{marker, source_type_declares_ai};

pub(crate) fn read(bytes: &[u8], markers: &mut Vec<Marker>) {
    // Cheap pre-check: every embedded manifest store carries the JUMBF label "c2pa", and a remote
    // reference sits in XMP `dcterms:provenance`. Most product photos have neither.
    if find(bytes, b"c2pa").is_none() && find(bytes, b"provenance").is_none() {
        return;
    }
    let Some(mime) = mime(bytes) else { return };
    match Reader::from_context(Context::new()).with_stream(mime, Cursor::new(bytes)) {
        Ok(reader) => markers.push(manifest_marker(&reader)),
        Err(c2pa::Error::JumbfNotFound | c2pa::Error::ProvenanceMissing) => {}
        Err(c2pa::Error::RemoteManifestUrl(url)) => markers.push(marker(
            MarkerKind::C2paRemoteManifest,
            false,
            None,
            format!("C2PA manifest referenced by URL (not fetched): {url}"),
        )),
        Err(e) => markers.push(marker(
            MarkerKind::C2paInvalid,
            false,
            None,
            format!("C2PA data present but unreadable: {e}"),
        )),
    }
}

fn manifest_marker(reader: &Reader) -> Marker {
    let Some(m) = reader.active_manifest() else {
        return marker(
            MarkerKind::C2paManifest,
            false,
            None,
            "C2PA manifest store without an active manifest".into(),
        );
    };
    let generator = m
        .claim_generator_info
        .as_ref()
        .and_then(|v| v.first())
        .map(|g| g.name.clone())
        .or_else(|| m.claim_generator().map(str::to_owned));
    let mut source_types = Vec::new();
    for a in m.assertions() {
        if a.label().starts_with("c2pa.actions") {
            if let Ok(v) = a.value() {
                collect_source_types(v, &mut source_types);
            }
        }
    }
    let declares = source_types.iter().any(|s| source_type_declares_ai(s));
    let mut evidence = format!(
        "C2PA manifest {} (validation: {:?})",
        m.label().unwrap_or("?"),
        reader.validation_state()
    );
    if let Some(g) = &generator {
        evidence.push_str(&format!(", claim generator {g}"));
    }
    for s in &source_types {
        evidence.push_str(&format!(", digitalSourceType {s}"));
    }
    marker(MarkerKind::C2paManifest, declares, generator, evidence)
}

fn collect_source_types(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("digitalSourceType", serde_json::Value::String(s)) => {
                        if !out.contains(s) {
                            out.push(s.clone());
                        }
                    }
                    _ => collect_source_types(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_source_types(v, out)),
        _ => {}
    }
}

fn mime(bytes: &[u8]) -> Option<&'static str> {
    Some(match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'G', b'I', b'F', ..] => "image/gif",
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => "image/tiff",
        [_, _, _, _, b'f', b't', b'y', b'p', b'a', b'v', b'i', b'f', ..] => "image/avif",
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => "image/heic",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types_are_found_at_any_depth() {
        let v = serde_json::json!({"actions": [
            {"action": "c2pa.created", "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"},
            {"action": "c2pa.edited", "parameters": {"ingredient": {"digitalSourceType": "x"}}}
        ]});
        let mut out = Vec::new();
        collect_source_types(&v, &mut out);
        assert_eq!(out.len(), 2);
        assert!(source_type_declares_ai(&out[0]));
    }

    #[test]
    fn files_without_c2pa_are_skipped_cheaply() {
        let mut m = Vec::new();
        read(b"\xFF\xD8\xFF\xD9", &mut m);
        read(b"", &mut m);
        assert!(m.is_empty());
    }
}
