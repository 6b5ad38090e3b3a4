//! `docker-compose.yml` is right, as far as can be told without Docker:
//!
//! - `docker-compose config` accepts it;
//! - each service gets every environment variable its code reads, found by
//!   scanning the sources of the service and of the workspace crates it
//!   depends on, so a newly read variable fails here until compose sets it;
//! - each service has a health check, `service_healthy` dependencies on the
//!   infrastructure it uses, a restart policy, and a stop grace period that
//!   covers its shutdown deadline.
//!
//! Needs the `docker-compose` program (`apt-get install -y docker-compose`),
//! not a Docker engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The six services and the console: compose service name and cargo package.
const SERVICES: [(&str, &str); 7] = [
    ("order", "order-service"),
    ("stock", "stock-service"),
    ("payment", "payment-service"),
    ("shipping", "shipping-service"),
    ("email", "email-service"),
    ("loyalty", "loyalty-service"),
    ("console", "console"),
];

/// Variables the code reads that compose deliberately leaves unset.
const NOT_IN_COMPOSE: &[(&str, &str)] = &[
    // Negative controls of the chaos suite: each one switches a delivery
    // guarantee off. Never part of a deployment.
    ("UNSAFE_PUBLISH_WITHOUT_OUTBOX", "deliberately unsafe mode, tests only"),
    ("UNSAFE_ACK_BEFORE_COMMIT", "deliberately unsafe mode, tests only"),
    ("UNSAFE_SKIP_INBOX", "deliberately unsafe mode, tests only"),
    ("UNSAFE_FLUSH_BEFORE_CONFIRM", "deliberately unsafe mode, tests only"),
    // Crash injection (`fail` crate) for the crash tests.
    ("FAILPOINTS", "crash points, tests only"),
    // Unset means tracing is on, which is what compose wants.
    ("OTEL_SDK_DISABLED", "off switch of the OpenTelemetry SDK"),
    // Per-signal override of OTEL_EXPORTER_OTLP_ENDPOINT, which compose sets.
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "covered by OTEL_EXPORTER_OTLP_ENDPOINT"),
    // Set by the container runtime (the container id), part of the default
    // static-membership id.
    ("HOSTNAME", "set by the container runtime"),
    // librdkafka tracing, for a person diagnosing a consumer group.
    ("KAFKA_DEBUG", "diagnostics only"),
    // The local runner's process control: compose owns the containers, so
    // the console's actions are disabled there (and say why).
    ("CONSOLE_RUNNER", "the local runner's binary; none in compose"),
    ("CONSOLE_STACK", "the local runner's stack; none in compose"),
];

/// Variables read inside libraries, recognised by the call that makes the
/// library read them.
const IMPLICIT_READS: &[(&str, &str)] = &[
    ("EnvFilter::try_from_default_env", "RUST_LOG"),
    ("EnvFilter::from_default_env", "RUST_LOG"),
    ("crash::arm_from_env", "FAILPOINTS"),
    // The SDK's default sampler comes from OTEL_TRACES_SAMPLER (and _ARG).
    ("SdkTracerProvider::builder", "OTEL_TRACES_SAMPLER"),
];

/// Functions whose first argument is the name of a variable they read.
const READERS: &[&str] = &["env_or", "env_parse", "env::var", "env::var_os"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn compose_file() -> PathBuf {
    repo_root().join("docker-compose.yml")
}

// ---------------------------------------------------------------------------
// (a) docker-compose accepts the file

#[test]
fn docker_compose_accepts_the_file() {
    let root = repo_root();
    let output = match Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(&root)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`docker-compose` is not installed, so docker-compose.yml cannot be validated. \
             Install it with `apt-get install -y docker-compose` (Debian's package, v1.29; \
             no Docker engine is needed)."
        ),
        Err(e) => panic!("running `docker-compose config -q` in {}: {e}", root.display()),
    };
    assert!(
        output.status.success(),
        "`docker-compose -f docker-compose.yml config -q` rejected the file ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// (b) every variable a service reads is set

#[test]
fn every_service_gets_every_variable_it_reads() {
    let compose = Compose::load();
    let reads = variables_read_by_services();
    let allowed: BTreeSet<&str> = NOT_IN_COMPOSE.iter().map(|(name, _)| *name).collect();

    let mut missing = Vec::new();
    for (service, _) in SERVICES {
        let set = compose.environment(service);
        let read = &reads[service];
        // The scan must see at least the common configuration, or it is broken
        // and everything below would pass for nothing.
        for common in ["HTTP_ADDR", "DATABASE_URL", "AMQP_URL", "KAFKA_BROKERS", "OTEL_SERVICE_NAME", "RUST_LOG"] {
            assert!(read.contains_key(common), "the source scan did not find {common} for {service}: {read:?}");
        }
        for (name, found_in) in read {
            if !set.contains_key(name) && !allowed.contains(name.as_str()) {
                missing.push(format!("{service}: {name} (read in {found_in})"));
            }
        }
        let unread: Vec<&String> = set.keys().filter(|name| !read.contains_key(*name)).collect();
        if !unread.is_empty() {
            eprintln!("note: compose sets variables that {service}'s code does not read (yet): {unread:?}");
        }
    }
    assert!(
        missing.is_empty(),
        "docker-compose.yml does not set these variables the services read \
         (set them, or add them to NOT_IN_COMPOSE with the reason):\n  {}",
        missing.join("\n  ")
    );

    // Service-specific variables the scan must find, so it keeps up with how
    // the code names them (a literal, a constant).
    assert!(reads["order"].contains_key("STOCK_URL"));
    assert!(reads["order"].contains_key("ORDER_MAX_OUTBOX_BACKLOG"));
    assert!(reads["payment"].contains_key("PAYMENT_DEFAULT_LIMIT_CENTS"));
    assert!(reads["stock"].contains_key("UNSAFE_SKIP_INBOX"));
    assert!(!reads["stock"].contains_key("STOCK_URL"), "order's variables leaked into stock");
}

/// Each service's variables (name → a file that reads it).
fn variables_read_by_services() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let root = repo_root();
    let crates = WorkspaceCrates::load(&root);
    SERVICES
        .iter()
        .map(|(service, package)| {
            let mut read = BTreeMap::new();
            for (crate_dir, own) in crates.closure(package) {
                for file in rust_sources(&crate_dir.join("src"), own) {
                    for name in variables_read_in(&file) {
                        let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
                        read.entry(name).or_insert(shown);
                    }
                }
            }
            (*service, read)
        })
        .collect()
}

/// The workspace's packages and the path dependencies between them, from
/// `cargo metadata`.
struct WorkspaceCrates {
    /// package name → (directory, normal/build path dependencies by directory)
    packages: BTreeMap<String, (PathBuf, Vec<PathBuf>)>,
}

impl WorkspaceCrates {
    fn load(root: &Path) -> Self {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .output()
            .expect("running cargo metadata");
        assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
        let packages = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|package| {
                let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
                let dir = manifest.parent().expect("manifest dir").to_path_buf();
                let deps = package["dependencies"]
                    .as_array()
                    .expect("dependencies")
                    .iter()
                    // Normal (null) and build dependencies end up in the binary; dev ones do not.
                    .filter(|dep| dep["kind"].as_str() != Some("dev"))
                    .filter_map(|dep| dep["path"].as_str().map(PathBuf::from))
                    .collect();
                (package["name"].as_str().expect("name").to_owned(), (dir, deps))
            })
            .collect();
        Self { packages }
    }

    /// The package's directory (`true`: the package itself) and those of the
    /// workspace crates it depends on, directly or not.
    fn closure(&self, package: &str) -> Vec<(PathBuf, bool)> {
        let (start, _) = self.packages.get(package).unwrap_or_else(|| panic!("no package {package} in the workspace"));
        let by_dir: BTreeMap<&PathBuf, &Vec<PathBuf>> = self.packages.values().map(|(dir, deps)| (dir, deps)).collect();
        let mut seen = BTreeSet::from([start.clone()]);
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(dir) = queue.pop_front() {
            for dep in by_dir.get(&dir).copied().into_iter().flatten() {
                if by_dir.contains_key(dep) && seen.insert(dep.clone()) {
                    queue.push_back(dep.clone());
                }
            }
        }
        seen.into_iter().map(|dir| (dir.clone(), &dir == start)).collect()
    }
}

/// `.rs` files under `src`. For a dependency (`own` false) its own binaries
/// (`src/main.rs`, `src/bin/`) are skipped: they are other programs.
fn rust_sources(src: &Path, own: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if own || path != src.join("bin") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") && (own || path != src.join("main.rs")) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Names of the environment variables one source file reads: the first
/// argument of [`READERS`] and of one-line closures wrapping `env::var`
/// (`let var = |name: &str| std::env::var(name)…`), as a string literal or a
/// `const NAME: &str = "…"` of the same file; plus [`IMPLICIT_READS`].
/// Comment lines and everything from the first `#[cfg(test)]` on (the unit
/// tests, by this workspace's convention at the end of a file) are ignored.
fn variables_read_in(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let code: Vec<&str> = text
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect();

    let mut constants = BTreeMap::new();
    let mut readers: Vec<String> = READERS.iter().map(|r| (*r).to_owned()).collect();
    for line in &code {
        if let Some((name, value)) = string_constant(line) {
            constants.insert(name, value);
        }
        if let Some(closure) = env_closure(line) {
            readers.push(closure);
        }
    }

    // Calls are matched in the whole text: rustfmt may put the argument on
    // the next line (`env_or(\n    "DATABASE_URL",`).
    let joined = code.join("\n");
    let mut names = BTreeSet::new();
    for reader in &readers {
        for argument in call_arguments(&joined, reader) {
            let name = if let Some(literal) = argument.strip_prefix('"') {
                literal.split('"').next().map(str::to_owned)
            } else {
                constants.get(argument.rsplit("::").next().unwrap_or(&argument)).cloned()
            };
            if let Some(name) = name.filter(|n| is_variable_name(n)) {
                names.insert(name);
            }
        }
    }
    for (marker, variable) in IMPLICIT_READS {
        if joined.contains(marker) {
            names.insert((*variable).to_owned());
        }
    }
    names
}

/// `const NAME: &str = "VALUE";` (any visibility) → (NAME, VALUE).
fn string_constant(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start();
    let rest = rest.strip_prefix("pub(crate) ").or_else(|| rest.strip_prefix("pub ")).unwrap_or(rest);
    let rest = rest.strip_prefix("const ")?;
    let (name, rest) = rest.split_once(':')?;
    let value = rest.trim_start().strip_prefix("&str")?.trim_start().strip_prefix('=')?.trim_start();
    let value = value.strip_prefix('"')?.split('"').next()?;
    Some((name.trim().to_owned(), value.to_owned()))
}

/// `let NAME = |…| … env::var(…)` on one line → NAME.
fn env_closure(line: &str) -> Option<String> {
    if !line.contains("env::var") {
        return None;
    }
    let rest = line.trim_start().strip_prefix("let ")?;
    let (name, rest) = rest.split_once('=')?;
    rest.trim_start().starts_with('|').then(|| name.trim().to_owned())
}

/// The first argument of every call of `function` in `code`, unparsed
/// (`"NAME"…` or an identifier). `function` must not be preceded by an
/// identifier character, so `on` does not match `option(`.
fn call_arguments(code: &str, function: &str) -> Vec<String> {
    let pattern = format!("{function}(");
    let mut arguments = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(&pattern) {
        let start = from + found;
        from = start + pattern.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let argument: String = code[from..]
            .trim_start()
            .chars()
            .scan(false, |in_string, c| {
                // Up to the end of the first argument.
                if c == '"' {
                    *in_string = !*in_string;
                }
                (*in_string || !matches!(c, ',' | ')')).then_some(c)
            })
            .collect();
        arguments.push(argument.trim().to_owned());
    }
    arguments
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

// ---------------------------------------------------------------------------
// (c) health checks, dependencies, restart policies

/// The infrastructure a service uses, recognised by the `ServiceHost` calls in
/// its own sources, and the compose service that provides it.
const INFRASTRUCTURE_USE: &[(&str, &str)] = &[
    (".database(", "postgres"),
    (".amqp_publisher(", "rabbitmq"),
    (".consume_queue(", "rabbitmq"),
    (".kafka_publisher(", "kafka"),
    (".consume_topics(", "kafka"),
];

#[test]
fn every_service_is_health_checked_waits_for_healthy_infrastructure_and_restarts() {
    let compose = Compose::load();
    let root = repo_root();
    let mut problems = Vec::new();

    for (service, _) in SERVICES {
        let definition = compose.service(service);

        // A health check that actually runs.
        match definition.get("healthcheck").and_then(Value::as_mapping) {
            None => problems.push(format!("{service}: no healthcheck")),
            Some(check) => {
                let test = check.get("test").map(strings).unwrap_or_default();
                if test.is_empty() || test[0] == "NONE" || check.get("disable").and_then(Value::as_bool) == Some(true) {
                    problems.push(format!("{service}: healthcheck has no test: {check:?}"));
                }
            }
        }

        // A restart policy that restarts.
        match definition.get("restart").and_then(Value::as_str) {
            Some("always" | "unless-stopped") => {}
            Some(policy) if policy.starts_with("on-failure") => {}
            other => problems.push(format!("{service}: restart policy {other:?}, want unless-stopped")),
        }

        // Waits for its infrastructure to be healthy.
        let depends = compose.depends_on(service);
        if !depends.values().any(|condition| condition == "service_healthy") {
            problems.push(format!("{service}: no depends_on with condition service_healthy"));
        }
        let sources = rust_sources(&root.join("services").join(service).join("src"), true);
        let code: String = sources.iter().map(|file| std::fs::read_to_string(file).unwrap()).collect();
        let used: BTreeSet<&str> =
            INFRASTRUCTURE_USE.iter().filter(|(call, _)| code.contains(call)).map(|(_, infra)| *infra).collect();
        for infra in used {
            match depends.get(infra).map(String::as_str) {
                Some("service_healthy") => {}
                other => problems.push(format!(
                    "{service} uses {infra} but depends_on.{infra} is {other:?}, want condition: service_healthy"
                )),
            }
        }

        // Given time to shut down: twice the deadline (HTTP, then background
        // tasks) plus the 5 s telemetry flush.
        let deadline: u64 = compose.environment(service).get("SHUTDOWN_DEADLINE_SECS").map_or(20, |value| {
            value.parse().unwrap_or_else(|_| panic!("{service}: SHUTDOWN_DEADLINE_SECS={value:?}"))
        });
        let grace = definition.get("stop_grace_period").and_then(Value::as_str).map(seconds);
        match grace {
            Some(grace) if grace >= deadline + 5 => {}
            other => problems.push(format!(
                "{service}: stop_grace_period {other:?}s is shorter than SHUTDOWN_DEADLINE_SECS ({deadline}) + 5 s (span flush)"
            )),
        }
    }

    // `service_healthy` on a service without a health check fails only at
    // `up` time, not in `docker-compose config`.
    for (name, _) in compose.services() {
        for (dependency, condition) in compose.depends_on(&name) {
            if condition == "service_healthy" && compose.service(&dependency).get("healthcheck").is_none() {
                problems
                    .push(format!("{name} waits for {dependency} to be healthy, but {dependency} has no healthcheck"));
            }
        }
    }

    assert!(problems.is_empty(), "docker-compose.yml:\n  {}", problems.join("\n  "));
}

/// `50s`, `1m30s`, `2m` → seconds.
fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().unwrap_or_else(|_| panic!("duration {duration:?}"));
        number.clear();
        total += match c {
            'h' => value * 3600,
            'm' => value * 60,
            's' => value,
            _ => panic!("duration {duration:?}: unit {c:?}"),
        };
    }
    assert!(number.is_empty(), "duration {duration:?} has no unit");
    total
}

// ---------------------------------------------------------------------------
// The compose file, merge keys (`<<:`) applied.

struct Compose {
    root: Value,
}

impl Compose {
    fn load() -> Self {
        let path = compose_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut root: Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        root.apply_merge().expect("applying YAML merge keys");
        Self { root }
    }

    fn services(&self) -> Vec<(String, &Mapping)> {
        self.root["services"]
            .as_mapping()
            .expect("a services mapping")
            .iter()
            .map(|(name, definition)| {
                (name.as_str().expect("service name").to_owned(), definition.as_mapping().expect("service mapping"))
            })
            .collect()
    }

    fn service(&self, name: &str) -> &Mapping {
        self.root["services"][name].as_mapping().unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    }

    /// `environment:` as a map, whether written as a mapping or a `KEY=value` list.
    fn environment(&self, service: &str) -> BTreeMap<String, String> {
        match self.service(service).get("environment") {
            None => BTreeMap::new(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(key, value)| (scalar(key), if value.is_null() { String::new() } else { scalar(value) }))
                .collect(),
            Some(Value::Sequence(list)) => list
                .iter()
                .map(|item| {
                    let item = scalar(item);
                    let (key, value) = item.split_once('=').unwrap_or((&item, ""));
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
            Some(other) => panic!("{service}: environment is neither a mapping nor a list: {other:?}"),
        }
    }

    /// `depends_on:` as service → condition (`service_started` for the list form).
    fn depends_on(&self, service: &str) -> BTreeMap<String, String> {
        match self.service(service).get("depends_on") {
            None => BTreeMap::new(),
            Some(Value::Sequence(list)) => {
                list.iter().map(|name| (scalar(name), "service_started".to_owned())).collect()
            }
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(name, spec)| {
                    let condition = spec.get("condition").map_or_else(|| "service_started".to_owned(), scalar);
                    (scalar(name), condition)
                })
                .collect(),
            Some(other) => panic!("{service}: depends_on is neither a mapping nor a list: {other:?}"),
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A string or a list of strings (a healthcheck's `test`).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(list) => list.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    }
}

#[test]
fn the_source_scan_understands_the_forms_the_code_uses() {
    let dir = std::env::temp_dir().join(format!("compose-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sample.rs");
    std::fs::write(
        &file,
        r#"
const LIMIT: &str = "A_CONST";
pub const OTHER: &str = "B_CONST";
fn f() {
    let _ = env_or("LITERAL", "http://x:1");
    let _ = env_or(
        "NEXT_LINE",
        "default",
    );
    let _ = env_parse(LIMIT, 5);
    let _ = std::env::var("DIRECT").ok();
    let on = |name: &str| std::env::var(name).is_ok();
    let _ = on(OTHER) && option("NOT_A_READ");
    // env_or("COMMENTED", "")
    let _ = EnvFilter::try_from_default_env();
}
#[cfg(test)]
mod tests { fn t() { env_parse("TEST_ONLY", 1); } }
"#,
    )
    .unwrap();
    let found = variables_read_in(&file);
    std::fs::remove_dir_all(&dir).ok();
    let expected: BTreeSet<String> =
        ["A_CONST", "B_CONST", "DIRECT", "LITERAL", "NEXT_LINE", "RUST_LOG"].into_iter().map(str::to_owned).collect();
    assert_eq!(found, expected);
    assert_eq!(seconds("50s"), 50);
    assert_eq!(seconds("1m30s"), 90);
}
