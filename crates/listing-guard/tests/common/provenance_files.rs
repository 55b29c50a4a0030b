//! Files built to reproduce the provenance patterns of real vendor files, for the score
//! conformance tests: C2PA declarations in ingredients only, nested ingredients, tampered
//! content, an expired signer, a GB 45438 label in EXIF UserComment, HEIC with XMP, AVIF with
//! C2PA.
//!
//! Manifests are signed with a test chain made here with `rcgen`: a root CA and ES256 signers
//! with the C2PA certificate profile (digital signature, email-protection EKU, not a CA). The
//! `c2pa` crate's own test certificates are not in its published package, and an expired
//! signer cannot be committed: the SDK refuses to sign with a certificate that is not valid at
//! signing time, so that one is made valid for two seconds and the files are read after it
//! lapsed.

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use c2pa::{create_signer, Builder, Context, SigningAlg};
use listing_guard::fixtures;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const IPTC: &str = "http://cv.iptc.org/newscodes/digitalsourcetype/";

/// How long the short-lived signer's certificate lives.
const SHORT_LIFE: Duration = Duration::from_secs(2);

/// A test root CA.
pub(crate) struct Root {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Root {
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, "Listing Guard tests");
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// Writes the root as a PEM trust list.
    pub(crate) fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }

    /// A signer this root issued, valid from a day ago until `lifetime` from now.
    pub(crate) fn signer(&self, lifetime: Duration) -> Box<dyn c2pa::Signer> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, "Listing Guard tests");
        p.distinguished_name
            .push(DnType::CommonName, "Listing Guard test signer");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + lifetime;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let chain = format!("{}{}", cert.pem(), self.cert.pem());
        create_signer::from_keys(
            chain.as_bytes(),
            key.serialize_pem().as_bytes(),
            SigningAlg::Es256,
            None,
        )
        .unwrap()
    }
}

/// A manifest definition: claim generator and actions, each with an optional source type.
/// `c2pa.opened` and `c2pa.placed` name the one ingredient.
fn definition(generator: &str, actions: &[(&str, Option<&str>)]) -> String {
    let actions: Vec<serde_json::Value> = actions
        .iter()
        .map(|(action, source_type)| {
            let mut a = serde_json::json!({ "action": action });
            if let Some(t) = source_type {
                a["digitalSourceType"] = format!("{IPTC}{t}").into();
            }
            if *action == "c2pa.opened" || *action == "c2pa.placed" {
                a["parameters"] = serde_json::json!({ "ingredientIds": ["ingredient-0"] });
            }
            a
        })
        .collect();
    serde_json::json!({
        "claim_generator_info": [{ "name": generator, "version": "1.0" }],
        "title": "file",
        "assertions": [{ "label": "c2pa.actions.v2", "data": { "actions": actions } }],
    })
    .to_string()
}

/// An ingredient: title, MIME type, bytes (signed or not), relationship.
type Ingredient<'a> = (&'a str, &'a str, &'a [u8], &'a str);

/// Signs `source` (of MIME type `format`) with a manifest, optionally over one ingredient.
fn sign(
    format: &str,
    source: &[u8],
    generator: &str,
    actions: &[(&str, Option<&str>)],
    ingredient: Option<Ingredient<'_>>,
    signer: &dyn c2pa::Signer,
) -> Vec<u8> {
    // The short-lived signer is checked at signing, not after.
    let ctx = Context::new()
        .with_settings(r#"{"verify": {"verify_after_sign": false, "verify_trust": false}}"#)
        .unwrap();
    let mut builder = Builder::from_context(ctx)
        .with_definition(definition(generator, actions))
        .unwrap();
    if let Some((title, ing_format, bytes, relationship)) = ingredient {
        let json = serde_json::json!({
            "title": title,
            "relationship": relationship,
            "label": "ingredient-0",
        });
        builder
            .add_ingredient_from_stream(json.to_string(), ing_format, &mut Cursor::new(bytes))
            .unwrap();
    }
    let mut dest = Cursor::new(Vec::new());
    builder
        .sign(signer, format, &mut Cursor::new(source), &mut dest)
        .unwrap();
    dest.into_inner()
}

fn photo_jpeg(seed: u32) -> Vec<u8> {
    fixtures::jpeg(&fixtures::photo(320, 240, seed))
}

fn photo_png(seed: u32) -> Vec<u8> {
    fixtures::png(&fixtures::photo(320, 240, seed))
}

/// A HEIF file (`hevc`: HEIC, else AVIF) of a 256×192 photo, with `xmp` when given.
pub(crate) fn heif(hevc: bool, seed: u32, xmp: Option<&str>) -> Vec<u8> {
    use libheif_rs::{
        Channel, ColorSpace, CompressionFormat, HeifContext, Image, LibHeif, RgbChroma,
    };
    let (w, h) = (256u32, 192u32);
    let src = fixtures::photo(w, h, seed);
    let mut image = Image::new(w, h, ColorSpace::Rgb(RgbChroma::Rgb)).unwrap();
    image.create_plane(Channel::Interleaved, w, h, 24).unwrap();
    {
        let planes = image.planes_mut();
        let plane = planes.interleaved.unwrap();
        for y in 0..h as usize {
            let row = &src.as_raw()[y * w as usize * 3..(y + 1) * w as usize * 3];
            plane.data[y * plane.stride..y * plane.stride + row.len()].copy_from_slice(row);
        }
    }
    let lib = LibHeif::new();
    let mut ctx = HeifContext::new().unwrap();
    let format = if hevc {
        CompressionFormat::Hevc
    } else {
        CompressionFormat::Av1
    };
    let mut encoder = lib.encoder_for_format(format).unwrap();
    let handle = ctx.encode_image(&image, &mut encoder, None).unwrap();
    if let Some(x) = xmp {
        ctx.add_xmp_metadata(&handle, x.as_bytes()).unwrap();
    }
    ctx.write_to_bytes().unwrap()
}

/// One conformance file: its name, bytes, and what a reader must find.
pub(crate) struct Built {
    pub(crate) name: &'static str,
    pub(crate) bytes: Vec<u8>,
    /// `declared_ai` of the whole file.
    pub(crate) declared_ai: bool,
    /// The C2PA validation state expected, if the file has a manifest.
    pub(crate) validation: Option<&'static str>,
    /// A substring the declaring marker's evidence must contain.
    pub(crate) evidence: Option<&'static str>,
}

/// Every pattern, built fresh, signed by signers of `root` (returns once the expired signer's
/// certificate has lapsed).
pub(crate) fn all(root: &Root) -> Vec<Built> {
    let short = root.signer(SHORT_LIFE);
    let short_made = std::time::Instant::now();
    let valid = root.signer(Duration::from_secs(3600 * 24 * 365));
    let v = &*valid;
    let created = |t: &'static str| [("c2pa.created", Some(t))];
    // ChatGPT: the generated parent, then the file that opened it.
    let generated = sign(
        "image/png",
        &photo_png(1),
        "ChatGPT",
        &created("trainedAlgorithmicMedia"),
        None,
        v,
    );
    let opened = [("c2pa.opened", None)];
    let chatgpt = sign(
        "image/png",
        &photo_png(1),
        "ChatGPT",
        &opened,
        Some(("image.png", "image/png", &generated, "parentOf")),
        v,
    );
    // Nested: an editor opened the ChatGPT file: the declaration is two levels down.
    let nested = sign(
        "image/jpeg",
        &photo_jpeg(2),
        "Photo Editor",
        &opened,
        Some(("chatgpt.png", "image/png", &chatgpt, "parentOf")),
        v,
    );
    // Gemini: `composite` on the active manifest, the AI component below.
    let component = sign(
        "image/png",
        &photo_png(3),
        "Google Gemini",
        &created("trainedAlgorithmicMedia"),
        None,
        v,
    );
    let gemini = sign(
        "image/jpeg",
        &photo_jpeg(3),
        "Google C2PA Core",
        &[("c2pa.created", Some("composite")), ("c2pa.placed", None)],
        Some(("component.png", "image/png", &component, "componentOf")),
        v,
    );
    // A camera capture, and the same with its pixels changed after signing.
    let capture = sign(
        "image/jpeg",
        &photo_jpeg(4),
        "Test Camera",
        &created("digitalCapture"),
        None,
        v,
    );
    let tampered = tamper_scan(&capture);
    // An AI declaration signed with an expired certificate still counts.
    let expired = sign(
        "image/jpeg",
        &photo_jpeg(5),
        "Some Generator",
        &created("trainedAlgorithmicMedia"),
        None,
        &*short,
    );
    // An algorithmicMedia edit, and a Firefly edit without a source type, of a plain photo:
    // neither declares.
    let photo = photo_jpeg(6);
    let plain = Some(("photo.jpg", "image/jpeg", photo.as_slice(), "parentOf"));
    let algorithmic = sign(
        "image/jpeg",
        &photo,
        "Filter App",
        &[
            ("c2pa.opened", None),
            ("c2pa.edited", Some("algorithmicMedia")),
        ],
        plain,
        v,
    );
    let firefly_edit = sign(
        "image/jpeg",
        &photo,
        "Adobe Firefly",
        &[("c2pa.opened", None), ("c2pa.edited", None)],
        plain,
        v,
    );
    let avif = sign(
        "image/avif",
        &heif(false, 8, None),
        "Some Generator",
        &created("trainedAlgorithmicMedia"),
        None,
        v,
    );
    // The short-lived certificate must have lapsed before anything reads the files.
    std::thread::sleep(
        (SHORT_LIFE + Duration::from_millis(1500)).saturating_sub(short_made.elapsed()),
    );
    vec![
        Built {
            name: "c2pa-ingredient-only.png",
            bytes: chatgpt,
            declared_ai: true,
            validation: Some("valid"),
            evidence: Some("ingredient 'image.png' created by ChatGPT: trainedAlgorithmicMedia"),
        },
        Built {
            name: "c2pa-nested-ingredient.jpg",
            bytes: nested,
            declared_ai: true,
            validation: Some("valid"),
            evidence: Some("ingredient 'image.png' of ingredient 'chatgpt.png' created by ChatGPT"),
        },
        Built {
            name: "c2pa-composite-component.jpg",
            bytes: gemini,
            declared_ai: true,
            validation: Some("valid"),
            evidence: Some("ingredient 'component.png' created by Google Gemini"),
        },
        Built {
            name: "c2pa-tampered-capture.jpg",
            bytes: tampered,
            declared_ai: false,
            validation: Some("tampered"),
            evidence: None,
        },
        Built {
            name: "c2pa-capture.jpg",
            bytes: capture,
            declared_ai: false,
            validation: Some("valid"),
            evidence: None,
        },
        Built {
            name: "c2pa-expired-signer.jpg",
            bytes: expired,
            declared_ai: true,
            validation: Some("expired"),
            evidence: Some("created by Some Generator: trainedAlgorithmicMedia"),
        },
        Built {
            name: "c2pa-algorithmic-edit.jpg",
            bytes: algorithmic,
            declared_ai: false,
            validation: Some("valid"),
            evidence: None,
        },
        Built {
            name: "c2pa-firefly-edit.jpg",
            bytes: firefly_edit,
            declared_ai: false,
            validation: Some("valid"),
            evidence: None,
        },
        Built {
            name: "exif-usercomment-aigc.jpg",
            bytes: fixtures::with_jpeg_exif_user_comment(
                &photo_jpeg(9),
                r#"{"AIGC":{"Label":"1","ContentProducer":"producer-7","ProduceID":"x1"}}"#,
            ),
            declared_ai: true,
            validation: None,
            evidence: Some("EXIF UserComment TC260:AIGC Label=1"),
        },
        Built {
            name: "heic-xmp-iptc.heic",
            bytes: heif(
                true,
                10,
                Some(&fixtures::xmp_iptc("trainedAlgorithmicMedia")),
            ),
            declared_ai: true,
            validation: None,
            evidence: Some("trainedAlgorithmicMedia"),
        },
        Built {
            name: "heic-xmp-tc260.heic",
            bytes: heif(
                true,
                11,
                Some(&fixtures::xmp_tc260(
                    r#"{"Label":"2","ContentProducer":"doubao"}"#,
                )),
            ),
            declared_ai: true,
            validation: None,
            evidence: Some("XMP TC260:AIGC Label=2"),
        },
        Built {
            name: "heic-plain.heic",
            bytes: heif(true, 12, None),
            declared_ai: false,
            validation: None,
            evidence: None,
        },
        Built {
            name: "avif-c2pa.avif",
            bytes: avif,
            declared_ai: true,
            validation: Some("valid"),
            evidence: Some("trainedAlgorithmicMedia"),
        },
    ]
}

/// Flips bits in the middle of a JPEG's entropy-coded data: the file still parses, its
/// content hash no longer matches.
fn tamper_scan(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sos = out.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let at = sos + (out.len() - sos) / 2;
    // Avoid creating a marker (0xFF) or breaking a stuffed byte.
    for b in &mut out[at..at + 4] {
        if *b != 0xFF && *b != 0x00 && *b ^ 0x01 != 0xFF {
            *b ^= 0x01;
        }
    }
    out
}
