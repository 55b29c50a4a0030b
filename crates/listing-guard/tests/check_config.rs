//! `listing-guard check-config`: the shipped example passes, a bad file fails naming the key,
//! and `--print` shows the effective config with secrets masked.

use std::path::Path;
use std::process::Command;

fn check(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .arg("check-config")
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("KAFKA_BROKERS")
        .current_dir(&root)
        .output()
        .expect("listing-guard runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_passes_bad_values_fail_and_secrets_are_masked() {
    let (ok, stdout, stderr) = check(&["deploy/config.example.toml"], &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("config OK") && stdout.contains("policy default@sha256:"),
        "{stdout}"
    );

    // The example leaves detector.model_dir empty: the shipped model runs, and the line says
    // where it was found.
    assert!(
        stdout.contains("model residual-lr@sha256:") && stdout.contains("models/residual-lr)"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = check(
        &["deploy/config.example.toml"],
        &[("LISTING_GUARD__DETECTOR__MODEL_DIR", "none")],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("model none)"), "{stdout}");

    let (ok, _, stderr) = check(
        &["deploy/config.example.toml"],
        &[("LISTING_GUARD__PIPELINE__MAX_IN_FLIGHT", "0")],
    );
    assert!(!ok);
    assert!(stderr.contains("pipeline.max_in_flight"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("lg-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("secret.toml");
    std::fs::write(
        &f,
        "[pipeline]\nmax_in_flight = 128\n[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&[f.to_str().unwrap(), "--print"], &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("[kafka]") && stdout.contains("max_in_flight = 128"),
        "{stdout}"
    );
    assert!(stdout.contains("\"sasl.password\" = \"***\""), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");

    // librdkafka keys from the environment: underscores stand for the dots.
    let (ok, stdout, stderr) = check(
        &[f.to_str().unwrap(), "--print"],
        &[
            ("LISTING_GUARD__KAFKA__LIBRDKAFKA__SASL_USERNAME", "svc"),
            (
                "LISTING_GUARD__KAFKA__LIBRDKAFKA__SASL_PASSWORD",
                "from-env",
            ),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"sasl.username\" = \"svc\""), "{stdout}");
    assert!(!stdout.contains("from-env"), "{stdout}");
    let (ok, _, stderr) = check(
        &["deploy/config.example.toml"],
        &[(
            "LISTING_GUARD__KAFKA__LIBRDKAFKA__ENABLE_AUTO_OFFSET_STORE",
            "true",
        )],
    );
    assert!(!ok);
    assert!(stderr.contains("enable.auto.offset.store"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_policy_naming_an_operating_point_the_model_lacks_is_refused() {
    let dir = std::env::temp_dir().join(format!("lg-check-points-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/default.toml");
    let text = std::fs::read_to_string(&shipped).unwrap().replace(
        "model_review_at = \"fpr:1%\"",
        "model_review_at = \"fpr:2%\"",
    );
    assert!(
        text.contains("fpr:2%"),
        "the default policy names fpr:1% for review"
    );
    std::fs::write(&policy, text).unwrap();
    let envs = [("LISTING_GUARD__POLICY__FILE", policy.to_str().unwrap())];
    let (ok, _, stderr) = check(&["deploy/config.example.toml"], &envs);
    assert!(!ok);
    assert!(
        stderr.contains("fpr:2%") && stderr.contains("does not have"),
        "{stderr}"
    );
    // Without a model the policy's model rules are moot, and the config passes.
    let (ok, _, stderr) = check(
        &["deploy/config.example.toml"],
        &[envs[0], ("LISTING_GUARD__DETECTOR__MODEL_DIR", "none")],
    );
    assert!(ok, "{stderr}");
}

#[test]
fn the_engine_instruction_sets_come_from_the_config() {
    let npr = ("LISTING_GUARD__DETECTOR__MODEL_DIR", "models/npr-small");
    // bf16 off: `auto` runs f32 on any CPU, and the model version carries no arithmetic mark.
    let (ok, stdout, stderr) = check(
        &["deploy/config.example.toml"],
        &[npr, ("LISTING_GUARD__DETECTOR__CPU__BF16", "false")],
    );
    assert!(ok, "{stderr}");
    let version = stdout
        .split("model npr-small@sha256:")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no model version in {stdout}"));
    assert_eq!(version.len(), 12, "an arithmetic mark on {version}");
    assert!(stderr.contains("kernel=\"avx512-f32\"") || stderr.contains("kernel=\"gemm-f32\""));
    // AVX-512 off as well: the gemm crate's kernels.
    let (ok, _, stderr) = check(
        &["deploy/config.example.toml"],
        &[
            npr,
            ("LISTING_GUARD__DETECTOR__CPU__BF16", "false"),
            ("LISTING_GUARD__DETECTOR__CPU__AVX512", "false"),
        ],
    );
    assert!(ok && stderr.contains("kernel=\"gemm-f32\""), "{stderr}");
    // Shown by --print; a value that is not a boolean names its key.
    let (ok, stdout, stderr) = check(
        &["--print", "deploy/config.example.toml"],
        &[("LISTING_GUARD__DETECTOR__CPU__INT8", "false")],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("[detector.cpu]") && stdout.contains("int8 = false"),
        "{stdout}"
    );
    let (ok, _, stderr) = check(
        &["deploy/config.example.toml"],
        &[("LISTING_GUARD__DETECTOR__CPU__BF16", "nope")],
    );
    assert!(!ok && stderr.contains("detector.cpu.bf16"), "{stderr}");
}
