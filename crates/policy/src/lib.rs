//! Declarative, versioned platform policy.
//!
//! A [`Policy`] is parsed from TOML (see `deploy/policy/default.toml`) and evaluated with
//! [`evaluate`], a pure function: the listing's marketplace and category, and what the detector
//! saw in each image, go in; one [`Action`] per image and for the listing come out, each with
//! reason codes. The policy does no I/O and keeps no state.
//!
//! The version ([`Policy::version`]) is `NAME@sha256:HASH`, where HASH covers the parsed rules
//! (not whitespace or comments), so any rule change yields a new version and new decision ids.

use lg_events::{Action, ImageFailure, ImageRole, LabelBasis, Marker, MarkerKind, Reason, Signals};
use serde::{Deserialize, Serialize};

/// The default policy shipped with the project.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../deploy/policy/default.toml");

/// Stable reason codes.
pub mod codes {
    /// Metadata in the file declares it AI-generated.
    pub const AI_DECLARED_METADATA: &str = "AI_DECLARED_METADATA";
    /// A C2PA manifest is present but invalid.
    pub const C2PA_INVALID: &str = "C2PA_INVALID";
    /// The image could not be fetched.
    pub const IMAGE_FETCH_FAILED: &str = "IMAGE_FETCH_FAILED";
    /// The image could not be decoded.
    pub const IMAGE_DECODE_FAILED: &str = "IMAGE_DECODE_FAILED";
    /// The pixel model finds the image likely AI-generated.
    pub const AI_DETECTED_MODEL: &str = "AI_DETECTED_MODEL";
    /// Nothing suggests AI generation.
    pub const NO_AI_SIGNAL: &str = "NO_AI_SIGNAL";
}

/// Errors loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The TOML does not parse or has unknown keys.
    #[error("policy does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("policy is invalid: {0}")]
    Invalid(String),
}

/// Rules with every field set: the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Metadata declares the image AI-generated.
    pub declared_ai: Action,
    /// A C2PA manifest is present but invalid.
    pub c2pa_invalid: Action,
    /// The image could not be fetched.
    pub fetch_failed: Action,
    /// The image could not be decoded.
    pub decode_failed: Action,
    /// The model says AI on the main image, with no declaration.
    pub model_ai_main: Action,
    /// The model says AI on a detail or SKU image, with no declaration.
    pub model_ai_secondary: Action,
    /// Calibrated probability at or above which the model "says AI".
    pub model_threshold: f32,
}

/// An override: matchers plus any subset of [`Rules`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Applies only on this marketplace (any when absent).
    pub marketplace: Option<String>,
    /// Applies only in this category (any when absent).
    pub category: Option<String>,
    /// See [`Rules::declared_ai`].
    pub declared_ai: Option<Action>,
    /// See [`Rules::c2pa_invalid`].
    pub c2pa_invalid: Option<Action>,
    /// See [`Rules::fetch_failed`].
    pub fetch_failed: Option<Action>,
    /// See [`Rules::decode_failed`].
    pub decode_failed: Option<Action>,
    /// See [`Rules::model_ai_main`].
    pub model_ai_main: Option<Action>,
    /// See [`Rules::model_ai_secondary`].
    pub model_ai_secondary: Option<Action>,
    /// See [`Rules::model_threshold`].
    pub model_threshold: Option<f32>,
}

/// Settings for the label events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSettings {
    /// `ContentPropagator` written into the implicit label.
    pub content_propagator: String,
    /// `zh`, `en` or `zh+en`: which visible texts to carry.
    #[serde(default = "default_locale")]
    pub locale: String,
}

fn default_locale() -> String {
    "zh+en".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: String,
    labels: LabelSettings,
    defaults: Rules,
    #[serde(default)]
    overrides: Vec<Override>,
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    file: PolicyFile,
    version: String,
}

impl Policy {
    /// Parses and validates a policy.
    pub fn from_toml_str(s: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(s)?;
        let check_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !check_name(&file.name) {
            return Err(PolicyError::Invalid(format!(
                "name {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                file.name
            )));
        }
        let thresholds = std::iter::once(Some(file.defaults.model_threshold))
            .chain(file.overrides.iter().map(|o| o.model_threshold));
        for t in thresholds.flatten() {
            if !(0.0..=1.0).contains(&t) {
                return Err(PolicyError::Invalid(format!(
                    "model_threshold {t} is outside [0, 1]"
                )));
            }
        }
        for (i, o) in file.overrides.iter().enumerate() {
            if o.marketplace.is_none() && o.category.is_none() {
                return Err(PolicyError::Invalid(format!(
                    "overrides[{i}] has neither `marketplace` nor `category`; put global rules in [defaults]"
                )));
            }
        }
        if !matches!(file.labels.locale.as_str(), "zh" | "en" | "zh+en") {
            return Err(PolicyError::Invalid(format!(
                "labels.locale {:?} must be zh, en or zh+en",
                file.labels.locale
            )));
        }
        // Canonical form: the parsed structure serialised as JSON (field order is fixed by the
        // struct), so comments and formatting do not change the version.
        let canonical = serde_json::to_vec(&file).expect("policy serialises");
        let hash = lg_events::sha256_hex(&canonical);
        let version = format!("{}@sha256:{}", file.name, &hash[..16]);
        Ok(Self { file, version })
    }

    /// The shipped default policy.
    pub fn default_policy() -> Self {
        Self::from_toml_str(DEFAULT_POLICY_TOML).expect("the shipped default policy is valid")
    }

    /// `NAME@sha256:HASH`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// Label settings.
    pub fn labels(&self) -> &LabelSettings {
        &self.file.labels
    }

    /// The rules in force for one marketplace and category.
    pub fn rules_for(&self, marketplace: &str, category: &str) -> Rules {
        let mut r = self.file.defaults.clone();
        for o in &self.file.overrides {
            let m = o.marketplace.as_deref().is_none_or(|m| m == marketplace);
            let c = o.category.as_deref().is_none_or(|c| c == category);
            if !(m && c) {
                continue;
            }
            macro_rules! apply {
                ($($f:ident),*) => { $( if let Some(v) = o.$f { r.$f = v; } )* };
            }
            apply!(
                declared_ai,
                c2pa_invalid,
                fetch_failed,
                decode_failed,
                model_ai_main,
                model_ai_secondary,
                model_threshold
            );
        }
        r
    }
}

/// What is known about one image when the policy runs.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// The image was fetched and analysed.
    Analysed {
        /// Where it is shown.
        role: ImageRole,
        /// What the detector found.
        signals: &'a Signals,
    },
    /// It could not be fetched.
    FetchFailed(&'a ImageFailure),
    /// It was fetched but could not be decoded.
    DecodeFailed(&'a ImageFailure),
}

/// The policy's verdict on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageVerdict {
    /// The action.
    pub action: Action,
    /// Why.
    pub reasons: Vec<Reason>,
    /// Whether the image must carry an "AI-generated" label, and on what basis.
    pub label: Option<LabelBasis>,
}

/// The policy's verdict on a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The listing's action: the most severe image action.
    pub action: Action,
    /// The reasons that drove it (deduplicated by code, first occurrence kept).
    pub reasons: Vec<Reason>,
    /// One verdict per input image, in input order.
    pub images: Vec<ImageVerdict>,
}

/// Evaluates the policy for one listing. Pure and deterministic.
pub fn evaluate(
    policy: &Policy,
    marketplace: &str,
    category: &str,
    images: &[ImageInput<'_>],
) -> Verdict {
    let rules = policy.rules_for(marketplace, category);
    let mut verdicts: Vec<ImageVerdict> = images
        .iter()
        .map(|img| evaluate_image(&rules, img))
        .collect();
    let action = verdicts
        .iter()
        .map(|v| v.action)
        .max()
        .unwrap_or(Action::Allow);
    // A blocked listing is not published, so nothing of it is labelled.
    if action == Action::Block {
        for v in &mut verdicts {
            v.label = None;
        }
    }
    let mut reasons: Vec<Reason> = Vec::new();
    for v in verdicts.iter().filter(|v| v.action == action) {
        for r in &v.reasons {
            if !reasons.iter().any(|x| x.code == r.code) {
                reasons.push(r.clone());
            }
        }
    }
    Verdict {
        action,
        reasons,
        images: verdicts,
    }
}

fn evaluate_image(rules: &Rules, img: &ImageInput<'_>) -> ImageVerdict {
    let (role, signals) = match img {
        ImageInput::FetchFailed(f) => {
            return ImageVerdict {
                action: rules.fetch_failed,
                reasons: vec![reason(
                    codes::IMAGE_FETCH_FAILED,
                    format!("image could not be fetched ({}): {}", f.class, f.message),
                )],
                label: None,
            }
        }
        ImageInput::DecodeFailed(f) => {
            return ImageVerdict {
                action: rules.decode_failed,
                reasons: vec![reason(
                    codes::IMAGE_DECODE_FAILED,
                    format!("image could not be decoded ({}): {}", f.class, f.message),
                )],
                label: None,
            }
        }
        ImageInput::Analysed { role, signals } => (*role, *signals),
    };

    let mut action = Action::Allow;
    let mut reasons = Vec::new();
    let mut label = None;
    let declaring: Vec<&Marker> = signals
        .provenance
        .markers
        .iter()
        .filter(|m| m.declares_ai)
        .collect();
    if !declaring.is_empty() {
        action = action.max(rules.declared_ai);
        label = Some(LabelBasis::DeclaredInMetadata);
        reasons.push(reason(
            codes::AI_DECLARED_METADATA,
            describe_markers(&declaring),
        ));
    }
    if let Some(bad) = signals
        .provenance
        .markers
        .iter()
        .find(|m| m.kind == MarkerKind::C2paInvalid)
    {
        action = action.max(rules.c2pa_invalid);
        reasons.push(reason(
            codes::C2PA_INVALID,
            format!("C2PA data does not validate: {}", bad.evidence),
        ));
    }
    if declaring.is_empty() {
        if let Some(score) = &signals.model {
            if score.ai_probability >= rules.model_threshold {
                let rule = if role == ImageRole::Main {
                    rules.model_ai_main
                } else {
                    rules.model_ai_secondary
                };
                action = action.max(rule);
                label = Some(LabelBasis::Detected);
                reasons.push(reason(
                    codes::AI_DETECTED_MODEL,
                    format!(
                        "model {} gives AI probability {:.3} (threshold {:.3}, max crop {:.3})",
                        score.model_version,
                        score.ai_probability,
                        rules.model_threshold,
                        score.max_crop_probability
                    ),
                ));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(reason(
            codes::NO_AI_SIGNAL,
            "no AI marker in metadata and no model finding".into(),
        ));
    }
    ImageVerdict {
        action,
        reasons,
        label,
    }
}

fn describe_markers(markers: &[&Marker]) -> String {
    let parts: Vec<String> = markers
        .iter()
        .map(|m| match &m.generator {
            Some(g) => format!("{} ({g})", kind_name(m.kind)),
            None => kind_name(m.kind).to_owned(),
        })
        .collect();
    format!(
        "image metadata declares AI generation: {}",
        parts.join(", ")
    )
}

/// Human name of a marker kind.
pub fn kind_name(kind: MarkerKind) -> &'static str {
    match kind {
        MarkerKind::C2paManifest => "C2PA manifest",
        MarkerKind::C2paInvalid => "invalid C2PA data",
        MarkerKind::C2paRemoteManifest => "remote C2PA manifest reference",
        MarkerKind::IptcDigitalSourceType => "IPTC DigitalSourceType",
        MarkerKind::GeneratorParameters => "generator parameters",
        MarkerKind::ExifSoftware => "EXIF Software/Make",
        MarkerKind::Tc260Aigc => "GB 45438 TC260:AIGC label",
    }
}

fn reason(code: &str, message: String) -> Reason {
    Reason {
        code: code.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lg_events::{ModelScore, Provenance};

    fn marker(kind: MarkerKind, declares_ai: bool) -> Marker {
        Marker {
            kind,
            declares_ai,
            generator: Some("gen".into()),
            evidence: "ev".into(),
        }
    }

    fn signals(markers: Vec<Marker>, prob: Option<f32>) -> Signals {
        let declared_ai = markers.iter().any(|m| m.declares_ai);
        Signals {
            provenance: Provenance {
                declared_ai,
                markers,
            },
            model: prob.map(|p| ModelScore {
                model_version: "m@1".into(),
                ai_probability: p,
                max_crop_probability: p,
                mean_crop_probability: p,
                crop_probabilities: vec![p],
            }),
        }
    }

    fn check(
        marketplace: &str,
        category: &str,
        role: ImageRole,
        s: Signals,
        expected: Action,
        code: &str,
    ) {
        let p = Policy::default_policy();
        let v = evaluate(
            &p,
            marketplace,
            category,
            &[ImageInput::Analysed { role, signals: &s }],
        );
        assert_eq!(v.action, expected, "{marketplace}/{category}: {v:?}");
        assert_eq!(v.reasons[0].code, code, "{v:?}");
    }

    #[test]
    fn default_policy_table() {
        use ImageRole::*;
        use MarkerKind::*;
        let ai = || signals(vec![marker(IptcDigitalSourceType, true)], None);
        check(
            "taobao",
            "apparel",
            Main,
            ai(),
            Action::Label,
            codes::AI_DECLARED_METADATA,
        );
        check(
            "tmall",
            "apparel",
            Detail,
            ai(),
            Action::Label,
            codes::AI_DECLARED_METADATA,
        );
        check(
            "xianyu",
            "apparel",
            Main,
            ai(),
            Action::Block,
            codes::AI_DECLARED_METADATA,
        );
        check(
            "taobao",
            "beauty",
            Main,
            ai(),
            Action::Review,
            codes::AI_DECLARED_METADATA,
        );
        // Later override wins: xianyu comes after beauty in the default file.
        check(
            "xianyu",
            "beauty",
            Main,
            ai(),
            Action::Block,
            codes::AI_DECLARED_METADATA,
        );
        check(
            "taobao",
            "apparel",
            Main,
            signals(vec![], None),
            Action::Allow,
            codes::NO_AI_SIGNAL,
        );
        // A C2PA manifest that declares nothing is not a reason to act.
        check(
            "taobao",
            "apparel",
            Main,
            signals(vec![marker(C2paManifest, false)], None),
            Action::Allow,
            codes::NO_AI_SIGNAL,
        );
        check(
            "taobao",
            "apparel",
            Main,
            signals(vec![marker(C2paInvalid, false)], None),
            Action::Review,
            codes::C2PA_INVALID,
        );
        check(
            "taobao",
            "apparel",
            Main,
            signals(vec![], Some(0.95)),
            Action::Review,
            codes::AI_DETECTED_MODEL,
        );
        check(
            "taobao",
            "apparel",
            Sku,
            signals(vec![], Some(0.95)),
            Action::Label,
            codes::AI_DETECTED_MODEL,
        );
        check(
            "xianyu",
            "apparel",
            Main,
            signals(vec![], Some(0.95)),
            Action::Block,
            codes::AI_DETECTED_MODEL,
        );
        check(
            "taobao",
            "apparel",
            Main,
            signals(vec![], Some(0.5)),
            Action::Allow,
            codes::NO_AI_SIGNAL,
        );
    }

    #[test]
    fn listing_takes_most_severe_image_and_failures_review() {
        let p = Policy::default_policy();
        let clean = signals(vec![], None);
        let ai = signals(vec![marker(MarkerKind::Tc260Aigc, true)], None);
        let fail = ImageFailure {
            class: "fetch_timeout".into(),
            message: "timed out".into(),
        };
        let v = evaluate(
            &p,
            "taobao",
            "apparel",
            &[
                ImageInput::Analysed {
                    role: ImageRole::Main,
                    signals: &clean,
                },
                ImageInput::Analysed {
                    role: ImageRole::Detail,
                    signals: &ai,
                },
                ImageInput::FetchFailed(&fail),
            ],
        );
        assert_eq!(v.action, Action::Review);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].code, codes::IMAGE_FETCH_FAILED);
        assert_eq!(v.images[1].action, Action::Label);
        assert_eq!(v.images[1].label, Some(LabelBasis::DeclaredInMetadata));
        assert_eq!(v.images[0].label, None);
    }

    #[test]
    fn blocked_listings_carry_no_labels() {
        let p = Policy::default_policy();
        let ai = signals(vec![marker(MarkerKind::GeneratorParameters, true)], None);
        let v = evaluate(
            &p,
            "xianyu",
            "x",
            &[ImageInput::Analysed {
                role: ImageRole::Main,
                signals: &ai,
            }],
        );
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.images[0].label, None);
    }

    #[test]
    fn version_tracks_rules_not_formatting() {
        let a = Policy::from_toml_str(DEFAULT_POLICY_TOML).unwrap();
        let reformatted = format!("# a comment\n\n{DEFAULT_POLICY_TOML}\n\n");
        assert_eq!(
            a.version(),
            Policy::from_toml_str(&reformatted).unwrap().version()
        );
        let changed = DEFAULT_POLICY_TOML.replace("model_threshold = 0.9", "model_threshold = 0.8");
        assert_ne!(
            a.version(),
            Policy::from_toml_str(&changed).unwrap().version()
        );
        assert!(a.version().starts_with("default@sha256:"));
    }

    #[test]
    fn invalid_policies_are_refused_with_the_key() {
        let bad_action =
            DEFAULT_POLICY_TOML.replace("declared_ai = \"label\"", "declared_ai = \"nuke\"");
        let e = Policy::from_toml_str(&bad_action).unwrap_err().to_string();
        assert!(e.contains("declared_ai") || e.contains("nuke"), "{e}");
        let unknown = format!(
            "{DEFAULT_POLICY_TOML}\n[[overrides]]\nmarketplace = \"a\"\ndeclard_ai = \"block\"\n"
        );
        let e = Policy::from_toml_str(&unknown).unwrap_err().to_string();
        assert!(e.contains("declard_ai"), "{e}");
        let thr = DEFAULT_POLICY_TOML.replace("model_threshold = 0.9", "model_threshold = 1.5");
        assert!(Policy::from_toml_str(&thr)
            .unwrap_err()
            .to_string()
            .contains("model_threshold"));
        let global = format!("{DEFAULT_POLICY_TOML}\n[[overrides]]\ndeclared_ai = \"block\"\n");
        assert!(Policy::from_toml_str(&global)
            .unwrap_err()
            .to_string()
            .contains("overrides[2]"));
    }
}
