//! `nordlysctl nats`: the NATS side of a deployment: the nats-server
//! permissions of every service, and the keys they log in with.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use nordlys_transport::permissions;

use crate::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum NatsCommand {
    /// Writes the generated nats-server files: accounts and permissions of
    /// the hub cluster, its leaf node logins, each region's leaf accounts.
    Config(Config),
    /// Makes an nkey per service and a password per region's leaf node:
    /// seed files for the services (mode 0600) and `nats.env`, the public
    /// keys and leaf passwords the nats-server configuration reads.
    Keygen(Keygen),
}

#[derive(Debug, Args)]
pub(crate) struct Config {
    /// The regions, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    regions: Vec<String>,
    /// The quota service's bucket (its `bucket` setting).
    #[arg(long, default_value = "nordlys-quota")]
    quota_bucket: String,
    /// The hub cluster's JetStream domain.
    #[arg(long, default_value = "hub")]
    domain: String,
    /// The directory to write to.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct Keygen {
    /// The regions, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    regions: Vec<String>,
    /// The directory to write to (created; existing keys are kept).
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run(command: &NatsCommand) -> Result<(), Failure> {
    match command {
        NatsCommand::Config(args) => config(args),
        NatsCommand::Keygen(args) => keygen(args),
    }
}

fn check_regions(regions: &[String]) -> Result<Vec<&str>, Failure> {
    regions
        .iter()
        .map(|region| {
            nordlys_api::validate::is_region(region)
                .then_some(region.as_str())
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "region {region:?}: use 1 to 32 lowercase letters, digits and hyphens, starting with a letter"
                    ))
                })
        })
        .collect()
}

fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure::Usage(format!("{}: {e}", path.display()))
}

fn config(args: &Config) -> Result<(), Failure> {
    let regions = check_regions(&args.regions)?;
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    for (name, text) in permissions::server_files(&args.quota_bucket, &regions, &args.domain) {
        let path = args.out.join(&name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes `text` to a new file only its owner can read; an existing file is
/// kept (rotating a key is deleting it first, on purpose).
fn write_secret(path: &Path, text: &str) -> Result<bool, Failure> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

fn keygen(args: &Keygen) -> Result<(), Failure> {
    let regions = check_regions(&args.regions)?;
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    let mut users = permissions::hub_users("unused", &[]);
    users.extend(
        regions
            .iter()
            .map(|r| permissions::regiond(r, permissions::JetStreamApi::Local)),
    );
    let mut env =
        String::from("# Public nkeys and leaf passwords for the nats-server configuration.\n");
    for user in &users {
        let path = args.out.join(format!("{}.nk", user.name));
        if write_secret(
            &path,
            &format!(
                "{}\n",
                nkeys::KeyPair::new_user()
                    .seed()
                    .map_err(|e| Failure::Usage(e.to_string()))?
            ),
        )? {
            println!("wrote {}", path.display());
        }
        let seed = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let public = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?
            .public_key();
        env.push_str(&format!("{}={public}\n", user.nkey_variable()));
    }
    for region in &regions {
        let path = args.out.join(format!("leaf-{region}.password"));
        // nats-server reads `$VARIABLE` values as configuration: one that
        // starts with a digit parses as a number and fails. A letter first.
        let mut rng = rand::rng();
        let first = char::from(b'a' + rand::Rng::random_range(&mut rng, 0..26u8));
        let password: String = std::iter::once(first)
            .chain(
                rand::Rng::sample_iter(&mut rng, &rand::distr::Alphanumeric)
                    .take(31)
                    .map(char::from),
            )
            .collect();
        if write_secret(&path, &format!("{password}\n"))? {
            println!("wrote {}", path.display());
        }
        let password = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        env.push_str(&format!(
            "{}={}\n",
            permissions::leaf_password_variable(region),
            password.trim()
        ));
    }
    let path = args.out.join("nats.env");
    std::fs::write(&path, &env).map_err(|e| io(&path, e))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| io(&path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}
