//! Declarative, versioned platform policy.
//!
//! A [`Policy`] is parsed from TOML (see `deploy/policy/default.toml`) and evaluated with
//! [`evaluate`], a pure function: the listing's marketplace and category, and what the detector
//! saw in each image, go in; one [`Action`] per image and for the listing come out, each with
//! reason codes. The policy does no I/O and keeps no state.
//!
//! The version ([`Policy::version`]) is `NAME@sha256:HASH`, where HASH covers the parsed rules
//! (not whitespace or comments), so any rule change yields a new version and new decision ids.

use lg_events::{
    Action, C2paValidation, ImageFailure, ImageRole, LabelBasis, Marker, MarkerKind, Reason,
    Signals,
};
use serde::{Deserialize, Serialize};

/// The default policy shipped with the project.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../deploy/policy/default.toml");

/// Stable reason codes.
pub mod codes {
    /// Metadata in the file declares it AI-generated.
    pub const AI_DECLARED_METADATA: &str = "AI_DECLARED_METADATA";
    /// A GB 45438 label in the file says the content is suspected AI (label 3, or whatever
    /// label the policy does not treat as a declaration).
    pub const AI_SUSPECTED_METADATA: &str = "AI_SUSPECTED_METADATA";
    /// A C2PA manifest is present but invalid (unreadable, or a signature that does not verify).
    pub const C2PA_INVALID: &str = "C2PA_INVALID";
    /// The content does not match the hash its C2PA manifest signed.
    pub const C2PA_TAMPERED: &str = "C2PA_TAMPERED";
    /// The C2PA signer is not on the configured trust list.
    pub const C2PA_UNTRUSTED: &str = "C2PA_UNTRUSTED";
    /// The C2PA signing certificate had expired.
    pub const C2PA_EXPIRED: &str = "C2PA_EXPIRED";
    /// A verified C2PA camera-capture claim capped the pixel model's action.
    pub const C2PA_CAPTURE_VERIFIED: &str = "C2PA_CAPTURE_VERIFIED";
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

/// Where the pixel model's score counts as "AI" for one action.
///
/// In a policy file: `"fpr:1%"` names the model card's operating point at a 1% false-positive
/// rate on real photos (measured out of fold, see `models/README.md`), a number (`0.93`) is a
/// raw threshold on the calibrated probability, and `"never"` switches the action off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OperatingPoint {
    /// The model card's threshold at this false-positive rate (a fraction: 0.01 is 1%).
    Fpr(f32),
    /// A calibrated probability at or above which the model says AI.
    Probability(f32),
    /// The model never takes this action.
    Never,
}

impl OperatingPoint {
    /// The threshold on `ai_probability` for `score`, or `None` where the point is `never` or
    /// the model card has no operating point at that rate.
    pub fn threshold(self, score: &lg_events::ModelScore) -> Option<f32> {
        match self {
            OperatingPoint::Never => None,
            OperatingPoint::Probability(p) => Some(p),
            OperatingPoint::Fpr(f) => score
                .operating_points
                .iter()
                .find(|op| same_rate(op.fpr, f))
                .map(|op| op.threshold),
        }
    }

    /// The false-positive rate, where the point names one.
    pub fn fpr(self) -> Option<f32> {
        match self {
            OperatingPoint::Fpr(f) => Some(f),
            _ => None,
        }
    }
}

/// Whether two false-positive rates name the same operating point (`0.1%` written as 0.001).
pub fn same_rate(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 + 1e-3 * b.abs()
}

impl std::fmt::Display for OperatingPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatingPoint::Fpr(r) => write!(f, "fpr:{}%", format_percent(*r)),
            OperatingPoint::Probability(p) => write!(f, "{p}"),
            OperatingPoint::Never => f.write_str("never"),
        }
    }
}

fn format_percent(r: f32) -> String {
    let s = format!("{:.4}", r * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl std::str::FromStr for OperatingPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "never" {
            return Ok(OperatingPoint::Never);
        }
        let Some(rate) = s.strip_prefix("fpr:") else {
            return Err(format!(
                "operating point {s:?}: expected \"fpr:<percent>%\" (e.g. \"fpr:1%\"), a probability, or \"never\""
            ));
        };
        let pct: f32 = rate
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| {
                format!("operating point {s:?}: the rate must be a percentage, e.g. fpr:0.5%")
            })?;
        if !(pct > 0.0 && pct < 100.0) {
            return Err(format!(
                "operating point {s:?}: the rate must be above 0% and below 100%"
            ));
        }
        Ok(OperatingPoint::Fpr(pct / 100.0))
    }
}

impl Serialize for OperatingPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OperatingPoint::Probability(p) => s.serialize_f32(*p),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for OperatingPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(p) if (0.0..=1.0).contains(&p) => Ok(OperatingPoint::Probability(p as f32)),
            Raw::Number(p) => Err(serde::de::Error::custom(format!(
                "operating point {p} is a probability outside [0, 1]"
            ))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What a GB 45438 `TC260:AIGC` label value leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AigcRule {
    /// Treated as a declaration: the `declared_ai` rule applies and the image is labelled.
    DeclaredAi,
    /// No action from the label itself.
    Allow,
    /// Labelled, with reason `AI_SUSPECTED_METADATA`.
    Label,
    /// Held for review, with reason `AI_SUSPECTED_METADATA`.
    Review,
    /// Blocked, with reason `AI_SUSPECTED_METADATA`.
    Block,
}

impl AigcRule {
    fn action(self) -> Option<Action> {
        match self {
            AigcRule::DeclaredAi => None,
            AigcRule::Allow => Some(Action::Allow),
            AigcRule::Label => Some(Action::Label),
            AigcRule::Review => Some(Action::Review),
            AigcRule::Block => Some(Action::Block),
        }
    }
}

/// Rules with every field set: the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Metadata declares the image AI-generated (in any manifest of its C2PA chain, IPTC,
    /// generator parameters, or a GB 45438 label that `aigc_label_*` treats as declared).
    pub declared_ai: Action,
    /// A C2PA manifest is present but invalid (unreadable, or its signature does not verify).
    pub c2pa_invalid: Action,
    /// The content does not match the hash its C2PA manifest signed.
    #[serde(default = "review")]
    pub c2pa_tampered: Action,
    /// The C2PA signer is not on the configured trust list (only reported with one).
    #[serde(default = "allow")]
    pub c2pa_untrusted: Action,
    /// The C2PA signing certificate had expired.
    #[serde(default = "allow")]
    pub c2pa_expired: Action,
    /// GB 45438 label 1 ("AI-generated").
    #[serde(default = "declared")]
    pub aigc_label_1: AigcRule,
    /// GB 45438 label 2 ("possibly AI-generated").
    #[serde(default = "declared")]
    pub aigc_label_2: AigcRule,
    /// GB 45438 label 3 ("suspected AI-generated").
    #[serde(default = "review_aigc")]
    pub aigc_label_3: AigcRule,
    /// The image could not be fetched.
    pub fetch_failed: Action,
    /// The image could not be decoded.
    pub decode_failed: Action,
    /// The most severe action the model takes on the main image, with no declaration.
    pub model_ai_main: Action,
    /// The most severe action the model takes on a detail or SKU image, with no declaration.
    pub model_ai_secondary: Action,
    /// Where the model's score means `label`.
    pub model_label_at: OperatingPoint,
    /// Where the model's score means `review`.
    pub model_review_at: OperatingPoint,
    /// Where the model's score means `block`.
    pub model_block_at: OperatingPoint,
    /// The most severe action the model takes on an image whose C2PA manifest claims a camera
    /// capture and verifies (`trusted` or `valid`).
    #[serde(default = "review")]
    pub model_ai_verified_capture: Action,
}

fn review() -> Action {
    Action::Review
}
fn allow() -> Action {
    Action::Allow
}
fn declared() -> AigcRule {
    AigcRule::DeclaredAi
}
fn review_aigc() -> AigcRule {
    AigcRule::Review
}

macro_rules! override_struct {
    ($($f:ident: $t:ty),*) => {
        /// An override: matchers plus any subset of [`Rules`].
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Override {
            /// Applies only on this marketplace (any when absent).
            pub marketplace: Option<String>,
            /// Applies only in this category (any when absent).
            pub category: Option<String>,
            $(
                #[doc = concat!("See [`Rules::", stringify!($f), "`].")]
                pub $f: Option<$t>,
            )*
        }

        impl Override {
            fn apply_to(&self, r: &mut Rules) {
                $( if let Some(v) = self.$f { r.$f = v; } )*
            }
        }
    };
}
// Every field of `Rules`, each optional in an override.
override_struct!(
    declared_ai: Action,
    c2pa_invalid: Action,
    c2pa_tampered: Action,
    c2pa_untrusted: Action,
    c2pa_expired: Action,
    aigc_label_1: AigcRule,
    aigc_label_2: AigcRule,
    aigc_label_3: AigcRule,
    fetch_failed: Action,
    decode_failed: Action,
    model_ai_main: Action,
    model_ai_secondary: Action,
    model_label_at: OperatingPoint,
    model_review_at: OperatingPoint,
    model_block_at: OperatingPoint,
    model_ai_verified_capture: Action
);

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
            o.apply_to(&mut r);
        }
        r
    }

    /// Every false-positive rate the policy names as a model operating point, in any rule
    /// (sorted, without repeats): the model card must have a threshold for each
    /// (`listing-guard check-config` checks it).
    pub fn model_fprs(&self) -> Vec<f32> {
        let points = |r: &Rules| [r.model_label_at, r.model_review_at, r.model_block_at];
        let mut out: Vec<f32> = points(&self.file.defaults)
            .into_iter()
            .chain(self.file.overrides.iter().flat_map(|o| {
                [o.model_label_at, o.model_review_at, o.model_block_at]
                    .into_iter()
                    .flatten()
            }))
            .filter_map(OperatingPoint::fpr)
            .collect();
        out.sort_by(f32::total_cmp);
        out.dedup_by(|a, b| same_rate(*a, *b));
        out
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
    let markers = &signals.provenance.markers;
    let aigc_rule = |m: &Marker| match m.aigc_label.as_deref().map(str::trim) {
        Some("1") => rules.aigc_label_1,
        Some("2") => rules.aigc_label_2,
        Some("3") => rules.aigc_label_3,
        // A label value the standard does not define is no declaration.
        _ => AigcRule::Allow,
    };
    // A GB 45438 label declares AI where the policy treats its value as a declaration; every
    // other marker says so itself.
    let declaring: Vec<&Marker> = markers
        .iter()
        .filter(|m| match m.kind {
            MarkerKind::Tc260Aigc if m.aigc_label.is_some() => aigc_rule(m) == AigcRule::DeclaredAi,
            _ => m.declares_ai,
        })
        .collect();
    if !declaring.is_empty() {
        action = action.max(rules.declared_ai);
        label = Some(LabelBasis::DeclaredInMetadata);
        reasons.push(reason(
            codes::AI_DECLARED_METADATA,
            describe_markers(&declaring),
        ));
    }
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Tc260Aigc) {
        if let Some(a) = aigc_rule(m).action().filter(|&a| a > Action::Allow) {
            action = action.max(a);
            if a == Action::Label {
                label.get_or_insert(LabelBasis::DeclaredInMetadata);
            }
            reasons.push(reason(
                codes::AI_SUSPECTED_METADATA,
                format!(
                    "GB 45438 label {} in the file: {}",
                    m.aigc_label.as_deref().unwrap_or("?"),
                    m.evidence
                ),
            ));
        }
    }
    if let Some(bad) = markers.iter().find(|m| m.kind == MarkerKind::C2paInvalid) {
        action = action.max(rules.c2pa_invalid);
        reasons.push(reason(
            codes::C2PA_INVALID,
            format!("C2PA data does not validate: {}", bad.evidence),
        ));
    }
    let mut verified_capture = false;
    for m in markers
        .iter()
        .filter(|m| m.kind == MarkerKind::C2paManifest)
    {
        let Some(state) = m.c2pa_validation else {
            continue;
        };
        verified_capture |= m.capture_claim && state.verified();
        let (rule, code, what) = match state {
            C2paValidation::Trusted | C2paValidation::Valid => continue,
            C2paValidation::Tampered => (
                rules.c2pa_tampered,
                codes::C2PA_TAMPERED,
                "the content does not match the hash its C2PA manifest signed",
            ),
            C2paValidation::Untrusted => (
                rules.c2pa_untrusted,
                codes::C2PA_UNTRUSTED,
                "the C2PA signer is not on the trust list",
            ),
            C2paValidation::Expired => (
                rules.c2pa_expired,
                codes::C2PA_EXPIRED,
                "the C2PA signing certificate had expired",
            ),
            C2paValidation::Invalid => (
                rules.c2pa_invalid,
                codes::C2PA_INVALID,
                "the C2PA manifest does not validate",
            ),
        };
        // A state whose rule is `allow` is shown in the signals, not given as a reason.
        if rule > Action::Allow {
            action = action.max(rule);
            reasons.push(reason(
                code,
                format!("{what} ({})", m.c2pa_failures.join(", ")),
            ));
        }
    }
    if declaring.is_empty() {
        if let Some(score) = &signals.model {
            if let Some((found, point, threshold)) = model_finding(rules, score) {
                let cap = if role == ImageRole::Main {
                    rules.model_ai_main
                } else {
                    rules.model_ai_secondary
                };
                let mut model_action = found.min(cap);
                if verified_capture && model_action > rules.model_ai_verified_capture {
                    model_action = rules.model_ai_verified_capture;
                    reasons.push(reason(
                        codes::C2PA_CAPTURE_VERIFIED,
                        format!(
                            "a verified C2PA camera-capture claim caps the model's action at {model_action}"
                        ),
                    ));
                }
                if model_action > Action::Allow {
                    action = action.max(model_action);
                    label = label.or(Some(LabelBasis::Detected));
                    reasons.push(reason(
                        codes::AI_DETECTED_MODEL,
                        format!(
                            "model {} gives AI probability {:.3}, at or above the {} operating point {point} (threshold {threshold:.3}; max crop {:.3})",
                            score.model_version,
                            score.ai_probability,
                            found,
                            score.max_crop_probability
                        ),
                    ));
                }
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

/// The most severe action whose operating point the score reaches, with that point and its
/// threshold.
fn model_finding(
    rules: &Rules,
    score: &lg_events::ModelScore,
) -> Option<(Action, OperatingPoint, f32)> {
    [
        (Action::Block, rules.model_block_at),
        (Action::Review, rules.model_review_at),
        (Action::Label, rules.model_label_at),
    ]
    .into_iter()
    .find_map(|(action, point)| {
        let t = point.threshold(score)?;
        (score.ai_probability >= t).then_some((action, point, t))
    })
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
        MarkerKind::GeneratorHint => "generator hint",
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
    use lg_events::{ModelOperatingPoint, ModelScore, Provenance};

    fn marker(kind: MarkerKind, declares_ai: bool) -> Marker {
        Marker::new(kind, declares_ai, Some("gen".into()), "ev".into())
    }

    fn aigc(label: &str) -> Marker {
        Marker {
            aigc_label: Some(label.into()),
            ..marker(MarkerKind::Tc260Aigc, label != "3")
        }
    }

    fn c2pa(state: C2paValidation, declares_ai: bool, capture: bool) -> Marker {
        Marker {
            c2pa_validation: Some(state),
            c2pa_failures: vec!["code.x".into()],
            capture_claim: capture,
            ..marker(MarkerKind::C2paManifest, declares_ai)
        }
    }

    /// The operating points of a model card: 1% FPR at 0.8, 0.1% at 0.95.
    const POINTS: [ModelOperatingPoint; 2] = [
        ModelOperatingPoint {
            fpr: 0.01,
            threshold: 0.8,
        },
        ModelOperatingPoint {
            fpr: 0.001,
            threshold: 0.95,
        },
    ];

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
                operating_points: POINTS.to_vec(),
                crossed_fpr: ModelOperatingPoint::crossed(&POINTS, p),
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
        use Action::*;
        use C2paValidation::*;
        use ImageRole::*;
        use MarkerKind::*;
        let ai = || signals(vec![marker(IptcDigitalSourceType, true)], None);
        let model = |p: f32| signals(vec![], Some(p));
        let one = |m: Marker| signals(vec![m], None);
        let cases: Vec<(&str, &str, ImageRole, Signals, Action, &str)> = vec![
            (
                "taobao",
                "apparel",
                Main,
                ai(),
                Label,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "tmall",
                "apparel",
                Detail,
                ai(),
                Label,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                ai(),
                Block,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "taobao",
                "beauty",
                Main,
                ai(),
                Review,
                codes::AI_DECLARED_METADATA,
            ),
            // Later override wins: xianyu comes after beauty in the default file.
            (
                "xianyu",
                "beauty",
                Main,
                ai(),
                Block,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "taobao",
                "apparel",
                Main,
                signals(vec![], None),
                Allow,
                codes::NO_AI_SIGNAL,
            ),
            // A C2PA manifest that declares nothing is not a reason to act.
            (
                "taobao",
                "apparel",
                Main,
                one(marker(C2paManifest, false)),
                Allow,
                codes::NO_AI_SIGNAL,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(marker(C2paInvalid, false)),
                Review,
                codes::C2PA_INVALID,
            ),
            // The model: the 1% point (0.8) labels or reviews by role, the 0.1% point (0.95)
            // blocks only where the policy blocks.
            (
                "taobao",
                "apparel",
                Main,
                model(0.95),
                Review,
                codes::AI_DETECTED_MODEL,
            ),
            (
                "taobao",
                "apparel",
                Sku,
                model(0.95),
                Label,
                codes::AI_DETECTED_MODEL,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                model(0.95),
                Block,
                codes::AI_DETECTED_MODEL,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                model(0.9),
                Review,
                codes::AI_DETECTED_MODEL,
            ),
            (
                "taobao",
                "apparel",
                Sku,
                model(0.85),
                Label,
                codes::AI_DETECTED_MODEL,
            ),
            (
                "taobao",
                "apparel",
                Main,
                model(0.79),
                Allow,
                codes::NO_AI_SIGNAL,
            ),
            // GB 45438 labels by value: 1 and 2 declare, 3 goes to review.
            (
                "taobao",
                "apparel",
                Main,
                one(aigc("1")),
                Label,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(aigc("2")),
                Label,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(aigc("3")),
                Review,
                codes::AI_SUSPECTED_METADATA,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                one(aigc("2")),
                Block,
                codes::AI_DECLARED_METADATA,
            ),
            // C2PA states: tampered and invalid review; untrusted and expired alone do
            // nothing; an AI declaration counts whatever the state.
            (
                "taobao",
                "apparel",
                Main,
                one(c2pa(Tampered, false, false)),
                Review,
                codes::C2PA_TAMPERED,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(c2pa(Untrusted, false, false)),
                Allow,
                codes::NO_AI_SIGNAL,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(c2pa(Expired, false, false)),
                Allow,
                codes::NO_AI_SIGNAL,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(c2pa(Invalid, false, false)),
                Review,
                codes::C2PA_INVALID,
            ),
            (
                "taobao",
                "apparel",
                Main,
                one(c2pa(Expired, true, false)),
                Label,
                codes::AI_DECLARED_METADATA,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                one(c2pa(Tampered, true, false)),
                Block,
                codes::AI_DECLARED_METADATA,
            ),
            // A verified capture claim caps the model at review; an unverified one does not.
            (
                "xianyu",
                "apparel",
                Main,
                signals(vec![c2pa(Valid, false, true)], Some(0.99)),
                Review,
                codes::C2PA_CAPTURE_VERIFIED,
            ),
            (
                "xianyu",
                "apparel",
                Main,
                signals(vec![c2pa(Untrusted, false, true)], Some(0.99)),
                Block,
                codes::AI_DETECTED_MODEL,
            ),
        ];
        for (marketplace, category, role, s, expected, code) in cases {
            check(marketplace, category, role, s, expected, code);
        }
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
        let changed =
            DEFAULT_POLICY_TOML.replace("model_review_at = \"fpr:1%\"", "model_review_at = 0.8");
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
        for (bad, says) in [
            ("1.5", "outside [0, 1]"),
            ("\"fpr:0%\"", "above 0%"),
            ("\"1%\"", "fpr:<percent>%"),
            ("\"fpr:1\"", "percentage"),
        ] {
            let p = DEFAULT_POLICY_TOML.replace(
                "model_review_at = \"fpr:1%\"",
                &format!("model_review_at = {bad}"),
            );
            let e = Policy::from_toml_str(&p).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let global = format!("{DEFAULT_POLICY_TOML}\n[[overrides]]\ndeclared_ai = \"block\"\n");
        assert!(Policy::from_toml_str(&global)
            .unwrap_err()
            .to_string()
            .contains("overrides[2]"));
    }

    #[test]
    fn operating_points_parse_print_and_are_listed() {
        for (text, point) in [
            ("fpr:1%", OperatingPoint::Fpr(0.01)),
            ("fpr:0.1%", OperatingPoint::Fpr(0.001)),
            ("never", OperatingPoint::Never),
        ] {
            let p: OperatingPoint = text.parse().unwrap();
            assert_eq!(p, point);
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(Policy::default_policy().model_fprs(), vec![0.001, 0.01]);
        // A rate the model card lacks: the model takes no action (check-config refuses it).
        let p = Policy::from_toml_str(&DEFAULT_POLICY_TOML.replace(
            "model_review_at = \"fpr:1%\"",
            "model_review_at = \"fpr:2%\"",
        ))
        .unwrap();
        assert_eq!(p.model_fprs(), vec![0.001, 0.01, 0.02]);
        let s = signals(vec![], Some(0.9));
        let v = evaluate(
            &p,
            "taobao",
            "x",
            &[ImageInput::Analysed {
                role: ImageRole::Main,
                signals: &s,
            }],
        );
        // 0.9 crosses the 1% label point; review's 2% point is not on the card.
        assert_eq!(v.action, Action::Label);
        // A policy file written before the C2PA and GB 45438 rules keeps its meaning.
        let old = DEFAULT_POLICY_TOML
            .lines()
            .filter(|l| {
                !l.starts_with("c2pa_tampered")
                    && !l.starts_with("aigc_label")
                    && !l.starts_with("c2pa_untrusted")
                    && !l.starts_with("c2pa_expired")
                    && !l.starts_with("model_ai_verified")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let old = Policy::from_toml_str(&old).unwrap();
        assert_eq!(
            old.rules_for("a", "b"),
            Policy::default_policy().rules_for("a", "b")
        );
    }
}
