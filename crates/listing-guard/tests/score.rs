//! `listing-guard score` on fixtures the tests make, and on the shared conformance corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
#[path = "common/provenance_files.rs"]
mod provenance_files;

use common::corpus_dir;
use listing_guard::fixtures::Fixture;
use serde_json::Value;

fn score_with(flags: &[&str], paths: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .arg("score")
        .args(flags)
        .args(paths)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "score failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), paths.len(), "one JSON line per file");
    lines
}

/// Metadata only (fast, and what these conformance tests are about).
fn score(paths: &[PathBuf]) -> Vec<Value> {
    score_with(&["--no-model"], paths)
}

fn markers(v: &Value) -> Vec<(String, bool, Option<String>)> {
    v["provenance"]["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["declares_ai"].as_bool().unwrap(),
                m["generator"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn has(v: &Value, kind: &str, generator: Option<&str>) -> bool {
    markers(v)
        .iter()
        .any(|(k, _, g)| k == kind && (generator.is_none() || g.as_deref() == generator))
}

#[test]
fn fixtures_report_their_markers() {
    let dir = std::env::temp_dir().join(format!("lg-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = Fixture::ALL
        .iter()
        .map(|f| {
            let p = dir.join(f.name());
            std::fs::write(&p, f.bytes(3)).unwrap();
            p
        })
        .collect();
    let mut all = paths.clone();
    all.push(dir.join("does-not-exist.jpg"));
    let lines = score(&all);
    for (f, v) in Fixture::ALL.iter().zip(&lines) {
        assert_eq!(
            v["provenance"]["declared_ai"].as_bool(),
            Some(f.declares_ai()),
            "{}: {v}",
            f.name()
        );
        assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
        assert!(
            v["ai_probability"].is_null() && v["model"].is_null(),
            "--no-model leaves the model fields null"
        );
        let expect = match f {
            Fixture::CleanJpeg | Fixture::CleanPng => markers(v).is_empty(),
            Fixture::XmpTrainedAlgorithmic | Fixture::XmpAlgorithmic => {
                has(v, "iptc_digital_source_type", None)
            }
            Fixture::PngA1111 => has(v, "generator_parameters", Some("AUTOMATIC1111")),
            Fixture::PngComfyUi => has(v, "generator_parameters", Some("ComfyUI")),
            Fixture::ExifMidjourney => has(v, "exif_software", Some("Midjourney")),
            Fixture::XmpTc260 | Fixture::PngAigcChunk => {
                has(v, "tc260_aigc", Some("001191110108MA01KP2T5U00000"))
            }
            Fixture::BrokenJpeg => v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("decode_error")),
        };
        assert!(expect, "{}: {v}", f.name());
        if *f != Fixture::BrokenJpeg {
            assert!(v["error"].is_null(), "{}: {v}", f.name());
        }
    }
    let missing = lines.last().unwrap();
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("cannot read file"),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shipped_model_fills_the_model_fields() {
    // No flag: the shipped residual-feature model, found above the binary.
    model_fills_the_model_fields(&[], "residual-lr@sha256:");
}

#[test]
fn the_network_fills_the_model_fields() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/npr-small");
    assert!(
        model.join("model.json").is_file(),
        "the network is missing at {}",
        model.display()
    );
    model_fills_the_model_fields(&["--model", model.to_str().unwrap()], "npr-small@sha256:");
}

fn model_fills_the_model_fields(flags: &[&str], version: &str) {
    let dir = std::env::temp_dir().join(format!(
        "lg-score-model-{}-{}",
        std::process::id(),
        version.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.png");
    std::fs::write(
        &big,
        listing_guard::fixtures::png(&listing_guard::fixtures::photo(500, 300, 1)),
    )
    .unwrap();
    let small = dir.join("small.jpg");
    std::fs::write(&small, Fixture::CleanJpeg.bytes(2)).unwrap();
    let tiny = dir.join("tiny.png");
    std::fs::write(
        &tiny,
        listing_guard::fixtures::png(&listing_guard::fixtures::photo(20, 20, 3)),
    )
    .unwrap();
    let lines = score_with(flags, &[big, small, tiny]);
    for v in &lines[..2] {
        let p = v["ai_probability"].as_f64().expect("probability present");
        assert!((0.0..=1.0).contains(&p), "{v}");
        assert!(
            v["model"]["model_version"]
                .as_str()
                .unwrap()
                .starts_with(version),
            "{v}"
        );
        assert!(!v["model"]["operating_points"]
            .as_array()
            .unwrap()
            .is_empty());
    }
    // 500x300: a 5-crop grid of 224x224 crops; 256x192: one whole-image crop.
    assert_eq!(
        lines[0]["model"]["crop_probabilities"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        lines[1]["model"]["crop_probabilities"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // 20x20 decodes (over the 16 px minimum) but is under the models' 32 px: no model score.
    assert!(
        lines[2]["model"].is_null()
            && lines[2]["ai_probability"].is_null()
            && lines[2]["error"].is_null(),
        "{}",
        lines[2]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shared_corpus_matches_manifest() {
    let Some(dir) = corpus_dir() else { return };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let rows: Vec<(String, String)> = manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_owned(), cols[4].to_owned())
        })
        .collect();
    assert!(rows.len() >= 40, "manifest has {} rows", rows.len());
    let lines = score(&rows.iter().map(|(f, _)| dir.join(f)).collect::<Vec<_>>());
    let mut failures = Vec::new();
    for ((file, expected), v) in rows.iter().zip(&lines) {
        let c2pa_kinds: Vec<String> = markers(v)
            .into_iter()
            .filter(|(k, _, _)| k.starts_with("c2pa"))
            .map(|(k, _, _)| k)
            .collect();
        let declared = v["provenance"]["declared_ai"].as_bool().unwrap();
        let ok = match expected.as_str() {
            "c2pa-ai" => c2pa_kinds == ["c2pa_manifest"] && declared,
            "c2pa-manifest" => c2pa_kinds == ["c2pa_manifest"] && !declared,
            "c2pa-remote-manifest" => c2pa_kinds == ["c2pa_remote_manifest"],
            "c2pa-present-invalid" => c2pa_kinds == ["c2pa_invalid"],
            "no-manifest" => c2pa_kinds.is_empty() && !declared,
            "sd-a1111" | "sd-a1111-stealth" => {
                declared && has(v, "generator_parameters", Some("AUTOMATIC1111"))
            }
            "sd-comfyui" => declared && has(v, "generator_parameters", Some("ComfyUI")),
            "sd-fooocus" => declared && has(v, "generator_parameters", Some("Fooocus")),
            "sd-invokeai" => declared && has(v, "generator_parameters", Some("InvokeAI")),
            "sd-novelai" => declared && has(v, "generator_parameters", Some("NovelAI")),
            "bad-image" => v["error"].as_str().is_some_and(|e| !e.is_empty()),
            other => panic!("unknown expectation {other:?} for {file}"),
        };
        if !ok {
            failures.push(format!("{file}: expected {expected}, got {v}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The default policy's verdict on one scored file, as the main image of a taobao listing.
fn verdict(line: &Value) -> lg_policy::ImageVerdict {
    let signals = lg_events::Signals {
        provenance: serde_json::from_value(line["provenance"].clone()).unwrap(),
        model: serde_json::from_value(line["model"].clone()).unwrap(),
    };
    let policy = lg_policy::Policy::default_policy();
    let input = match line["error"].as_str() {
        Some(e) => {
            let failure = lg_events::ImageFailure {
                class: e.split(':').next().unwrap().to_owned(),
                message: e.to_owned(),
            };
            return lg_policy::evaluate(
                &policy,
                "taobao",
                "apparel",
                &[lg_policy::ImageInput::DecodeFailed(&failure)],
            )
            .images
            .remove(0);
        }
        None => lg_policy::ImageInput::Analysed {
            role: lg_events::ImageRole::Main,
            signals: &signals,
        },
    };
    lg_policy::evaluate(&policy, "taobao", "apparel", &[input])
        .images
        .remove(0)
}

fn c2pa_marker(v: &Value) -> Option<&Value> {
    v["provenance"]["markers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "c2pa_manifest")
}

#[test]
fn provenance_patterns_built_here() {
    let dir = std::env::temp_dir().join(format!("lg-score-built-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = provenance_files::Root::new("Listing Guard test root");
    let built = provenance_files::all(&root);
    // LG_DUMP_BUILT=DIR keeps a copy (how the fuzz seeds under fuzz/seeds/c2pa were made).
    if let Some(keep) = std::env::var_os("LG_DUMP_BUILT") {
        for b in &built {
            std::fs::write(Path::new(&keep).join(b.name), &b.bytes).unwrap();
        }
    }
    let paths: Vec<PathBuf> = built
        .iter()
        .map(|b| {
            let p = dir.join(b.name);
            std::fs::write(&p, &b.bytes).unwrap();
            p
        })
        .collect();
    let lines = score(&paths);
    let mut failures = Vec::new();
    for (b, v) in built.iter().zip(&lines) {
        let mut problems = Vec::new();
        if v["provenance"]["declared_ai"].as_bool() != Some(b.declared_ai) {
            problems.push(format!("declared_ai should be {}", b.declared_ai));
        }
        if !v["error"].is_null() || v["dimensions"].is_null() {
            problems.push("should decode".to_owned());
        }
        let state = c2pa_marker(v).and_then(|m| m["c2pa_validation"].as_str());
        if state != b.validation {
            problems.push(format!("C2PA validation should be {:?}", b.validation));
        }
        if let Some(e) = b.evidence {
            let found = v["provenance"]["markers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["declares_ai"] == true && m["evidence"].as_str().unwrap().contains(e));
            if !found {
                problems.push(format!("no declaring marker's evidence contains {e:?}"));
            }
        }
        // Whatever declares AI is labelled on the default policy; a tampered file is held.
        let verdict = verdict(v);
        let expected = if b.declared_ai {
            lg_events::Action::Label
        } else if b.validation == Some("tampered") {
            lg_events::Action::Review
        } else {
            lg_events::Action::Allow
        };
        if verdict.action != expected {
            problems.push(format!(
                "default policy gives {} ({:?}), expected {expected}",
                verdict.action, verdict.reasons
            ));
        }
        if b.declared_ai && verdict.label != Some(lg_events::LabelBasis::DeclaredInMetadata) {
            problems.push("should be labelled as declared".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n  {v}", b.name, problems.join("; ")));
        }
    }
    // The Firefly edit is a hint for analytics, not a declaration.
    let firefly = &lines[built
        .iter()
        .position(|b| b.name == "c2pa-firefly-edit.jpg")
        .unwrap()];
    assert!(
        has(firefly, "generator_hint", Some("Adobe Firefly")),
        "{firefly}"
    );
    assert!(
        failures.is_empty(),
        "{} files:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // With a trust list, the same capture is trusted under its own root and untrusted under
    // another; either way the failure code says why.
    let capture = dir.join("c2pa-capture.jpg");
    root.write_pem(&dir.join("root.pem"));
    provenance_files::Root::new("Unrelated test root").write_pem(&dir.join("other-root.pem"));
    for (root, state) in [("root.pem", "trusted"), ("other-root.pem", "untrusted")] {
        let out = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
            .args(["score", "--no-model"])
            .arg(&capture)
            .env(
                "LISTING_GUARD__DETECTOR__C2PA_TRUST_ANCHORS",
                dir.join(root),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = c2pa_marker(&v).expect("a manifest");
        assert_eq!(m["c2pa_validation"], state, "{root}: {v}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unreadable_heic_and_avif_go_to_review_with_a_clear_class() {
    let dir = std::env::temp_dir().join(format!("lg-score-badheif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (name, hevc) in [("cut.heic", true), ("cut.avif", false)] {
        let mut b = provenance_files::heif(hevc, 20, None);
        b.truncate(b.len() / 2);
        let p = dir.join(name);
        std::fs::write(&p, &b).unwrap();
        paths.push(p);
    }
    for v in score(&paths) {
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.starts_with("decode_error:"), "{v}");
        let verdict = verdict(&v);
        assert_eq!(verdict.action, lg_events::Action::Review, "{v}");
        assert_eq!(
            verdict.reasons[0].code,
            lg_policy::codes::IMAGE_DECODE_FAILED
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn committed_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    for (name, text) in lg_events::schemas() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == text,
            "schemas/{name} is stale: run `listing-guard schemas` (make schemas) and commit"
        );
    }
}
