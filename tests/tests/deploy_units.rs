//! The systemd units of deploy/systemd start what the workspace builds,
//! with the files deploy/ ships and docs/deploying.md tells operators to
//! write, and keep secrets off the command line (it shows in `ps`).
//! Renaming a binary, a flag, a configuration or environment file, or a
//! unit without following up here fails these tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use nordlys_tests::bin_path;
use nordlys_tests::cluster::deploy_dir;
use nordlys_transport::permissions;

/// Where an operator puts what deploy/ ships (docs/deploying.md, steps 3
/// and 5): `/etc/nordlys/nats/X` is `deploy/nats/X`, `/etc/nordlys/X` is
/// `deploy/nordlys/X`.
const ETC: &str = "/etc/nordlys/";

/// One unit file: (section, key, value) in file order.
struct Unit {
    file: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// `nordlys-gateway`, or `nordlys-regiond@` for a template.
    fn stem(&self) -> &str {
        self.file.trim_end_matches(".service")
    }

    fn is_template(&self) -> bool {
        self.stem().ends_with('@')
    }
}

fn root() -> PathBuf {
    deploy_dir()
        .parent()
        .expect("deploy/ is in the repository")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn units() -> Vec<Unit> {
    let dir = deploy_dir().join("systemd");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no units in deploy/systemd");
    files
        .into_iter()
        .map(|file| {
            let text = read(&dir.join(&file));
            let mut section = String::new();
            let mut entries = Vec::new();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                // No continuation lines: the checks below read one line.
                assert!(!line.ends_with('\\'), "{file}: a continued line: {line}");
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    section = name.to_string();
                    continue;
                }
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{file}: not `key=value`: {line}"));
                entries.push((
                    section.clone(),
                    key.trim().to_string(),
                    value.trim().to_string(),
                ));
            }
            Unit { file, entries }
        })
        .collect()
}

/// The `[[bin]]` names of the workspace's members.
fn workspace_binaries() -> Vec<String> {
    let manifest = read(&root().join("Cargo.toml"));
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("the workspace lists its members");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .flat_map(|member| {
            let text = read(&root().join(member).join("Cargo.toml"));
            text.split("[[bin]]")
                .skip(1)
                .filter_map(|bin| {
                    bin.lines()
                        .find_map(|l| l.trim().strip_prefix("name = "))
                        .map(|name| name.trim_matches('"').to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn nats_server() -> PathBuf {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server on PATH or in /usr/sbin")
}

/// The shipped file an `/etc/nordlys/...` path stands for, with a
/// template's `%i` matched against the shipped files: every match.
fn shipped(unit: &str, etc_path: &str) -> Vec<PathBuf> {
    let rel = etc_path
        .strip_prefix(ETC)
        .unwrap_or_else(|| panic!("{unit}: {etc_path} is not under {ETC}"));
    let (dir, name) = match rel.strip_prefix("nats/") {
        Some(name) => (deploy_dir().join("nats"), name),
        None => (deploy_dir().join("nordlys"), rel),
    };
    assert!(
        !name.contains('/'),
        "{unit}: {etc_path}: deploy/ has no such directory"
    );
    let (prefix, suffix) = name.split_once("%i").unwrap_or((name, ""));
    let exact = !name.contains("%i");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| {
            if exact {
                n == name
            } else {
                n.len() > prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            }
        })
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

/// What `%i` stands for in a shipped file matching a template's path.
fn instance(pattern: &str, file: &Path) -> String {
    let (prefix, suffix) = pattern.split_once("%i").expect("a template path");
    let name = file.file_name().expect("a file").to_string_lossy();
    name[prefix.len()..name.len() - suffix.len()].to_string()
}

/// Whether `docs` names `word` on its own (`nordlys-nats` is not in
/// `nordlys-nats-leaf`).
fn names(docs: &str, word: &str) -> bool {
    docs.match_indices(word).any(|(at, _)| {
        let next = docs[at + word.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The `$NORDLYS_*` variables a nats-server configuration reads, with the
/// files it includes (a leaf's `leaf-accounts.conf` is a renamed
/// `leaf-accounts-REGION.conf`: every shipped one is read).
fn nats_variables(config: &Path) -> Vec<String> {
    let text = read(config);
    let mut found: Vec<String> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split('$').skip(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| v.starts_with("NORDLYS_"))
        .collect();
    let dir = config.parent().expect("a directory");
    for line in text.lines().map(str::trim) {
        let Some(include) = line.strip_prefix("include ") else {
            continue;
        };
        let name = include.trim().trim_start_matches("./");
        let path = dir.join(name);
        if path.is_file() {
            found.extend(nats_variables(&path));
            continue;
        }
        let stem = name.trim_end_matches(".conf");
        let copies = shipped("include", &format!("{ETC}nats/{stem}-%i.conf"));
        assert!(
            !copies.is_empty(),
            "{}: includes {name}, not shipped",
            config.display()
        );
        for copy in copies {
            found.extend(nats_variables(&copy));
        }
    }
    found
}

/// The variables `nordlysctl nats keygen` writes to nats.env for the
/// regions deploy/nats ships leaf accounts for.
fn keygen_variables() -> Vec<String> {
    let regions: Vec<String> = shipped("keygen", &format!("{ETC}nats/leaf-accounts-%i.conf"))
        .iter()
        .map(|f| instance("leaf-accounts-%i.conf", f))
        .collect();
    let mut users = permissions::hub_users("nordlys-quota", &[]);
    users.extend(
        regions
            .iter()
            .map(|r| permissions::regiond(r, permissions::JetStreamApi::Domain("hub"))),
    );
    users
        .iter()
        .map(permissions::User::nkey_variable)
        .chain(
            regions
                .iter()
                .map(|r| permissions::leaf_password_variable(r)),
        )
        .collect()
}

/// ExecStart is a built binary, its only option the configuration file's
/// flag, naming a file deploy/ ships.
#[test]
fn units_start_built_binaries_on_shipped_configs_with_no_secret_in_argv() {
    let binaries = workspace_binaries();
    for name in ["gateway", "regiond", "quota"] {
        assert!(
            binaries.iter().any(|b| b == name),
            "{name} not built: {binaries:?}"
        );
    }
    let mut started = Vec::new();
    for unit in units() {
        let file = &unit.file;
        let exec = unit.values("Service", "ExecStart");
        assert_eq!(exec.len(), 1, "{file}: one ExecStart");
        // systemd puts ${VAR} of an EnvironmentFile into argv: visible in ps.
        assert!(
            !exec[0].contains('$'),
            "{file}: a variable on the command line: {}",
            exec[0]
        );
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        let program = Path::new(argv[0]);
        assert!(program.is_absolute(), "{file}: {}", argv[0]);
        let binary = program
            .file_name()
            .expect("a program")
            .to_string_lossy()
            .into_owned();
        let (flag, built) = if binary == "nats-server" {
            ("-c", nats_server())
        } else {
            assert!(
                binaries.contains(&binary),
                "{file}: {binary} is not a binary of the workspace ({binaries:?})"
            );
            ("--config", bin_path(&binary))
        };
        // Only the configuration file: every other setting, secrets above
        // all, lives in a file, where ps cannot show it.
        assert_eq!(
            argv.len(),
            3,
            "{file}: `{}` passes more than {flag} FILE",
            exec[0]
        );
        assert_eq!(argv[1], flag, "{file}: {}", exec[0]);
        let help = Command::new(&built)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", built.display()));
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&help.stdout),
            String::from_utf8_lossy(&help.stderr)
        );
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag},")),
            "{file}: {binary} --help does not offer {flag}:\n{help}"
        );
        let config = argv[2];
        let files = shipped(file, config);
        assert!(
            !files.is_empty(),
            "{file}: {config} is none of the files deploy/ ships"
        );
        assert_eq!(
            config.contains("%i"),
            unit.is_template(),
            "{file}: {config}: only a template's configuration names its instance"
        );
        started.push(binary);
    }
    // Every service and both kinds of NATS node have a unit.
    for binary in ["gateway", "regiond", "quota", "nats-server"] {
        assert!(
            started.iter().any(|b| b == binary),
            "no unit starts {binary}"
        );
    }
    assert_eq!(
        started.iter().filter(|b| *b == "nats-server").count(),
        2,
        "a unit for a cluster node and one for a leaf"
    );
}

/// Each EnvironmentFile is one docs/deploying.md tells operators to write,
/// its example (if deploy/ ships one) names the same path, and a NATS
/// node's files set every variable its configuration reads.
#[test]
fn units_read_the_environment_files_the_docs_name() {
    let docs = read(&root().join("docs/deploying.md"));
    let generated = keygen_variables();
    for unit in units() {
        let file = &unit.file;
        let mut set: Vec<String> = Vec::new();
        for env in unit.values("Service", "EnvironmentFile") {
            // A leading `-` would let the unit start without it.
            assert!(env.starts_with('/'), "{file}: EnvironmentFile={env}");
            assert!(env.starts_with(ETC), "{file}: {env} is not under {ETC}");
            assert!(
                docs.contains(&format!("`{env}`")),
                "{file}: docs/deploying.md does not tell operators to write `{env}`"
            );
            let name = Path::new(env)
                .file_name()
                .expect("a file")
                .to_string_lossy();
            if name == "nats.env" {
                set.extend(generated.iter().cloned());
                continue;
            }
            let examples = shipped(file, &format!("{env}.example"));
            if let Some(example) = examples.first() {
                let text = read(example);
                let header = text.lines().next().unwrap_or_default();
                assert!(
                    header.contains(env),
                    "{}: its first line does not name {env} (used by {file}): {header}",
                    example.display()
                );
                set.extend(
                    text.lines()
                        .filter(|l| !l.starts_with('#'))
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, _)| k.trim().to_string()),
                );
            }
        }
        let exec = unit.values("Service", "ExecStart");
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        if argv[0].ends_with("/nats-server") {
            for config in shipped(file, argv[2]) {
                for variable in nats_variables(&config) {
                    assert!(
                        set.contains(&variable),
                        "{file}: {} reads ${variable}, which none of its EnvironmentFiles sets",
                        config.display()
                    );
                }
            }
        }
    }
}

/// The seed a service's shipped configuration names is the one `nordlysctl
/// nats keygen` writes for that service, where docs/deploying.md says to
/// copy it; the units and their instances are the ones the docs start.
#[test]
fn services_read_the_seeds_keygen_writes_and_the_docs_start_the_units() {
    let docs = read(&root().join("docs/deploying.md"));
    for unit in units() {
        let file = &unit.file;
        let exec = unit.values("Service", "ExecStart");
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        let binary = Path::new(argv[0])
            .file_name()
            .expect("a program")
            .to_string_lossy()
            .into_owned();
        let configs = shipped(file, argv[2]);
        if unit.is_template() {
            for config in &configs {
                let instance = instance(
                    Path::new(argv[2])
                        .file_name()
                        .expect("a file")
                        .to_str()
                        .expect("UTF-8"),
                    config,
                );
                let started = format!("{}{instance}", unit.stem());
                assert!(
                    names(&docs, &started),
                    "docs/deploying.md never starts {started}"
                );
            }
        } else {
            assert!(
                names(&docs, unit.stem()),
                "docs/deploying.md never starts {}",
                unit.stem()
            );
        }
        if binary == "nats-server" {
            continue;
        }
        for config in configs {
            let text = read(&config);
            let value = |key: &str| {
                text.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once('=')?;
                        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                    })
                    .unwrap_or_else(|| panic!("{}: no {key}", config.display()))
            };
            let user = match binary.as_str() {
                "gateway" => permissions::gateway(),
                "quota" => permissions::quota(&value("bucket")),
                "regiond" => {
                    permissions::regiond(&value("region"), permissions::JetStreamApi::Domain("hub"))
                }
                other => panic!("{file}: which NATS user is {other}?"),
            };
            let seed = format!("{}.nk", user.name);
            assert_eq!(
                value("nkey_file"),
                format!("{ETC}nats/{seed}"),
                "{}: not the seed keygen writes for {}",
                config.display(),
                user.name
            );
            assert!(
                docs.contains(&format!("`{seed}`")),
                "docs/deploying.md does not name {seed}"
            );
            assert!(
                docs.contains(&format!("`{ETC}nats/`")),
                "docs/deploying.md: where seeds go"
            );
        }
    }
}
