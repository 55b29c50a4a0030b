//! C2PA manifest stores, read with the `c2pa` crate (the Content Authenticity Initiative's own
//! SDK) and walked whole.
//!
//! Built without network features: a manifest that is only referenced by URL is reported as
//! [`MarkerKind::C2paRemoteManifest`] and never fetched.
//!
//! **The chain.** Vendors often declare AI only in an ingredient: ChatGPT's active manifest says
//! `c2pa.opened` and its parent ingredient (the image ChatGPT created) says `c2pa.created` with
//! `trainedAlgorithmicMedia`; Gemini's active manifest says `composite`. So the walk starts at the
//! active manifest and follows every `parentOf` and `componentOf` ingredient that has a manifest
//! in the store, recursively (bounded, cycles cut). In each manifest it reads every assertion
//! (`c2pa.actions` / `c2pa.actions.v2`, IPTC metadata, ...) and the ingredients' own fields for
//! a digital source type, and the claim generator. A file declares AI when any manifest of the
//! chain declares `trainedAlgorithmicMedia` or `compositeWithTrainedAlgorithmicMedia`; the
//! evidence names where.
//!
//! **Validity is asymmetric.** An AI declaration counts whatever the signature's state. The
//! state of the active manifest is reported ([`C2paValidation`]) for the policy to act on, and a
//! camera-capture claim is flagged for it, to count only from a verified manifest. Trust is
//! judged only against a configured trust list ([`C2paTrust`]); without one a manifest whose
//! signatures and hashes verify is `valid`.

use std::io::Cursor;
use std::sync::Arc;

use c2pa::{Context, Reader};
use lg_events::{C2paValidation, Marker, MarkerKind};
use serde_json::Value;

use super::container::find;
use super::generators::known_generator;
use super::{marker, source_type_declares_ai};

/// Most manifests the chain walk visits, and how deep it goes: a real chain has a handful.
const MAX_MANIFESTS: usize = 64;
const MAX_DEPTH: usize = 16;

/// IPTC source types that claim a camera capture.
const CAPTURE_SOURCE_TYPES: [&str; 2] = ["digitalCapture", "computationalCapture"];

/// Validation codes that mean the content changed after signing.
const TAMPERED: [&str; 4] = [
    "assertion.dataHash.mismatch",
    "assertion.bmffHash.mismatch",
    "assertion.boxesHash.mismatch",
    "assertion.collectionHash.mismatch",
];
/// Validation codes about the signer's standing, not the content.
const UNTRUSTED: [&str; 2] = ["signingCredential.untrusted", "timeStamp.untrusted"];
const EXPIRED: [&str; 2] = ["signingCredential.expired", "timeStamp.outsideValidity"];

/// How C2PA signers are judged: against a trust list (a PEM bundle of trust anchors), or not at
/// all. Built once and shared by every read.
#[derive(Clone)]
pub struct C2paTrust {
    context: Arc<Context>,
    /// SHA-256 (hex, 16 digits) of the trust list's PEM, when one is configured.
    trust_list: Option<String>,
}

impl std::fmt::Debug for C2paTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2paTrust")
            .field("trust_list", &self.trust_list)
            .finish()
    }
}

/// A trust list that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("C2PA trust list: {0}")]
pub struct TrustListError(String);

impl C2paTrust {
    /// No trust list: signatures and hashes are verified, signers are not judged.
    pub fn none() -> Self {
        Self::build(None).expect("the settings without a trust list are valid")
    }

    /// Signers must chain to one of the PEM certificates in `anchors`.
    pub fn with_anchors(anchors: &str) -> Result<Self, TrustListError> {
        if !anchors.contains("-----BEGIN CERTIFICATE-----") {
            return Err(TrustListError(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the bundle".into(),
            ));
        }
        Self::build(Some(anchors))
    }

    fn build(anchors: Option<&str>) -> Result<Self, TrustListError> {
        let mut settings = serde_json::json!({
            "verify": {
                "verify_trust": anchors.is_some(),
                "remote_manifest_fetch": false,
                "ocsp_fetch": false,
            }
        });
        if let Some(pem) = anchors {
            settings["trust"] = serde_json::json!({ "trust_anchors": pem });
        }
        let context = Context::new()
            .with_settings(settings.to_string().as_str())
            .map_err(|e| TrustListError(e.to_string()))?;
        Ok(Self {
            context: Arc::new(context),
            trust_list: anchors.map(|pem| lg_events::sha256_hex(pem.as_bytes())[..16].to_owned()),
        })
    }

    /// Whether a trust list is configured.
    pub fn has_trust_list(&self) -> bool {
        self.trust_list.is_some()
    }

    /// The trust list's SHA-256 (16 hex digits), part of the provenance version: a new list can
    /// change validation states, so cached analyses and decision ids must not mix lists.
    pub fn trust_list_id(&self) -> Option<&str> {
        self.trust_list.as_deref()
    }
}

impl Default for C2paTrust {
    fn default() -> Self {
        Self::none()
    }
}

/// Whether `bytes` may hold C2PA data at all (the JUMBF label `c2pa`, or a remote reference in
/// XMP `dcterms:provenance`). Most product photos have neither; only these are parsed.
pub(crate) fn may_hold_c2pa(bytes: &[u8]) -> bool {
    find(bytes, b"c2pa").is_some() || find(bytes, b"provenance").is_some()
}

pub(crate) fn read(bytes: &[u8], trust: &C2paTrust, markers: &mut Vec<Marker>) {
    if !may_hold_c2pa(bytes) {
        return;
    }
    let Some(mime) = mime(bytes) else { return };
    match Reader::from_shared_context(&trust.context).with_stream(mime, Cursor::new(bytes)) {
        Ok(reader) => store_markers(&reader, trust.has_trust_list(), markers),
        Err(c2pa::Error::JumbfNotFound | c2pa::Error::ProvenanceMissing) => {}
        Err(c2pa::Error::RemoteManifestUrl(url)) => markers.push(marker(
            MarkerKind::C2paRemoteManifest,
            false,
            None,
            format!("C2PA manifest referenced by URL (not fetched): {url}"),
        )),
        Err(e) => {
            // An unreadable store can still carry a declaration: its assertions are CBOR, whose
            // text strings sit in the bytes as they are. A declaration counts whatever the
            // state of the data around it.
            let named = ai_term_in_bytes(bytes);
            let mut evidence = format!("C2PA data present but unreadable: {e}");
            if let Some(term) = named {
                evidence.push_str(&format!("; its bytes name the digital source type {term}"));
            }
            markers.push(marker(
                MarkerKind::C2paInvalid,
                named.is_some(),
                None,
                evidence,
            ));
        }
    }
}

/// The markers of a manifest store given as `Reader::json` output (for fuzzing the walk).
pub(crate) fn chain_from_json(json: &str) -> Vec<Marker> {
    let mut markers = Vec::new();
    if let Ok(reader) = Reader::from_json(json) {
        store_markers(&reader, false, &mut markers);
    }
    markers
}

/// The AI source type named anywhere in `bytes`, if any.
fn ai_term_in_bytes(bytes: &[u8]) -> Option<&'static str> {
    [
        "compositeWithTrainedAlgorithmicMedia",
        "trainedAlgorithmicMedia",
    ]
    .into_iter()
    .find(|t| find(bytes, t.as_bytes()).is_some())
}

/// What one manifest of the chain says.
#[derive(Debug, Default)]
struct ManifestFacts {
    /// Where it sits: `active manifest`, `ingredient 'x.png'`, `ingredient 'a' of ingredient 'b'`.
    place: String,
    /// The claim generator's name.
    generator: Option<String>,
    /// Digital source types with the action and software agent that stated them, if any.
    source_types: Vec<SourceType>,
    /// Action names (`c2pa.created`, `c2pa.edited`, ...).
    actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct SourceType {
    term: String,
    action: Option<String>,
    agent: Option<String>,
}

impl ManifestFacts {
    /// `ingredient 'image.png' created by ChatGPT: trainedAlgorithmicMedia`.
    fn describe(&self, s: &SourceType) -> String {
        let verb = s
            .action
            .as_deref()
            .map(|a| a.trim_start_matches("c2pa.").replace('_', " "))
            .unwrap_or_else(|| "declared".into());
        let mut by = self.generator.clone().unwrap_or_else(|| "?".into());
        if let Some(agent) = s
            .agent
            .as_ref()
            .filter(|a| Some(*a) != self.generator.as_ref())
        {
            by.push_str(&format!(" ({agent})"));
        }
        format!("{} {verb} by {by}: {}", self.place, term(&s.term))
    }
}

fn term(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap_or(uri).trim()
}

fn store_markers(reader: &Reader, trust_list: bool, markers: &mut Vec<Marker>) {
    let (state, failures) = validation(reader, trust_list);
    let Some(active) = reader.active_label() else {
        let mut m = marker(
            MarkerKind::C2paManifest,
            false,
            None,
            "C2PA manifest store without an active manifest".into(),
        );
        m.c2pa_validation = Some(state);
        m.c2pa_failures = failures;
        markers.push(m);
        return;
    };
    let mut chain = Vec::new();
    let mut visited = Vec::new();
    walk(
        reader,
        active,
        "active manifest".into(),
        0,
        &mut visited,
        &mut chain,
    );

    let declaring: Vec<(&ManifestFacts, &SourceType)> = chain
        .iter()
        .flat_map(|f| f.source_types.iter().map(move |s| (f, s)))
        .filter(|(_, s)| source_type_declares_ai(&s.term))
        .collect();
    let active_facts = chain.first();
    let capture = declaring.is_empty()
        && active_facts.is_some_and(|f| {
            f.source_types
                .iter()
                .any(|s| CAPTURE_SOURCE_TYPES.contains(&term(&s.term)))
        });
    let generator = declaring
        .first()
        .and_then(|(f, s)| f.generator.clone().or_else(|| s.agent.clone()))
        .or_else(|| active_facts.and_then(|f| f.generator.clone()));

    // The declaration first, so that it survives the evidence's length limit.
    let mut parts: Vec<String> = declaring.iter().map(|(f, s)| f.describe(s)).collect();
    let mut summary = format!("C2PA manifest {active}");
    if let Some(g) = active_facts.and_then(|f| f.generator.as_ref()) {
        summary.push_str(&format!(" by {g}"));
    }
    summary.push_str(&format!(", validation {}", state.as_str()));
    if !failures.is_empty() {
        summary.push_str(&format!(" ({})", failures.join(", ")));
    }
    parts.push(summary);
    for f in &chain {
        for s in f
            .source_types
            .iter()
            .filter(|s| !source_type_declares_ai(&s.term))
        {
            parts.push(f.describe(s));
        }
    }
    if chain.len() > 1 {
        parts.push(format!("{} manifests in the chain", chain.len()));
    }
    let mut m = marker(
        MarkerKind::C2paManifest,
        !declaring.is_empty(),
        generator,
        parts.join("; "),
    );
    m.c2pa_validation = Some(state);
    m.c2pa_failures = failures;
    m.capture_claim = capture;
    markers.push(m);

    // A generator that is an AI product but declares nothing (an `edited` action by Firefly,
    // say) is a hint for analytics, not a declaration.
    if declaring.is_empty() {
        for f in &chain {
            let names = f
                .generator
                .iter()
                .chain(f.source_types.iter().filter_map(|s| s.agent.as_ref()));
            if let Some(product) = names.filter_map(|n| known_generator(n)).next() {
                let actions = if f.actions.is_empty() {
                    "no actions".to_owned()
                } else {
                    format!("actions {}", f.actions.join(", "))
                };
                markers.push(marker(
                    MarkerKind::GeneratorHint,
                    false,
                    Some(product.to_owned()),
                    format!(
                        "C2PA {} by {}: {actions}, no AI digital source type",
                        f.place,
                        f.generator.as_deref().unwrap_or(product)
                    ),
                ));
            }
        }
    }
}

/// Visits the manifest `label` and, depth first, the manifests of its `parentOf` and
/// `componentOf` ingredients.
fn walk(
    reader: &Reader,
    label: &str,
    place: String,
    depth: usize,
    visited: &mut Vec<String>,
    out: &mut Vec<ManifestFacts>,
) {
    if depth > MAX_DEPTH || visited.len() >= MAX_MANIFESTS || visited.iter().any(|v| v == label) {
        return;
    }
    visited.push(label.to_owned());
    let Some(m) = reader.get_manifest(label) else {
        return;
    };
    let generator = m
        .claim_generator_info
        .as_ref()
        .and_then(|v| v.iter().map(|g| g.name.trim()).find(|n| !n.is_empty()))
        .map(str::to_owned)
        .or_else(|| m.claim_generator().map(|g| g.trim().to_owned()))
        .filter(|g| !g.is_empty());
    let mut facts = ManifestFacts {
        place: place.clone(),
        generator,
        ..Default::default()
    };
    for a in m.assertions() {
        let Ok(v) = a.value() else { continue };
        if a.label().starts_with("c2pa.actions") {
            read_actions(v, &mut facts);
        }
        collect_source_types(v, None, &mut facts.source_types);
    }
    let mut children = Vec::new();
    let mut ingredient_facts = Vec::new();
    for ing in m.ingredients() {
        let name = ing.title().unwrap_or("untitled");
        let ing_place = if depth == 0 {
            format!("ingredient '{name}'")
        } else {
            format!("ingredient '{name}' of {place}")
        };
        // The ingredient assertion's own fields (its metadata) may name a source type too.
        if let Ok(mut v) = serde_json::to_value(ing) {
            if let Some(obj) = v.as_object_mut() {
                obj.remove("manifest_data");
                obj.remove("thumbnail");
            }
            let mut own = Vec::new();
            collect_source_types(&v, None, &mut own);
            if !own.is_empty() {
                ingredient_facts.push(ManifestFacts {
                    place: format!("{ing_place} (ingredient assertion)"),
                    generator: facts.generator.clone(),
                    source_types: own,
                    actions: Vec::new(),
                });
            }
        }
        let walked = matches!(
            ing.relationship(),
            c2pa::Relationship::ParentOf | c2pa::Relationship::ComponentOf
        );
        if let (true, Some(child)) = (walked, ing.active_manifest()) {
            children.push((child.to_owned(), ing_place));
        }
    }
    out.push(facts);
    out.extend(ingredient_facts);
    for (child, child_place) in children {
        walk(reader, &child, child_place, depth + 1, visited, out);
    }
}

/// Action names, and each action's source type with its software agent (a string in v1
/// actions, `{name, version}` in v2).
fn read_actions(v: &Value, facts: &mut ManifestFacts) {
    let Some(actions) = v.get("actions").and_then(Value::as_array) else {
        return;
    };
    for a in actions {
        let name = a.get("action").and_then(Value::as_str).map(str::to_owned);
        let agent = a.get("softwareAgent").and_then(|s| match s {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
        if let Some(n) = &name {
            if !facts.actions.contains(n) {
                facts.actions.push(n.clone());
            }
        }
        if let Some(t) = a.get("digitalSourceType").and_then(Value::as_str) {
            push_source_type(
                &mut facts.source_types,
                SourceType {
                    term: t.to_owned(),
                    action: name,
                    agent,
                },
            );
        }
    }
}

fn push_source_type(out: &mut Vec<SourceType>, s: SourceType) {
    // The same term from a bare scan after the action that stated it adds nothing.
    if let Some(existing) = out.iter_mut().find(|e| e.term == s.term) {
        if existing.action.is_none() && s.action.is_some() {
            *existing = s;
        }
        return;
    }
    out.push(s);
}

/// Every digital source type at any depth: `digitalSourceType` (C2PA) or
/// `Iptc4xmpExt:DigitalSourceType` (IPTC metadata assertions), any case.
fn collect_source_types(v: &Value, action: Option<&str>, out: &mut Vec<SourceType>) {
    match v {
        Value::Object(map) => {
            let action = map.get("action").and_then(Value::as_str).or(action);
            for (k, v) in map {
                let key = k.rsplit(':').next().unwrap_or(k);
                match v {
                    Value::String(s) if key.eq_ignore_ascii_case("digitalSourceType") => {
                        push_source_type(
                            out,
                            SourceType {
                                term: s.clone(),
                                action: action.map(str::to_owned),
                                agent: None,
                            },
                        )
                    }
                    _ => collect_source_types(v, action, out),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_source_types(v, action, out)),
        _ => {}
    }
}

/// The active manifest's validation state and the failure codes behind it.
fn validation(reader: &Reader, trust_list: bool) -> (C2paValidation, Vec<String>) {
    let codes: Vec<String> = match reader
        .validation_results()
        .and_then(|r| r.active_manifest())
    {
        Some(codes) => codes
            .failure()
            .iter()
            .map(|s| s.code().to_owned())
            .collect(),
        None => reader
            .validation_status()
            .unwrap_or_default()
            .iter()
            .map(|s| s.code().to_owned())
            .collect(),
    };
    let mut codes = codes;
    codes.sort();
    codes.dedup();
    (classify(&codes, trust_list), codes)
}

/// The state a set of failure codes amounts to: tampering first, then any failure that is not
/// about the signer's standing, then an expired, then an untrusted signer.
fn classify(codes: &[String], trust_list: bool) -> C2paValidation {
    let any = |set: &[&str]| codes.iter().any(|c| set.contains(&c.as_str()));
    if any(&TAMPERED) {
        C2paValidation::Tampered
    } else if codes
        .iter()
        .any(|c| !UNTRUSTED.contains(&c.as_str()) && !EXPIRED.contains(&c.as_str()))
    {
        C2paValidation::Invalid
    } else if any(&EXPIRED) {
        C2paValidation::Expired
    } else if any(&UNTRUSTED) {
        C2paValidation::Untrusted
    } else if trust_list {
        C2paValidation::Trusted
    } else {
        C2paValidation::Valid
    }
}

pub(crate) fn mime(bytes: &[u8]) -> Option<&'static str> {
    if let Some(kind) = crate::heif::sniff(bytes) {
        return Some(kind.mime());
    }
    Some(match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'G', b'I', b'F', ..] => "image/gif",
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => "image/tiff",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(v: Value) -> ManifestFacts {
        let mut f = ManifestFacts {
            place: "active manifest".into(),
            generator: Some("ChatGPT".into()),
            ..Default::default()
        };
        read_actions(&v, &mut f);
        collect_source_types(&v, None, &mut f.source_types);
        f
    }

    #[test]
    fn source_types_keep_their_action_and_agent() {
        let f = facts(serde_json::json!({"actions": [
            {"action": "c2pa.created", "softwareAgent": {"name": "GPT-4o"}, "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"},
            {"action": "c2pa.edited", "parameters": {"ingredient": {"digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"}}}
        ]}));
        assert_eq!(f.source_types.len(), 2);
        assert_eq!(
            f.describe(&f.source_types[0]),
            "active manifest created by ChatGPT (GPT-4o): trainedAlgorithmicMedia"
        );
        assert_eq!(f.source_types[1].action.as_deref(), Some("c2pa.edited"));
        assert_eq!(f.actions, ["c2pa.created", "c2pa.edited"]);
        // IPTC metadata assertions spell it with a prefix.
        let f = facts(
            serde_json::json!({"@context": {}, "Iptc4xmpExt:DigitalSourceType": "trainedAlgorithmicMedia"}),
        );
        assert_eq!(f.source_types[0].term, "trainedAlgorithmicMedia");
    }

    #[test]
    fn validation_states() {
        let check = |codes: &[&str], trust: bool, expected: C2paValidation| {
            let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
            assert_eq!(classify(&codes, trust), expected, "{codes:?}");
        };
        check(&[], false, C2paValidation::Valid);
        check(&[], true, C2paValidation::Trusted);
        check(
            &["signingCredential.untrusted"],
            true,
            C2paValidation::Untrusted,
        );
        check(
            &["signingCredential.expired"],
            false,
            C2paValidation::Expired,
        );
        check(
            &["signingCredential.expired", "signingCredential.untrusted"],
            true,
            C2paValidation::Expired,
        );
        check(
            &["assertion.dataHash.mismatch", "signingCredential.expired"],
            false,
            C2paValidation::Tampered,
        );
        check(&["claimSignature.mismatch"], false, C2paValidation::Invalid);
        check(
            &["claimSignature.mismatch", "signingCredential.untrusted"],
            true,
            C2paValidation::Invalid,
        );
    }

    /// A manifest in `Reader::json`'s shape: `(label, generator, actions as (action, source
    /// type), ingredients as (title, relationship, manifest label))`.
    type Spec<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str, &'a str)],
    );

    fn store(active: &str, manifests: &[Spec<'_>], failures: &[&str]) -> Vec<Marker> {
        let iptc = "http://cv.iptc.org/newscodes/digitalsourcetype/";
        let mut map = serde_json::Map::new();
        for (label, generator, actions, ingredients) in manifests {
            let actions: Vec<Value> = actions
                .iter()
                .map(|(a, t)| {
                    let mut v = serde_json::json!({ "action": a });
                    if !t.is_empty() {
                        v["digitalSourceType"] = Value::String(format!("{iptc}{t}"));
                    }
                    v
                })
                .collect();
            let ingredients: Vec<Value> = ingredients
                .iter()
                .map(|(title, rel, m)| {
                    let mut v = serde_json::json!({ "title": title, "format": "image/png", "instance_id": format!("xmp:iid:{title}"), "relationship": rel });
                    if !m.is_empty() {
                        v["active_manifest"] = Value::String(m.to_string());
                    }
                    v
                })
                .collect();
            map.insert(
                label.to_string(),
                serde_json::json!({
                    "claim_generator_info": [{ "name": generator }],
                    "instance_id": format!("xmp:iid:{label}"),
                    "label": label,
                    "ingredients": ingredients,
                    "assertions": [{ "label": "c2pa.actions.v2", "data": { "actions": actions } }],
                }),
            );
        }
        let failure: Vec<Value> = failures
            .iter()
            .map(|c| serde_json::json!({ "code": c }))
            .collect();
        let json = serde_json::json!({
            "active_manifest": active,
            "manifests": map,
            "validation_results": { "activeManifest": { "success": [], "informational": [], "failure": failure } },
        });
        chain_from_json(&json.to_string())
    }

    fn summary(m: &[Marker]) -> Vec<(MarkerKind, bool, Option<String>)> {
        m.iter()
            .map(|m| (m.kind, m.declares_ai, m.generator.clone()))
            .collect()
    }

    #[test]
    fn an_ingredient_only_declaration_is_found_and_named() {
        // ChatGPT: the active manifest opened its parent, which ChatGPT created.
        let m = store(
            "urn:active",
            &[
                (
                    "urn:active",
                    "ChatGPT",
                    &[("c2pa.opened", "")],
                    &[("image.png", "parentOf", "urn:parent")],
                ),
                (
                    "urn:parent",
                    "ChatGPT",
                    &[("c2pa.created", "trainedAlgorithmicMedia")],
                    &[],
                ),
            ],
            &["signingCredential.expired"],
        );
        assert_eq!(
            summary(&m),
            [(MarkerKind::C2paManifest, true, Some("ChatGPT".into()))]
        );
        assert!(
            m[0].evidence
                .starts_with("ingredient 'image.png' created by ChatGPT: trainedAlgorithmicMedia"),
            "{}",
            m[0].evidence
        );
        assert_eq!(m[0].c2pa_validation, Some(C2paValidation::Expired));
        assert_eq!(m[0].c2pa_failures, ["signingCredential.expired"]);
    }

    #[test]
    fn a_composite_active_manifest_with_a_generated_component_declares() {
        // Gemini: `composite` on the active manifest, the AI declaration on a component.
        let m = store(
            "a",
            &[
                (
                    "a",
                    "Google C2PA Core",
                    &[("c2pa.created", "composite")],
                    &[("gen", "componentOf", "b")],
                ),
                (
                    "b",
                    "Google Gemini",
                    &[("c2pa.created", "compositeWithTrainedAlgorithmicMedia")],
                    &[],
                ),
            ],
            &[],
        );
        assert_eq!(
            summary(&m),
            [(MarkerKind::C2paManifest, true, Some("Google Gemini".into()))]
        );
        assert_eq!(m[0].c2pa_validation, Some(C2paValidation::Valid));
    }

    #[test]
    fn nested_ingredients_cycles_and_inputs() {
        let nested = store(
            "a",
            &[
                (
                    "a",
                    "Editor",
                    &[("c2pa.opened", "")],
                    &[("b.jpg", "parentOf", "b")],
                ),
                (
                    "b",
                    "Editor",
                    &[("c2pa.edited", "")],
                    &[("c.png", "parentOf", "c")],
                ),
                (
                    "c",
                    "Some Generator",
                    &[("c2pa.created", "trainedAlgorithmicMedia")],
                    &[],
                ),
            ],
            &[],
        );
        assert!(nested[0].declares_ai);
        assert!(
            nested[0]
                .evidence
                .starts_with("ingredient 'c.png' of ingredient 'b.jpg' created by Some Generator"),
            "{}",
            nested[0].evidence
        );
        // A cycle ends; nothing declares.
        let cycle = store(
            "a",
            &[
                (
                    "a",
                    "Editor",
                    &[("c2pa.opened", "")],
                    &[("b", "parentOf", "b")],
                ),
                (
                    "b",
                    "Editor",
                    &[("c2pa.opened", "")],
                    &[("a", "parentOf", "a")],
                ),
            ],
            &[],
        );
        assert_eq!(
            summary(&cycle),
            [(MarkerKind::C2paManifest, false, Some("Editor".into()))]
        );
        // An `inputTo` ingredient (a reference image) is not part of the content's chain, and
        // algorithmicMedia is not trained AI.
        let input = store(
            "a",
            &[
                (
                    "a",
                    "Editor",
                    &[("c2pa.created", "algorithmicMedia")],
                    &[("ref", "inputTo", "b")],
                ),
                (
                    "b",
                    "Gen",
                    &[("c2pa.created", "trainedAlgorithmicMedia")],
                    &[],
                ),
            ],
            &[],
        );
        assert!(!input[0].declares_ai, "{}", input[0].evidence);
        // An ingredient whose manifest is missing from the store is skipped.
        let missing = store(
            "a",
            &[(
                "a",
                "Editor",
                &[("c2pa.opened", "")],
                &[("x", "parentOf", "gone")],
            )],
            &[],
        );
        assert!(!missing[0].declares_ai);
    }

    #[test]
    fn ai_products_without_a_declaration_are_hints_and_captures_are_flagged() {
        let m = store(
            "a",
            &[("a", "Adobe Firefly", &[("c2pa.edited", "")], &[])],
            &[],
        );
        assert_eq!(
            summary(&m),
            [
                (
                    MarkerKind::C2paManifest,
                    false,
                    Some("Adobe Firefly".into())
                ),
                (
                    MarkerKind::GeneratorHint,
                    false,
                    Some("Adobe Firefly".into())
                ),
            ]
        );
        assert!(m[1].evidence.contains("c2pa.edited"), "{}", m[1].evidence);
        let cam = store(
            "a",
            &[(
                "a",
                "Nikon Z6III",
                &[("c2pa.created", "digitalCapture")],
                &[],
            )],
            &[],
        );
        assert!(cam[0].capture_claim && !cam[0].declares_ai);
        let tampered = store(
            "a",
            &[("a", "Truepic", &[("c2pa.created", "digitalCapture")], &[])],
            &["assertion.dataHash.mismatch"],
        );
        assert_eq!(tampered[0].c2pa_validation, Some(C2paValidation::Tampered));
        assert!(
            tampered[0].capture_claim,
            "the claim is shown; the policy ignores it unverified"
        );
    }

    #[test]
    fn files_without_c2pa_are_skipped_cheaply() {
        let mut m = Vec::new();
        read(b"\xFF\xD8\xFF\xD9", &C2paTrust::none(), &mut m);
        read(b"", &C2paTrust::none(), &mut m);
        assert!(m.is_empty());
    }

    #[test]
    fn a_trust_list_must_hold_a_certificate() {
        assert!(C2paTrust::with_anchors("not a pem").is_err());
        assert!(!C2paTrust::none().has_trust_list());
    }
}
