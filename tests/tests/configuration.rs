//! docs/configuration.md against the binaries: every flag of `--help`, every
//! key `--print-config` shows, and every `[env: ...]` variable is
//! documented in the binary's section; and every documented variable sets
//! the key it is documented for (checked through `--print-config`), so the
//! reference can neither miss a setting nor name one that does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use nordlys_tests::bin_path;

/// One row of a settings table: key, variable (`None` when it has none).
#[derive(Debug)]
struct Row {
    key: String,
    variable: Option<String>,
}

/// A binary's section of the reference: its backticked words, and its
/// settings rows (with the `[nats]` table's, which every service reads).
#[derive(Debug, Default)]
struct Section {
    words: BTreeSet<String>,
    rows: Vec<Row>,
}

fn reference() -> BTreeMap<String, Section> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    let mut current = String::from("common");
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = heading.trim_matches('`').to_string();
            if heading == "Every service" {
                current = "common".to_string();
            }
            continue;
        }
        let section = sections.entry(current.clone()).or_default();
        for (i, word) in line.split('`').enumerate() {
            if i % 2 == 1 {
                section.words.insert(word.to_string());
                // `--config FILE`: the flag alone too.
                if let Some(flag) = word.split(' ').next() {
                    section.words.insert(flag.to_string());
                }
            }
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `key` | `NORDLYS_...` or none | default | meaning |
        if cells.len() == 6 && cells[1].starts_with('`') && !cells[1].starts_with("`--") {
            let key = cells[1].trim_matches('`').to_string();
            let variable = cells[2]
                .starts_with("`NORDLYS_")
                .then(|| cells[2].trim_matches('`').to_string());
            section.rows.push(Row { key, variable });
        }
    }
    let common: Vec<Row> = sections
        .get("common")
        .map(|s| {
            s.rows
                .iter()
                .map(|r| Row {
                    key: r.key.clone(),
                    variable: r.variable.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    for name in ["gateway", "regiond", "quota"] {
        let section = sections
            .get_mut(name)
            .unwrap_or_else(|| panic!("docs/configuration.md has no `{name}` section"));
        for row in &common {
            section.words.insert(row.key.clone());
            section.rows.push(Row {
                key: row.key.clone(),
                variable: row.variable.clone(),
            });
        }
    }
    sections
}

/// The arguments a service needs for `--print-config` to succeed with
/// nothing else set.
fn required_args(binary: &str) -> &'static [&'static str] {
    match binary {
        "regiond" => &["--region", "sto1", "--insecure-dev"],
        "quota" => &["--insecure-dev"],
        _ => &[],
    }
}

/// `binary ARGS`, with no `NORDLYS_*` variable but `env`.
fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(bin_path(binary));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("NORDLYS_") || key.starts_with("OS_") || key == "KUBECONFIG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e} (cargo build --workspace --bins first)"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn print_config(binary: &str, env: &[(&str, &str)]) -> toml::Table {
    let mut args = required_args(binary).to_vec();
    args.push("--print-config");
    let (ok, stdout, stderr) = run(binary, &args, env);
    assert!(ok, "{binary} --print-config with {env:?} failed: {stderr}");
    stdout
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{binary} --print-config is not TOML: {e}\n{stdout}"))
}

/// Every dotted key of `table` (a table's own name too, so an empty map
/// such as `route_overrides` is there).
fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        if let toml::Value::Table(inner) = value {
            out.push((dotted.clone(), value.clone()));
            keys(inner, &format!("{dotted}."), out);
        } else {
            out.push((dotted, value.clone()));
        }
    }
}

fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Whether a documented key covers `key`: the key itself, or, for a table
/// (`nats`, `route_overrides`), a key inside it (`route_overrides.{region}`).
fn documented(section: &Section, key: &str) -> bool {
    let inside = format!("{key}.");
    section
        .rows
        .iter()
        .any(|r| r.key == key || r.key.starts_with(&inside))
}

#[test]
fn every_flag_and_variable_of_help_is_documented() {
    let sections = reference();
    for binary in ["gateway", "regiond", "quota", "nordlysctl"] {
        let section = &sections[binary];
        let (ok, help, stderr) = run(binary, &["--help"], &[]);
        assert!(ok, "{binary} --help: {stderr}");
        let mut missing = Vec::new();
        for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            let word = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            if word.starts_with("--")
                && word.len() > 2
                && !matches!(word, "--help" | "--version")
                && !section.words.contains(word)
            {
                missing.push(word.to_string());
            }
        }
        for env in help.split("[env: ").skip(1) {
            let name: String = env
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !section.words.contains(&name) {
                missing.push(name);
            }
        }
        assert!(
            missing.is_empty(),
            "docs/configuration.md's `{binary}` section does not document {missing:?}"
        );
    }
}

#[test]
fn every_key_print_config_shows_is_documented() {
    let sections = reference();
    for binary in ["gateway", "regiond", "quota"] {
        let section = &sections[binary];
        let mut all = Vec::new();
        keys(&print_config(binary, &[]), "", &mut all);
        let missing: Vec<&str> = all
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !documented(section, k))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md's `{binary}` section does not document {missing:?}"
        );
        // And no documented key the binary does not have: a key whose
        // table is there, or that shows once its variable is set (below).
        for row in &section.rows {
            let top = row.key.split('.').next().unwrap_or_default();
            assert!(
                all.iter().any(|(k, _)| k == top) || row.variable.is_some(),
                "`{binary}`: documented key {} is not a setting",
                row.key
            );
        }
    }
}

/// A value for `key` unlike `current` (its value now, `None` when unset)
/// that the service accepts, as a variable would hold it; and the value
/// `--print-config` should then show.
fn sample(key: &str, current: Option<&toml::Value>) -> (String, toml::Value) {
    use toml::Value;
    let leaf = key.rsplit('.').next().unwrap_or(key);
    match (leaf, current) {
        ("route", _) => ("nats".into(), Value::String("nats".into())),
        ("backend", _) => ("memory".into(), Value::String("memory".into())),
        ("nats_url", _) => (
            "nats://127.0.0.1:4333".into(),
            Value::String("nats://127.0.0.1:4333".into()),
        ),
        ("listen" | "http_listen" | "grpc_listen" | "metrics_listen", _) => (
            "127.0.0.1:4999".into(),
            Value::String("127.0.0.1:4999".into()),
        ),
        ("grpc_advertise", _) => (
            "127.0.0.1:4998".into(),
            Value::String("127.0.0.1:4998".into()),
        ),
        ("region", _) => ("osl2".into(), Value::String("osl2".into())),
        (_, Some(Value::Integer(n))) => ((n + 1).to_string(), Value::Integer(n + 1)),
        (_, Some(Value::Boolean(b))) => ((!b).to_string(), Value::Boolean(!b)),
        (_, Some(Value::Array(_))) => (
            "[probe, probe2]".into(),
            Value::Array(vec![
                Value::String("probe".into()),
                Value::String("probe2".into()),
            ]),
        ),
        (_, Some(Value::String(s))) if s.contains('{') => {
            let v = format!("nordlys-{s}");
            (v.clone(), Value::String(v))
        }
        (_, Some(Value::String(s))) if !s.is_empty() => {
            let v = format!("{s}-x");
            (v.clone(), Value::String(v))
        }
        (leaf, _) if leaf.ends_with("_file") || leaf == "kubeconfig" => (
            "/nonexistent/nordlys-probe".into(),
            Value::String("/nonexistent/nordlys-probe".into()),
        ),
        _ => ("probe".into(), Value::String("probe".into())),
    }
}

/// Settings that only hold together with another one.
fn companions(binary: &str, key: &str) -> Vec<(&'static str, &'static str)> {
    match (binary, key) {
        // A default tier must be one of the tiers.
        ("quota", "default_tier") => vec![("NORDLYS_TIERS", "[probe]")],
        ("regiond", "openstack.default_tier") => {
            vec![("NORDLYS_OPENSTACK__TIERS__PROBE__NETWORK", "5")]
        }
        ("regiond", "kube.default_tier") => vec![("NORDLYS_KUBE__TIERS__PROBE__QUOTA__PODS", "10")],
        // TLS needs both halves.
        ("gateway", "tls.cert_file") => vec![("NORDLYS_TLS__KEY_FILE", "/nonexistent/k")],
        ("gateway", "tls.key_file") => vec![("NORDLYS_TLS__CERT_FILE", "/nonexistent/c")],
        (_, "nats.user") => vec![("NORDLYS_NATS__PASSWORD_FILE", "/nonexistent/p")],
        (_, "nats.password_file") => vec![("NORDLYS_NATS__USER", "u")],
        (_, "nats.cert_file") => vec![("NORDLYS_NATS__KEY_FILE", "/nonexistent/k")],
        (_, "nats.key_file") => vec![("NORDLYS_NATS__CERT_FILE", "/nonexistent/c")],
        _ => Vec::new(),
    }
}

#[test]
fn every_documented_variable_sets_its_key() {
    let sections = reference();
    for binary in ["gateway", "regiond", "quota"] {
        let defaults = print_config(binary, &[]);
        let mut wrong = Vec::new();
        for row in &sections[binary].rows {
            let Some(variable) = &row.variable else {
                continue;
            };
            let (value, shown) = sample(&row.key, lookup(&defaults, &row.key));
            let mut env = companions(binary, &row.key);
            env.push((variable.as_str(), value.as_str()));
            // A flag would win over the variable.
            let mut args: Vec<&str> = match (binary, row.key.as_str()) {
                ("regiond", "region") => vec!["--insecure-dev"],
                _ => required_args(binary).to_vec(),
            };
            args.push("--print-config");
            let (ok, stdout, stderr) = run(binary, &args, &env);
            if !ok {
                wrong.push(format!("{variable}={value}: {}", stderr.trim()));
                continue;
            }
            let table: toml::Table = stdout.parse().expect("TOML");
            let got = lookup(&table, &row.key);
            let redacted =
                row.key == "operator_key" && got == Some(&toml::Value::String("<redacted>".into()));
            if got != Some(&shown) && !redacted {
                wrong.push(format!(
                    "{variable}={value}: {} shows {got:?}, not {shown}",
                    row.key
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "`{binary}` variables of docs/configuration.md that do not set their key:\n{}",
            wrong.join("\n")
        );
    }
}
