//! The deployment files, checked without a container engine or a cluster (none runs here): every
//! YAML document parses, and carries what an operator relies on (probes, limits, non-root,
//! settings, a 3-node JetStream cluster, the broker's logins: no anonymous client, each service
//! its own user with the permissions of `deploy/nats/auth.conf`, no broker port on the host).

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

/// The keys of a compose `environment` (a mapping, following merge keys, or a list of `K=V`).
fn env_keys(env: &Yaml) -> Vec<String> {
    match env {
        Yaml::Hash(map) => map
            .iter()
            .flat_map(|(k, v)| {
                if text(k) == "<<" {
                    env_keys(v)
                } else {
                    vec![text(k)]
                }
            })
            .collect(),
        Yaml::Array(items) => items
            .iter()
            .map(|i| text(i).split('=').next().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// A compose service's volume mounts, as written (`host:container[:mode]`).
fn mounts(service: &Yaml) -> Vec<String> {
    get(service, "volumes")
        .as_vec()
        .expect("volumes")
        .iter()
        .map(text)
        .collect()
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
        let keys = env_keys(get(&services[name], "environment"));
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
        let url = |key: &str| text(get(env, key));
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
    let mounts = mounts(postgres);
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
    let postgres_ca = &load(&deploy().join("k8s/postgres-ca.yaml"))[0];
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
            text(&postgres_ca["metadata"]["name"]),
            "{file}"
        );
    }
    assert!(text(&postgres_ca["stringData"]["ca.crt"]).contains("BEGIN CERTIFICATE"));
}

#[test]
fn postgres_is_a_cluster_with_a_synchronous_standby_and_the_services_follow_its_primary() {
    let cluster = &load(&deploy().join("k8s/postgres-cluster.yaml"))[0];
    assert_eq!(text(&cluster["kind"]), "Cluster");
    assert!(cluster["spec"]["instances"].as_i64().unwrap() >= 2);
    // An acknowledged command is on a standby before its answer, and stays so with none up.
    let sync = &cluster["spec"]["postgresql"]["synchronous"];
    assert!(sync["number"].as_i64().unwrap() >= 1, "{sync:?}");
    assert_eq!(text(&sync["dataDurability"]), "required");
    let name = text(&cluster["metadata"]["name"]);
    let secret = load(&deploy().join("k8s/secret.yaml"));
    let data = &secret[0]["stringData"];
    let host = |key: &str| {
        let target =
            platform::db::Target::parse(&text(&data[key])).unwrap_or_else(|e| panic!("{key}: {e}"));
        target.hosts[0].get_host().to_owned()
    };
    for key in [
        "DATABASE_URL",
        "SYSTEM_DATABASE_URL",
        "MIGRATION_DATABASE_URL",
    ] {
        assert!(
            host(key).starts_with(&format!("{name}-rw.")),
            "{key} follows the primary: {}",
            host(key)
        );
    }
    assert!(host("QUERY_DATABASE_URL").starts_with(&format!("{name}-ro.")));
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
            ("docker-compose.yml", get(compose_env, setting)),
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

/// A login of `deploy/nats/auth.conf`: its password's variable and what it may publish and
/// subscribe to (None: unrestricted).
#[derive(Debug, PartialEq)]
struct NatsLogin {
    user: String,
    password: String,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

/// The quoted strings of the first `[...]` after `key` in `block`.
fn allow_list(block: &str, key: &str) -> Option<Vec<String>> {
    let rest = &block[block.find(key)?..];
    let list = &rest[rest.find('[')? + 1..rest.find(']')?];
    Some(
        list.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// The logins of `deploy/nats/auth.conf`, read as nats-server reads the parts it uses here.
fn auth_conf_logins() -> Vec<NatsLogin> {
    let conf = std::fs::read_to_string(deploy().join("nats/auth.conf")).unwrap();
    let conf: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !conf.contains("no_auth_user"),
        "auth.conf lets clients in without a login (no_auth_user)"
    );
    assert!(
        !conf.contains("authorization"),
        "auth.conf has a global authorization block besides the accounts"
    );
    conf.split("user:")
        .skip(1)
        .map(|block| {
            let word = |after: &str| {
                block[block
                    .find(after)
                    .unwrap_or_else(|| panic!("{after} in {block}"))
                    + after.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_matches('"')
                    .to_owned()
            };
            let restricted = block.contains("permissions");
            NatsLogin {
                user: block.split_whitespace().next().unwrap().to_owned(),
                password: word("password:"),
                publish: restricted.then(|| allow_list(block, "publish")).flatten(),
                subscribe: restricted.then(|| allow_list(block, "subscribe")).flatten(),
            }
        })
        .collect()
}

#[test]
fn the_broker_has_no_anonymous_user_and_each_service_only_its_part() {
    let logins = auth_conf_logins();
    let users: Vec<&str> = logins.iter().map(|l| l.user.as_str()).collect();
    assert_eq!(users, ["command", "projection", "admin"]);
    for login in &logins {
        assert_eq!(
            login.password,
            format!("$NATS_{}_PASSWORD", login.user.to_uppercase()),
            "{}: the password comes from nats-server's environment, not the file",
            login.user
        );
    }
    let command = &logins[0];
    let publish = command.publish.as_ref().expect("command is restricted");
    assert!(
        publish.contains(&"ventros.events.>".to_owned()),
        "{publish:?}"
    );
    for subject in publish {
        assert!(
            subject.starts_with("ventros.events.")
                || [
                    "$JS.API.STREAM.INFO.VENTROS_EVENTS",
                    "$JS.API.STREAM.CREATE.VENTROS_EVENTS"
                ]
                .contains(&subject.as_str()),
            "command-service may publish {subject}: more than events and creating its stream"
        );
    }
    let projection = &logins[1];
    let publish = projection
        .publish
        .as_ref()
        .expect("projection is restricted");
    for subject in publish {
        assert!(
            !subject.starts_with("ventros.") && subject != ">" && !subject.ends_with("$JS.API.>"),
            "projection-service may publish {subject}"
        );
        assert!(
            !["DELETE", "PURGE", "UPDATE", "STREAM.CREATE"]
                .iter()
                .any(|op| subject.contains(op)),
            "projection-service may {subject}"
        );
    }
    for login in [command, projection] {
        assert_eq!(
            login.subscribe.as_deref(),
            Some(&[format!("_INBOX_{}.>", login.user)][..]),
            "{}: its own replies only",
            login.user
        );
    }
    for node in 1..=3 {
        let conf =
            std::fs::read_to_string(deploy().join(format!("nats/nats-{node}.conf"))).unwrap();
        assert!(
            conf.lines().any(|l| l.trim() == "include ./auth.conf"),
            "nats-{node}.conf does not include the logins"
        );
    }
    let script = std::fs::read_to_string(deploy().join("nats/local-cluster.sh")).unwrap();
    assert!(
        script.contains("AUTH_CONF=$ROOT/deploy/nats/auth.conf")
            && script.contains("-c \"$AUTH_CONF\""),
        "local-cluster.sh does not start its nodes with deploy/nats/auth.conf"
    );
}

#[test]
fn the_helm_values_give_the_broker_the_same_logins_and_tls() {
    let values = &load(&deploy().join("nats/helm-values.yaml"))[0];
    let config = &values["config"];
    assert_eq!(config["nats"]["tls"]["enabled"], Yaml::Boolean(true));
    let strings = |node: &Yaml| -> Option<Vec<String>> {
        node.as_vec().map(|v| v.iter().map(text).collect())
    };
    let users: Vec<NatsLogin> = config["merge"]["accounts"]["VENTROS"]["users"]
        .as_vec()
        .expect("the VENTROS account's users")
        .iter()
        .map(|u| NatsLogin {
            user: text(&u["user"]),
            // The chart writes `<< $VAR >>` as the bare variable.
            password: text(&u["password"])
                .trim_start_matches("<<")
                .trim_end_matches(">>")
                .trim()
                .to_owned(),
            publish: strings(&u["permissions"]["publish"]["allow"]),
            subscribe: strings(&u["permissions"]["subscribe"]["allow"]),
        })
        .collect();
    assert_eq!(
        users,
        auth_conf_logins(),
        "helm-values.yaml and auth.conf differ"
    );
    for login in &users {
        let variable = login.password.trim_start_matches('$');
        let source = &values["container"]["env"][variable]["valueFrom"]["secretKeyRef"];
        assert_eq!(text(&source["name"]), "ventros-nats", "{variable}");
        assert_eq!(text(&source["key"]), variable);
    }
}

#[test]
fn compose_publishes_no_broker_port_and_gives_each_service_its_login() {
    let compose = &load(&deploy().join("docker-compose.yml"))[0];
    let services = compose["services"].as_hash().unwrap();
    for (name, service) in services {
        for port in get(service, "ports").as_vec().into_iter().flatten() {
            assert!(
                !text(port).contains("4222"),
                "{} publishes the broker's port: {}",
                text(name),
                text(port)
            );
        }
    }
    let services = &compose["services"];
    for node in 1..=3 {
        let nats = &services[format!("nats-{node}").as_str()];
        let mounts = mounts(nats);
        assert!(
            mounts.contains(&"./nats/auth.conf:/etc/nats/auth.conf:ro".to_owned()),
            "nats-{node} does not mount the logins: {mounts:?}"
        );
    }
    let nats_env = get(&services["nats-1"], "environment");
    for (service, user) in [
        ("command-service", "command"),
        ("projection-service", "projection"),
    ] {
        let env = get(&services[service], "environment");
        assert_eq!(text(get(env, "NATS_USER")), user, "{service}");
        // The inboxes auth.conf lets the login subscribe to.
        assert_eq!(
            text(get(env, "NATS_INBOX_PREFIX")),
            format!("_INBOX_{user}"),
            "{service}"
        );
        let variable = format!("NATS_{}_PASSWORD", user.to_uppercase());
        assert!(
            !get(nats_env, &variable).is_badvalue(),
            "the NATS nodes do not get {variable}"
        );
        assert_eq!(
            text(get(env, "NATS_PASSWORD")),
            text(get(nats_env, &variable)),
            "{service}'s NATS_PASSWORD is not the broker's {variable}"
        );
        // nats-server reads the value as a config token (deploy/nats/auth.conf): a default
        // that is not a plain word would stop the broker or be cut.
        let value = text(get(nats_env, &variable));
        let default = value
            .strip_prefix(&format!("${{{variable}:-"))
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{variable}: {value} is not ${{{variable}:-default}}"));
        assert!(
            default.starts_with(|c: char| c.is_ascii_alphabetic())
                && default
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{variable}'s default {default} is not a word nats-server reads as it is"
        );
    }
}

#[test]
fn each_kubernetes_deployment_logs_in_to_the_broker_as_its_own_user_over_tls() {
    let mut seen = 0;
    for service in ["command-service", "projection-service"] {
        let user = service.trim_end_matches("-service");
        for doc in load(&deploy().join(format!("k8s/{service}.yaml"))) {
            if text(&doc["kind"]) != "Deployment" {
                continue;
            }
            seen += 1;
            let pod = &doc["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let env = |name: &str| {
                container["env"]
                    .as_vec()
                    .unwrap_or_else(|| panic!("{service}: no env"))
                    .iter()
                    .find(|e| text(&e["name"]) == name)
                    .unwrap_or_else(|| panic!("{service} does not set {name}"))
                    .clone()
            };
            assert_eq!(text(&env("NATS_USER")["value"]), user);
            assert_eq!(
                text(&env("NATS_INBOX_PREFIX")["value"]),
                format!("_INBOX_{user}")
            );
            let password = env("NATS_PASSWORD");
            let source = &password["valueFrom"]["secretKeyRef"];
            assert_eq!(text(&source["name"]), "ventros-nats", "{service}");
            assert_eq!(
                text(&source["key"]),
                format!("NATS_{}_PASSWORD", user.to_uppercase()),
                "{service}"
            );
            let ca = text(&env("NATS_TLS_CA")["value"]);
            let mounted = container["volumeMounts"]
                .as_vec()
                .unwrap()
                .iter()
                .any(|m| ca.starts_with(&text(&m["mountPath"])));
            assert!(
                mounted,
                "{service}: NATS_TLS_CA {ca} is on no mounted volume"
            );
        }
    }
    assert_eq!(seen, 2);
}

/// Every setting the deployment files give a service is one the service reads: a misspelt
/// name would be silently ignored, and the service would start without its login.
#[test]
fn every_setting_in_the_deployment_files_is_one_the_services_read() {
    use clap::Args;
    let names = |command: clap::Command| -> Vec<String> {
        command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            // Read by the telemetry set-up, not by clap.
            .chain(["RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT"].map(str::to_owned))
            .collect()
    };
    let command = names(command_service::CommandConfig::augment_args(
        clap::Command::new("c"),
    ));
    let projection = names(projection_service::ProjectionConfig::augment_args(
        clap::Command::new("p"),
    ));
    for name in ["NATS_USER", "NATS_PASSWORD", "NATS_TLS_CA", "NATS_CREDS"] {
        assert!(command.contains(&name.to_owned()), "{name}");
    }
    let read_by = |service: &str| {
        if service == "command-service" {
            &command
        } else {
            &projection
        }
    };
    let compose = &load(&deploy().join("docker-compose.yml"))[0];
    for service in ["command-service", "projection-service"] {
        // Both services share one anchor of settings (each ignores the other's address).
        for key in env_keys(get(&compose["services"][service], "environment")) {
            assert!(
                command.contains(&key) || projection.contains(&key),
                "docker-compose.yml gives {service} {key}, which no service reads"
            );
        }
        for doc in load(&deploy().join(format!("k8s/{service}.yaml"))) {
            for env in doc["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_vec()
                .into_iter()
                .flatten()
            {
                let key = text(&env["name"]);
                assert!(
                    read_by(service).contains(&key),
                    "k8s/{service}.yaml sets {key}, which it does not read"
                );
            }
        }
    }
    // The ConfigMap and the services' Secret go to both (envFrom): each name read by one.
    for file in ["k8s/configmap.yaml", "k8s/secret.yaml"] {
        for doc in load(&deploy().join(file)) {
            for source in ["data", "stringData"] {
                for key in doc[source].as_hash().into_iter().flat_map(|m| m.keys()) {
                    let key = text(key);
                    assert!(
                        command.contains(&key) || projection.contains(&key),
                        "{file} sets {key}, which no service reads"
                    );
                }
            }
        }
    }
}
