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

/// The user of a `postgres://user:password@host/...` URL (with `${VAR:-default}` passwords).
fn url_user(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or_default();
    rest.split(['@', ':']).next().unwrap_or_default()
}

#[test]
fn in_compose_and_kubernetes_the_services_log_in_as_their_own_roles() {
    let compose = &load(&deploy().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for name in ["command-service", "projection-service"] {
        let env = get(&services[name], "environment");
        let url = |key: &str| text(&env[key]);
        assert_eq!(url_user(&url("DATABASE_URL")), "ventros_app", "{name}");
        assert_eq!(
            url_user(&url("SYSTEM_DATABASE_URL")),
            "ventros_projector",
            "{name}"
        );
        assert_eq!(
            url_user(&url("MIGRATION_DATABASE_URL")),
            "postgres",
            "{name}"
        );
    }
    // The database asks for passwords, and the two logins get theirs when it is created.
    let postgres = &services["postgres"];
    let env = &postgres["environment"];
    assert!(
        env["POSTGRES_HOST_AUTH_METHOD"].is_badvalue(),
        "no trust auth"
    );
    assert!(!env["POSTGRES_PASSWORD"].is_badvalue());
    let mounts: Vec<String> = postgres["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./postgres/init-roles.sh:/docker-entrypoint-initdb.d/")),
        "{mounts:?}"
    );
    let init = std::fs::read_to_string(deploy().join("postgres/init-roles.sh")).unwrap();
    for (role, password) in [
        ("ventros_app", "VENTROS_APP_DB_PASSWORD"),
        ("ventros_projector", "VENTROS_PROJECTOR_DB_PASSWORD"),
    ] {
        assert!(
            init.contains(&format!("create role {role} login")),
            "{role}"
        );
        assert!(!env[password].is_badvalue(), "postgres gets {password}");
    }

    let secret = load(&deploy().join("k8s/secret.yaml"));
    let data = &secret[0]["stringData"];
    assert_eq!(url_user(&text(&data["DATABASE_URL"])), "ventros_app");
    assert_eq!(url_user(&text(&data["QUERY_DATABASE_URL"])), "ventros_app");
    assert_eq!(
        url_user(&text(&data["SYSTEM_DATABASE_URL"])),
        "ventros_projector"
    );
    for key in [
        "DATABASE_URL",
        "QUERY_DATABASE_URL",
        "SYSTEM_DATABASE_URL",
        "MIGRATION_DATABASE_URL",
    ] {
        assert!(
            text(&data[key]).contains("sslmode=verify-full"),
            "{key} verifies the server"
        );
    }
    // ... against a CA every pod that connects has at the path the URLs name.
    let root_cert = text(&data["DATABASE_URL"])
        .split("sslrootcert=")
        .nth(1)
        .expect("sslrootcert")
        .to_owned();
    let ca_dir = root_cert.rsplit_once('/').unwrap().0.to_owned();
    for file in ["command-service", "projection-service", "migrate-job"] {
        let docs = load(&deploy().join(format!("k8s/{file}.yaml")));
        let pod = &docs[0]["spec"]["template"]["spec"];
        let mount = pod["containers"][0]["volumeMounts"]
            .as_vec()
            .and_then(|v| v.iter().find(|m| text(&m["mountPath"]) == ca_dir))
            .unwrap_or_else(|| panic!("{file}: nothing mounted at {ca_dir}"));
        let volume = pod["volumes"]
            .as_vec()
            .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
            .unwrap_or_else(|| panic!("{file}: no volume for the CA"));
        assert_eq!(
            text(&volume["secret"]["secretName"]),
            text(&secret[1]["metadata"]["name"]),
            "{file}"
        );
    }
    assert!(text(&secret[1]["stringData"]["ca.crt"]).contains("BEGIN CERTIFICATE"));
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
