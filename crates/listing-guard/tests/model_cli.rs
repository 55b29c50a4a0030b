//! `listing-guard eval` on a labelled folder written by others (the shared corpus).

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn eval_on_a_folder_written_by_others() {
    let Some(corpus) = common::corpus_dir() else {
        return;
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/npr-small");
    let dir = std::env::temp_dir().join(format!("lg-eval-{}", std::process::id()));
    for (sub, files) in [
        (
            "real",
            &[
                "c2pa-rs/C.jpg",
                "c2pa-rs/thumbnail.jpg",
                "c2pa-rs/test.webp",
            ][..],
        ),
        (
            "ai/comfyui",
            &["sd-parsers/parsers__ComfyUI__unclip_2pass_cropped.png"][..],
        ),
        (
            "ai/a1111",
            &["sd-parsers/parsers__AUTOMATIC1111__automatic1111_stealth.png"][..],
        ),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for f in files {
            std::fs::copy(
                corpus.join(f),
                dir.join(sub).join(Path::new(f).file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .args([
            "eval",
            "--data",
            dir.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "eval failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(" AP ") && stdout.contains("TPR@1%FPR"),
        "{stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["clean"]["real"], 3, "{r}");
    assert!(r["model"]
        .as_str()
        .unwrap()
        .starts_with("npr-small@sha256:"));
    assert!(r["robust_jpeg75_half"]["ap"].is_number() || r["robust_jpeg75_half"]["ai"] == 0);
    std::fs::remove_dir_all(&dir).ok();
}
