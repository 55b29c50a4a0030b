//! XMP: IPTC `DigitalSourceType` and the GB 45438 `TC260:AIGC` label.
//!
//! Properties are matched by namespace URI, not prefix, and read in all three RDF spellings:
//! an attribute of `rdf:Description`, an element with text, or an element with `rdf:resource`.

use lg_events::{Marker, MarkerKind};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use super::{marker, source_type_declares_ai};

const NS_IPTC_EXT: &[u8] = b"http://iptc.org/std/Iptc4xmpExt/2008-02-29/";
/// GB 45438-2025 namespace for the implicit label.
pub(crate) const NS_TC260: &[u8] = b"http://www.tc260.org.cn/ns/AIGC/1.0/";
const NS_RDF: &[u8] = b"http://www.w3.org/1999/02/22-rdf-syntax-ns#";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prop {
    DigitalSourceType,
    Aigc,
}

fn prop(ns: &ResolveResult<'_>, local: &[u8]) -> Option<Prop> {
    let ResolveResult::Bound(Namespace(ns)) = ns else {
        return None;
    };
    match (*ns, local) {
        (NS_IPTC_EXT, b"DigitalSourceType") => Some(Prop::DigitalSourceType),
        (NS_TC260, b"AIGC") => Some(Prop::Aigc),
        // Writers vary the TC260 namespace URI (a trailing slash, `https`, another version):
        // any namespace of TC260's with an `AIGC` property is the label.
        (ns, b"AIGC") if contains_ignore_case(ns, b"tc260") => Some(Prop::Aigc),
        _ => None,
    }
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Reads the properties of one XMP packet into markers. Malformed XML yields what was read
/// before the error.
pub(crate) fn read(packet: &str, markers: &mut Vec<Marker>) {
    for (p, value) in properties(packet) {
        match p {
            Prop::DigitalSourceType => markers.push(marker(
                MarkerKind::IptcDigitalSourceType,
                source_type_declares_ai(&value),
                None,
                format!("XMP Iptc4xmpExt:DigitalSourceType = {value}"),
            )),
            Prop::Aigc => markers.push(aigc_marker(&value, "XMP TC260:AIGC")),
        }
    }
}

fn properties(packet: &str) -> Vec<(Prop, String)> {
    let mut reader = NsReader::from_str(packet);
    let mut found = Vec::new();
    // (property, depth at which it opened, text collected so far)
    let mut open: Option<(Prop, usize, String)> = None;
    let mut depth = 0usize;
    while let Ok((ns, ev)) = reader.read_resolved_event() {
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(ev, Event::Start(_));
                let element_prop = prop(&ns, e.local_name().as_ref());
                attributes(&reader, e, element_prop, &mut found);
                if is_start {
                    depth += 1;
                    if let (Some(p), None) = (element_prop, &open) {
                        open = Some((p, depth, String::new()));
                    }
                }
            }
            Event::Text(t) => {
                if let Some((_, _, buf)) = open.as_mut() {
                    if let Ok(s) = t.unescape() {
                        buf.push_str(&s);
                    }
                }
            }
            Event::CData(t) => {
                if let Some((_, _, buf)) = open.as_mut() {
                    buf.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                if let Some((p, d, buf)) = open.take() {
                    if d == depth {
                        if !buf.trim().is_empty() {
                            found.push((p, buf.trim().to_owned()));
                        }
                    } else {
                        open = Some((p, d, buf));
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    found
}

/// Property-valued attributes, and `rdf:resource` on a property element.
fn attributes(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    element_prop: Option<Prop>,
    found: &mut Vec<(Prop, String)>,
) {
    for attr in e.attributes().flatten() {
        let (ns, local) = reader.resolve_attribute(attr.key);
        let Ok(value) = attr.unescape_value() else {
            continue;
        };
        if let Some(p) = prop(&ns, local.as_ref()) {
            found.push((p, value.trim().to_owned()));
        } else if let (Some(p), ResolveResult::Bound(Namespace(NS_RDF)), b"resource") =
            (element_prop, &ns, local.as_ref())
        {
            found.push((p, value.trim().to_owned()));
        }
    }
}

/// Builds the marker for a `TC260:AIGC` value: a JSON object in a string, either the label's
/// fields (`{"Label":"1",...}`) or wrapped (`{"AIGC":{"Label":"1",...}}`), keys in any case.
///
/// `Label` 1 (AI-generated) and 2 (possibly AI-generated) declare AI; 3 (suspected) does not
/// by itself. The value is kept ([`Marker::aigc_label`]) and the policy maps each. A value that is
/// not the expected JSON is still reported, without a declaration.
pub(crate) fn aigc_marker(value: &str, location: &str) -> Marker {
    let Some(obj) = aigc_object(value) else {
        return marker(
            MarkerKind::Tc260Aigc,
            false,
            None,
            format!("{location} present but not JSON: {value}"),
        );
    };
    let field = |k: &str| match obj.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)) {
        Some((_, serde_json::Value::String(s))) => Some(s.trim().to_owned()),
        Some((_, serde_json::Value::Number(n))) => Some(n.to_string()),
        _ => None,
    };
    let label = field("Label").unwrap_or_default();
    let declares = matches!(label.as_str(), "1" | "2");
    let producer = field("ContentProducer").filter(|s| !s.is_empty());
    let mut evidence = format!("{location} Label={label}");
    for k in [
        "ContentProducer",
        "ProduceID",
        "ContentPropagator",
        "PropagateID",
    ] {
        if let Some(v) = field(k).filter(|v| !v.is_empty()) {
            evidence.push_str(&format!(" {k}={v}"));
        }
    }
    let mut m = marker(MarkerKind::Tc260Aigc, declares, producer, evidence);
    m.aigc_label = Some(label).filter(|l| !l.is_empty());
    m
}

/// The label's fields: the object itself, or the one under an `AIGC` key. Entities escaped
/// twice (`&amp;quot;` in the XMP) are undone once more.
fn aigc_object(value: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let parse =
        |v: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(v.trim()).ok();
    let obj = parse(value).or_else(|| {
        value
            .contains("&quot;")
            .then(|| value.replace("&quot;", "\"").replace("&amp;", "&"))
            .and_then(|v| parse(&v))
    })?;
    let wrapped = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("AIGC"))
        .and_then(|(_, v)| match v {
            serde_json::Value::Object(inner) => Some(inner.clone()),
            // The wrapper's value may itself be a JSON string.
            serde_json::Value::String(s) => parse(s),
            _ => None,
        });
    Some(wrapped.unwrap_or(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(packet: &str, expected: &[(MarkerKind, bool, Option<&str>)]) {
        let mut m = Vec::new();
        read(packet, &mut m);
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.kind, m.declares_ai, m.generator.as_deref()))
            .collect();
        assert_eq!(got, expected, "{m:?}");
    }

    const HEAD: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">"#;
    const TAIL: &str = "</rdf:RDF></x:xmpmeta>";

    #[test]
    fn table() {
        use MarkerKind::*;
        let iptc = r#"xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/""#;
        let tc = r#"xmlns:TC260="http://www.tc260.org.cn/ns/AIGC/1.0/""#;
        check(
            &format!(
                r#"{HEAD}<rdf:Description {iptc} Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>{TAIL}"#
            ),
            &[(IptcDigitalSourceType, true, None)],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description {iptc}><Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia</Iptc4xmpExt:DigitalSourceType></rdf:Description>{TAIL}"#
            ),
            &[(IptcDigitalSourceType, false, None)],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description {iptc}><Iptc4xmpExt:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"/></rdf:Description>{TAIL}"#
            ),
            &[(IptcDigitalSourceType, true, None)],
        );
        // Prefix does not matter, the namespace does.
        check(
            &format!(
                r#"{HEAD}<rdf:Description xmlns:ie="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" ie:DigitalSourceType="trainedAlgorithmicMedia"/>{TAIL}"#
            ),
            &[(IptcDigitalSourceType, true, None)],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description xmlns:Iptc4xmpExt="http://example.com/other/" Iptc4xmpExt:DigitalSourceType="trainedAlgorithmicMedia"/>{TAIL}"#
            ),
            &[],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description {tc} TC260:AIGC="{{&quot;Label&quot;:&quot;1&quot;,&quot;ContentProducer&quot;:&quot;001191110108MA01KP2T5U00000&quot;,&quot;ProduceID&quot;:&quot;abc&quot;}}"/>{TAIL}"#
            ),
            &[(Tc260Aigc, true, Some("001191110108MA01KP2T5U00000"))],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description {tc}><TC260:AIGC>{{"Label":"3","ContentProducer":""}}</TC260:AIGC></rdf:Description>{TAIL}"#
            ),
            &[(Tc260Aigc, false, None)],
        );
        // Another spelling of TC260's namespace, and the wrapped form.
        check(
            &format!(
                r#"{HEAD}<rdf:Description xmlns:tc="https://www.tc260.org.cn/ns/AIGC/1.0"><tc:AIGC>{{"AIGC":{{"label":2,"ContentProducer":"p"}}}}</tc:AIGC></rdf:Description>{TAIL}"#
            ),
            &[(Tc260Aigc, true, Some("p"))],
        );
        check(
            &format!(
                r#"{HEAD}<rdf:Description {tc}><TC260:AIGC>not json</TC260:AIGC></rdf:Description>{TAIL}"#
            ),
            &[(Tc260Aigc, false, None)],
        );
        check("<x:xmpmeta><unclosed", &[]);
    }

    #[test]
    fn aigc_values_and_forms() {
        for (value, label, declares) in [
            (r#"{"Label":"1","ContentProducer":"x"}"#, Some("1"), true),
            (r#"{"AIGC":{"Label":"2"}}"#, Some("2"), true),
            (r#"{"AIGC":"{\"Label\":\"3\"}"}"#, Some("3"), false),
            (r#"{"label": 1}"#, Some("1"), true),
            (r#"{&quot;Label&quot;:&quot;1&quot;}"#, Some("1"), true),
            (r#"{"Label":"9"}"#, Some("9"), false),
            (r#"{"ContentProducer":"x"}"#, None, false),
            ("[1]", None, false),
        ] {
            let m = aigc_marker(value, "test");
            assert_eq!(m.aigc_label.as_deref(), label, "{value}");
            assert_eq!(m.declares_ai, declares, "{value}");
        }
    }
}
