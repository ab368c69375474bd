//! The deployment files, checked without a container engine or a cluster (none runs here): every
//! YAML document parses, and carries what an operator relies on (probes, limits, non-root,
//! settings, a 3-node JetStream cluster).

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// A key of a mapping, following YAML merge keys (`<<: *anchor`) as compose files use them.
fn get<'a>(node: &'a Yaml, key: &str) -> &'a Yaml {
    let value = &node[key];
    if !value.is_badvalue() {
        return value;
    }
    match &node["<<"] {
        Yaml::Hash(_) => get(&node["<<"], key),
        Yaml::Array(parents) => parents
            .iter()
            .map(|p| get(p, key))
            .find(|v| !v.is_badvalue())
            .unwrap_or(value),
        _ => value,
    }
}

fn text(node: &Yaml) -> String {
    match node {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The settings a service reads (DESIGN.md, "Configuration and running").
const SETTINGS: [&str; 6] = [
    "DATABASE_URL",
    "NATS_URL",
    "EVENT_PARTITIONS",
    "NATS_STREAM",
    "NATS_SUBJECT_PREFIX",
    "SNAPSHOT_EVERY",
];

#[test]
fn the_kubernetes_manifests_have_probes_limits_and_run_as_non_root() {
    let mut kinds = Vec::new();
    let mut settings = Vec::new();
    for entry in std::fs::read_dir(deploy().join("k8s")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for doc in load(&path) {
            let kind = text(&doc["kind"]);
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{}: apiVersion",
                path.display()
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{}: metadata.name",
                path.display()
            );
            if kind == "ConfigMap" || kind == "Secret" {
                for source in ["data", "stringData"] {
                    if let Some(map) = doc[source].as_hash() {
                        settings.extend(map.keys().map(text));
                    }
                }
            }
            if kind == "Job" {
                let container = &doc["spec"]["template"]["spec"]["containers"][0];
                let args: Vec<String> = container["args"]
                    .as_vec()
                    .map(|a| a.iter().map(text).collect())
                    .unwrap_or_default();
                assert_eq!(
                    args,
                    ["migrate"],
                    "{}: the Job runs the migrations",
                    path.display()
                );
            }
            if kind == "Deployment" {
                let name = text(&doc["metadata"]["name"]);
                let pod = &doc["spec"]["template"]["spec"];
                assert_eq!(
                    pod["securityContext"]["runAsNonRoot"].as_bool(),
                    Some(true),
                    "{name}: runAsNonRoot"
                );
                let container = &pod["containers"][0];
                assert!(container["image"].as_str().is_some(), "{name}: image");
                assert_eq!(
                    container["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/healthz"),
                    "{name}"
                );
                assert_eq!(
                    container["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz"),
                    "{name}"
                );
                for limit in ["cpu", "memory"] {
                    assert!(
                        !container["resources"]["limits"][limit].is_badvalue(),
                        "{name}: limits.{limit}"
                    );
                    assert!(
                        !container["resources"]["requests"][limit].is_badvalue(),
                        "{name}: requests.{limit}"
                    );
                }
                assert!(
                    container["envFrom"].as_vec().is_some_and(|v| !v.is_empty()),
                    "{name}: settings from ConfigMap/Secret"
                );
            }
            kinds.push((kind, text(&doc["metadata"]["name"])));
        }
    }
    for expected in [
        ("Deployment", "command-service"),
        ("Deployment", "projection-service"),
        ("Service", "command-service"),
        ("Service", "projection-service"),
        ("Namespace", "ventros"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, n)| k == expected.0 && n == expected.1),
            "missing {expected:?} in deploy/k8s: {kinds:?}"
        );
    }
    assert!(
        kinds.iter().any(|(k, _)| k == "Job"),
        "a Job (post-deploy check) in deploy/k8s"
    );
    for setting in SETTINGS {
        assert!(
            settings.iter().any(|s| s == setting),
            "{setting} is in no ConfigMap or Secret: {settings:?}"
        );
    }
}

#[test]
fn the_compose_file_runs_postgres_a_three_node_jetstream_cluster_and_both_services() {
    let compose = &load(&deploy().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for name in [
        "postgres",
        "nats-1",
        "nats-2",
        "nats-3",
        "command-service",
        "projection-service",
    ] {
        let service = &services[name];
        assert!(!service.is_badvalue(), "compose has no service {name}");
        assert!(
            !get(service, "image").is_badvalue() || !get(service, "build").is_badvalue(),
            "{name} has neither image nor build"
        );
    }
    for name in ["command-service", "projection-service"] {
        let env = get(&services[name], "environment");
        let keys: Vec<String> = match env {
            Yaml::Hash(map) => map.keys().map(text).collect(),
            Yaml::Array(items) => items
                .iter()
                .map(|i| text(i).split('=').next().unwrap_or_default().to_owned())
                .collect(),
            _ => Vec::new(),
        };
        for setting in ["DATABASE_URL", "NATS_URL", "NATS_STREAM_REPLICAS"] {
            assert!(
                keys.iter().any(|k| k == setting),
                "{name} does not set {setting}: {keys:?}"
            );
        }
    }
}

#[test]
fn each_nats_node_joins_the_other_two_with_jetstream_on() {
    for node in 1..=3 {
        let conf =
            std::fs::read_to_string(deploy().join(format!("nats/nats-{node}.conf"))).unwrap();
        assert!(conf.contains("jetstream"), "nats-{node}: jetstream");
        assert!(
            conf.contains(&format!("server_name: nats-{node}")),
            "nats-{node}: server_name"
        );
        for other in (1..=3).filter(|o| *o != node) {
            assert!(
                conf.contains(&format!("nats-route://nats-{other}:6222")),
                "nats-{node} does not route to nats-{other}"
            );
        }
    }
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    let user = dockerfile
        .lines()
        .rev()
        .find(|l| l.trim_start().to_ascii_uppercase().starts_with("USER "))
        .expect("a USER line")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        !(user == "root" || user.starts_with("0:") || user == "0"),
        "the runtime user is root: {user}"
    );
}

#[test]
fn the_nats_helm_values_ask_for_a_jetstream_cluster_of_three_on_disk() {
    let values = &load(&deploy().join("nats/helm-values.yaml"))[0];
    let config = &values["config"];
    assert_eq!(config["cluster"]["enabled"], Yaml::Boolean(true));
    assert_eq!(config["cluster"]["replicas"], Yaml::Integer(3));
    assert_eq!(config["jetstream"]["enabled"], Yaml::Boolean(true));
    assert_eq!(
        config["jetstream"]["fileStore"]["enabled"],
        Yaml::Boolean(true)
    );
}

#[test]
fn the_retention_settings_in_deploy_read_as_the_services_read_them() {
    let configmap = load(&deploy().join("k8s/configmap.yaml"))
        .into_iter()
        .find(|doc| text(&doc["kind"]) == "ConfigMap")
        .expect("a ConfigMap");
    let compose = &load(&deploy().join("docker-compose.yml"))[0];
    let compose_env = get(&compose["services"]["command-service"], "environment");
    for setting in ["OUTBOX_RETENTION", "IDEMPOTENCY_TTL", "RETENTION_INTERVAL"] {
        for (file, value) in [
            ("configmap.yaml", &configmap["data"][setting]),
            ("docker-compose.yml", &compose_env[setting]),
        ] {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("{file} does not set {setting}"));
            assert!(
                platform::retention::parse_duration(value).is_ok(),
                "{file}: {setting}={value} is not a duration the services read"
            );
        }
    }
}
