//! `--print-config`: a service's settings as it would run with them
//! (defaults, then the file, then `NORDLYS_*` variables, then flags), as
//! TOML an operator can read or start from.

use serde::Serialize;

/// Prints `config` of service `name` on stdout (see [`config_toml`]); the
/// exit code to end with.
pub fn print_config<T: Serialize>(
    name: &str,
    config: &T,
    secrets: &[&str],
) -> std::process::ExitCode {
    match config_toml(config, secrets) {
        Ok(toml) => {
            print!("{toml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: cannot print the configuration: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `config` as TOML, with the values of `secrets` (top-level keys such as
/// `operator_key`) replaced by `<redacted>` when set. Unset optional keys are
/// left out: TOML has no null.
fn config_toml<T: Serialize>(config: &T, secrets: &[&str]) -> Result<String, String> {
    let mut value = toml::Value::try_from(config).map_err(|e| e.to_string())?;
    if let Some(table) = value.as_table_mut() {
        for key in secrets {
            if let Some(toml::Value::String(s)) = table.get_mut(*key) {
                if !s.is_empty() {
                    *s = "<redacted>".to_string();
                }
            }
        }
    }
    toml::to_string(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        operator_key: String,
        port: u16,
        file: Option<String>,
        nats: Nats,
    }

    #[derive(Serialize)]
    struct Nats {
        user: Option<String>,
    }

    #[test]
    fn secrets_are_redacted_and_unset_keys_left_out() {
        let shown = config_toml(
            &Sample {
                operator_key: "k-123".into(),
                port: 8080,
                file: None,
                nats: Nats {
                    user: Some("gw".into()),
                },
            },
            &["operator_key"],
        )
        .expect("toml");
        assert!(shown.contains("operator_key = \"<redacted>\""), "{shown}");
        assert!(!shown.contains("k-123"), "{shown}");
        assert!(shown.contains("port = 8080"), "{shown}");
        assert!(!shown.contains("file"), "{shown}");
        assert!(shown.contains("[nats]\nuser = \"gw\""), "{shown}");
    }
}
