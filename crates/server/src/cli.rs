//! The command line: `myelin [run] | generate-config | hash-password | register-user`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use myelin_service::passwords::PasswordHasher;

use crate::generate::{GenerateOptions, generate};

#[derive(Parser)]
#[command(
    name = "myelin",
    version,
    about = "Myelin, a Matrix homeserver",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Run(RunArgs),
    /// Write a commented homeserver.yaml with fresh secrets and a signing key.
    GenerateConfig(GenerateArgs),
    /// Hash a password for the users table, like Synapse's hash_password.
    HashPassword(HashPasswordArgs),
    /// Register a user with the shared secret, like Synapse's register_new_matrix_user.
    RegisterUser(RegisterUserCli),
}

#[derive(Args)]
struct RegisterUserCli {
    /// Local part of the new user (prompted for when omitted).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// New password (prompted for when omitted).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// User type, e.g. bot or support.
    #[arg(short = 't', long = "user_type", alias = "user-type")]
    user_type: Option<String>,
    /// Make the new user a server admin.
    #[arg(short = 'a', long, conflicts_with = "no_admin")]
    admin: bool,
    /// Make the new user a regular user.
    #[arg(long)]
    no_admin: bool,
    /// Succeed when the user exists already.
    #[arg(long)]
    exists_ok: bool,
    /// Config file(s) to read the shared secret and the client listener from.
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Vec<PathBuf>,
    /// The shared secret, instead of reading it from the config.
    #[arg(short = 'k', long = "shared-secret")]
    shared_secret: Option<String>,
    /// With no -c and no -k: the data directory whose homeserver.yaml to read, as `run` uses it.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The server URL (default: the config's first plain-HTTP client listener).
    server_url: Option<String>,
}

#[derive(Args, Default)]
struct RunArgs {
    /// A YAML config file, or a directory of *.yaml files read in name order. Repeatable; a later
    /// file's top-level key replaces an earlier one.
    #[arg(short = 'c', long = "config-path", value_name = "PATH")]
    config: Vec<PathBuf>,
    /// The server name of a configuration generated on first start (with no -c) or by
    /// --generate-config.
    #[arg(short = 'H', long)]
    server_name: Option<String>,
    /// Where data lives: with no -c, the generated configuration too [default: myelin-data];
    /// with --generate-config, the database and pid file [default: the config's directory].
    #[arg(long, value_name = "DIR", alias = "data-directory")]
    data_dir: Option<PathBuf>,
    /// The port of the listener written when the configuration is generated [default: 8008].
    #[arg(long)]
    port: Option<u16>,
    /// An address for the listener written when the configuration is generated (repeatable)
    /// [default: 127.0.0.1].
    #[arg(long, value_name = "ADDRESS")]
    bind: Vec<std::net::IpAddr>,
    /// Synapse's `--generate-config`: write a configuration at the -c path (never overwriting
    /// one), then exit.
    #[arg(long, requires = "config")]
    generate_config: bool,
    /// With --generate-config, as in Synapse; Myelin never reports statistics.
    #[arg(long, value_name = "yes|no")]
    report_stats: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    server_name: String,
    /// Where to write homeserver.yaml.
    #[arg(short = 'c', long = "config-path", value_name = "PATH")]
    config_path: PathBuf,
    /// Where the database, media store and pid file go (default: the config file's directory).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accepted for compatibility with Synapse; Myelin never reports statistics.
    #[arg(long, value_name = "yes|no", default_value = "no")]
    report_stats: String,
    /// The port of the generated HTTP listener.
    #[arg(long, default_value_t = 8008)]
    port: u16,
    /// An address for the generated HTTP listener (repeatable) [default: 127.0.0.1].
    #[arg(long, value_name = "ADDRESS")]
    bind: Vec<std::net::IpAddr>,
}

#[derive(Args)]
struct HashPasswordArgs {
    /// The password (prompted for, or read from standard input, when omitted).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// A config file to read bcrypt_rounds and password_config.pepper from.
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Vec<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::GenerateConfig(args)) => generate_config(args),
        Some(Command::HashPassword(args)) => hash_password(args),
        Some(Command::RegisterUser(args)) => {
            // Without -c or -k, the configuration `run` would use (Synapse's script requires
            // -c; Myelin's one-line start has a default place for it).
            let default_config = args.data_dir.join("homeserver.yaml");
            let config = if args.config.is_empty() && args.shared_secret.is_none() && default_config.exists()
            {
                vec![default_config]
            } else {
                args.config
            };
            crate::register_user::run(crate::register_user::RegisterUserArgs {
                config,
                user: args.user,
                password: args.password,
                admin: if args.admin {
                    Some(true)
                } else if args.no_admin {
                    Some(false)
                } else {
                    None
                },
                user_type: args.user_type,
                shared_secret: args.shared_secret,
                exists_ok: args.exists_ok,
                server_url: args.server_url,
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate_config(args: GenerateArgs) -> anyhow::Result<()> {
    let report_stats = parse_report_stats(&args.report_stats)?;
    write_config(&GenerateOptions {
        server_name: args.server_name,
        config_path: args.config_path,
        data_dir: args.data_dir,
        report_stats,
        port: args.port,
        bind_addresses: args.bind.iter().map(ToString::to_string).collect(),
    })
}

fn parse_report_stats(value: &str) -> anyhow::Result<bool> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("--report-stats must be yes or no, not {other:?}"),
    }
}

fn write_config(options: &GenerateOptions) -> anyhow::Result<()> {
    let generated = generate(options)?;
    if generated.wrote_config {
        println!("A config file has been generated in {:?}.", options.config_path);
    } else {
        println!("Config file {:?} already exists; not overwriting it.", options.config_path);
    }
    if generated.wrote_signing_key {
        println!("Generated signing key file {:?}.", generated.signing_key_path);
    }
    Ok(())
}

fn read_password_interactively() -> anyhow::Result<String> {
    let password = rpassword::prompt_password("Password: ")?;
    if password.is_empty() {
        bail!("password cannot be blank");
    }
    let confirm = rpassword::prompt_password("Confirm password: ")?;
    if password != confirm {
        bail!("passwords do not match");
    }
    Ok(password)
}

fn hash_password(args: HashPasswordArgs) -> anyhow::Result<()> {
    // Like Synapse's hash_password, only bcrypt_rounds and password_config are read, so a file
    // holding nothing else will do.
    let password_config = if args.config.is_empty() {
        myelin_config::load_from_str("server_name: localhost", std::path::Path::new("defaults"))?
            .config
            .password
    } else {
        myelin_config::load_password_config(&args.config)?
    };
    let password = match args.password {
        Some(password) => password,
        None if !std::io::stdin().is_terminal() => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
        None => read_password_interactively()?,
    };
    if password.is_empty() {
        bail!("password cannot be blank");
    }
    let hash =
        PasswordHasher::new(&password_config).hash_blocking(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}

/// The config paths to run with: the given ones, or a configuration generated on first start.
/// Also says whether the configuration was generated just now.
fn config_paths(args: &RunArgs) -> anyhow::Result<(Vec<PathBuf>, bool)> {
    if !args.config.is_empty() {
        return Ok((args.config.clone(), false));
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let config_path = data_dir.join("homeserver.yaml");
    if config_path.exists() {
        return Ok((vec![config_path], false));
    }
    let Some(server_name) = &args.server_name else {
        bail!(
            "no configuration: give -c homeserver.yaml, or --server-name NAME to generate one in {}",
            data_dir.display()
        );
    };
    generate(&GenerateOptions {
        server_name: server_name.clone(),
        config_path: config_path.clone(),
        data_dir: Some(data_dir),
        report_stats: false,
        port: args.port.unwrap_or(8008),
        bind_addresses: args.bind.iter().map(ToString::to_string).collect(),
    })?;
    eprintln!("Generated a configuration in {}", config_path.display());
    Ok((vec![config_path], true))
}

/// The directory `run` and `register-user` use when no -c is given.
pub const DEFAULT_DATA_DIR: &str = "myelin-data";

/// `--port` and `--bind` describe the listener of a configuration generated now; with an
/// existing one they must agree with it rather than be silently ignored.
fn check_listener_flags(args: &RunArgs, config: &myelin_config::Config) -> anyhow::Result<()> {
    let listeners = &config.server.listeners;
    if let Some(port) = args.port
        && !listeners.iter().any(|l| l.port == Some(port))
    {
        bail!(
            "--port {port} only applies when the configuration is generated; no listener of the \
             existing configuration ({}) is on port {port}: edit its `listeners` instead",
            config.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    for address in args.bind.iter().map(ToString::to_string) {
        if !listeners.iter().any(|l| l.addresses().contains(&address)) {
            bail!(
                "--bind {address} only applies when the configuration is generated; no listener \
                 of the existing configuration binds {address}: edit its `listeners` instead"
            );
        }
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.generate_config {
        let Some(server_name) = args.server_name.clone() else {
            bail!("--generate-config needs --server-name NAME");
        };
        return write_config(&GenerateOptions {
            server_name,
            config_path: args.config[0].clone(),
            data_dir: args.data_dir.clone(),
            report_stats: parse_report_stats(args.report_stats.as_deref().unwrap_or("no"))?,
            port: args.port.unwrap_or(8008),
            bind_addresses: args.bind.iter().map(ToString::to_string).collect(),
        });
    }
    if args.report_stats.is_some() {
        bail!("--report-stats only applies with --generate-config");
    }
    let (paths, generated) = config_paths(&args)?;
    let loaded = myelin_config::load(&paths)?;
    if let Some(server_name) = &args.server_name
        && *server_name != loaded.config.server.server_name
    {
        bail!(
            "--server-name {server_name} does not match server_name {} in the configuration",
            loaded.config.server.server_name
        );
    }
    if !generated {
        check_listener_flags(&args, &loaded.config)?;
    }
    crate::logging::init(loaded.config.logging.log_config.as_deref())?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(loaded.config))
}

async fn serve(config: myelin_config::Config) -> anyhow::Result<()> {
    let pid_file = config.server.pid_file.clone();
    let server = crate::start(config).await?;
    if let Some(path) = &pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid_file {}", path.display()))?;
    }
    tracing::info!(server_name = server.services.server_name(), "Myelin is running");
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown(crate::listeners::GRACE).await;
    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
