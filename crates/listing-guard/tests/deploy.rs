//! Everything under `deploy/` is checked without a Docker engine or a cluster: the config and
//! policy load through the real loaders (with the environment the manifests and images set),
//! every manifest parses and carries the fields the pipeline depends on, and every file the
//! manifests and Dockerfiles name exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml(rel: &str) -> Value {
    let p = root().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel} does not parse: {e}"))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v:?}"))
}

/// `COPY src dest` lines of a Dockerfile (not `--from` copies): dest → src.
fn copies(dockerfile: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (src, dest) = (f.next()?, f.next()?);
            Some((dest.to_owned(), src.to_owned()))
        })
        .collect()
}

/// Runs `check-config` on the example config with `env`, where paths inside the image are
/// mapped back to the repository through the Dockerfile's COPY lines.
fn check_config_with(env: &[(String, String)], dockerfile: &str) {
    let copies = copies(dockerfile);
    let cache = std::env::temp_dir().join(format!("lg-deploy-{}.redb", std::process::id()));
    let mapped: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let v = copies
                .iter()
                .find(|(dest, _)| v.starts_with(dest.as_str()))
                .map(|(dest, src)| v.replacen(dest.as_str(), src, 1))
                .unwrap_or_else(|| v.clone());
            let v = if k.ends_with("CACHE__PATH") {
                cache.display().to_string()
            } else {
                v
            };
            (k.clone(), v)
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .args(["check-config", "deploy/config.example.toml"])
        .envs(mapped.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("KAFKA_BROKERS")
        .current_dir(root())
        .output()
        .expect("listing-guard runs");
    let _ = std::fs::remove_file(&cache);
    assert!(
        out.status.success(),
        "check-config with {mapped:?} ({dockerfile}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `LISTING_GUARD…` variables a Dockerfile sets.
fn dockerfile_env(dockerfile: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.starts_with("LISTING_GUARD")
                .then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn kustomization_names_existing_files_and_the_shipped_config_and_policy() {
    let k = yaml("deploy/kustomization.yaml");
    for r in at(&k, "resources").as_sequence().unwrap() {
        let p = root().join("deploy").join(r.as_str().unwrap());
        assert!(p.exists(), "resource {} is missing", p.display());
    }
    let files: Vec<&str> = at(&k, "configMapGenerator.0.files")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"config.toml=config.example.toml"),
        "{files:?}"
    );
    assert!(
        files.contains(&"policy.toml=policy/default.toml"),
        "{files:?}"
    );
    let policy = std::fs::read_to_string(root().join("deploy/policy/default.toml")).unwrap();
    lg_policy::Policy::from_toml_str(&policy).expect("the shipped policy loads");

    let gpu = yaml("deploy/k8s/gpu/kustomization.yaml");
    assert_eq!(str_at(&gpu, "resources.0"), "../..");
    let patch = yaml(&format!(
        "deploy/k8s/gpu/{}",
        str_at(&gpu, "patches.0.path")
    ));
    let c = at(&patch, "spec.template.spec.containers.0");
    assert_eq!(
        at(c, "resources.limits")["nvidia.com/gpu"].as_u64(),
        Some(1)
    );
    assert!(at(&patch, "spec.template.spec.nodeSelector").is_mapping());
}

#[test]
fn deployment_probes_ports_and_environment_match_the_binary() {
    let d = yaml("deploy/k8s/deployment.yaml");
    assert_eq!(str_at(&d, "kind"), "Deployment");
    let spec = at(&d, "spec.template.spec");
    let c = at(spec, "containers.0");
    assert_eq!(str_at(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(at(c, "ports.0.containerPort").as_u64(), Some(9464));
    let settings =
        listing_guard::config::Settings::load(Some(&root().join("deploy/config.example.toml")))
            .unwrap();
    assert!(
        settings.telemetry.listen.ends_with(":9464"),
        "the example config serves the probes on the port the manifest names"
    );
    let grace = at(spec, "terminationGracePeriodSeconds").as_u64().unwrap();
    assert!(
        grace * 1000 > settings.pipeline.shutdown_timeout_ms,
        "the pod must outlive the pipeline's drain bound"
    );
    let env: Vec<(String, String)> = at(c, "env")
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                str_at(e, "name").to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(env.iter().any(|(k, _)| k == "LISTING_GUARD__POLICY__FILE"));
    check_config_with(&env, "deploy/docker/Dockerfile");

    let s = yaml("deploy/k8s/keda-scaledobject.yaml");
    assert_eq!(str_at(&s, "kind"), "ScaledObject");
    assert_eq!(
        str_at(&s, "spec.scaleTargetRef.name"),
        str_at(&d, "metadata.name")
    );
    let t = at(&s, "spec.triggers.0");
    assert_eq!(str_at(t, "type"), "kafka");
    assert_eq!(str_at(t, "metadata.topic"), settings.kafka.input_topic);
    assert_eq!(str_at(t, "metadata.consumerGroup"), settings.kafka.group_id);

    let pdb = yaml("deploy/k8s/pdb.yaml");
    assert_eq!(str_at(&pdb, "kind"), "PodDisruptionBudget");
    let svc = yaml("deploy/k8s/service.yaml");
    assert_eq!(str_at(&svc, "spec.ports.0.targetPort"), "telemetry");
}

#[test]
fn images_copy_existing_files_and_their_environment_is_valid() {
    for dockerfile in ["deploy/docker/Dockerfile", "deploy/docker/Dockerfile.cuda"] {
        let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
        assert!(
            text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
            "{dockerfile} is multi-stage"
        );
        for src in copies(dockerfile).values().filter(|s| *s != ".") {
            assert!(
                root().join(src).exists(),
                "{dockerfile} copies missing {src}"
            );
        }
        check_config_with(&dockerfile_env(dockerfile), dockerfile);
    }
    assert!(
        std::fs::read_to_string(root().join("deploy/docker/Dockerfile.cuda"))
            .unwrap()
            .contains("--features cuda")
    );
}

#[test]
fn compose_runs_kafka_the_pipeline_a_collector_and_prometheus() {
    let c = yaml("deploy/docker-compose.yml");
    let services = at(&c, "services");
    for s in [
        "kafka",
        "topics",
        "listing-guard",
        "feeder",
        "otel-collector",
        "prometheus",
    ] {
        assert!(services[s].is_mapping(), "service {s} is missing");
    }
    // The feeder runs the same image; its command parses as the binary's `feed` subcommand.
    assert_eq!(
        str_at(services, "feeder.image"),
        str_at(services, "listing-guard.image")
    );
    let args: Vec<&str> = at(services, "feeder.command")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "feed");
    let mut help = vec!["--help"];
    help.splice(0..0, args[..1].iter().copied());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .args(&help)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(text.contains(flag), "feed has no {flag}: {text}");
    }
    let allowed = str_at(
        services,
        "listing-guard.environment.LISTING_GUARD__FETCH__ALLOWED_NETWORKS",
    );
    assert!(allowed.contains("172.16.0.0/12"), "{allowed}");
    let build = at(services, "listing-guard.build");
    let dockerfile = root()
        .join("deploy")
        .join(str_at(build, "context"))
        .join(str_at(build, "dockerfile"));
    assert!(dockerfile.exists(), "{}", dockerfile.display());
    let prom = yaml("deploy/prometheus.yml");
    let targets = format!("{:?}", at(&prom, "scrape_configs"));
    assert!(targets.contains("listing-guard:9464"), "{targets}");
    let otel = yaml("deploy/otel-collector.yaml");
    // Metrics arrive pushed over OTLP, as spans do.
    let metrics_from = format!("{:?}", at(&otel, "service.pipelines.metrics.receivers"));
    assert!(metrics_from.contains("otlp"), "{metrics_from}");
    assert!(at(&otel, "service.pipelines.traces").is_mapping());
    assert!(at(&otel, "receivers.otlp.protocols.http").is_mapping());
    let example = std::fs::read_to_string(root().join("deploy/config.example.toml")).unwrap();
    assert!(example.contains("http://otel-collector:4318"));
}
