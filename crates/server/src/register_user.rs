//! `myelin register-user`: registers an account through the shared-secret admin API, as
//! Synapse's `register_new_matrix_user` does (same prompts, same config lookup, same MAC).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, bail};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};

/// Arguments, as `register_new_matrix_user` takes them.
pub struct RegisterUserArgs {
    pub config: Vec<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub admin: Option<bool>,
    pub user_type: Option<String>,
    pub shared_secret: Option<String>,
    pub exists_ok: bool,
    pub server_url: Option<String>,
}

/// Reads the config files shallowly merged, without validating them (like the Synapse script).
fn read_raw_config(paths: &[PathBuf]) -> anyhow::Result<Map<String, Value>> {
    let mut merged = Map::new();
    for path in paths {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            match myelin_config::parse_yaml_value(&text) {
                Ok(Value::Object(map)) => merged.extend(map),
                _ => eprintln!(
                    "File {} is empty or doesn't parse into a key-value map. IGNORING.",
                    file.display()
                ),
            }
        }
    }
    Ok(merged)
}

/// The first plain-HTTP listener serving the client API, as `http://localhost:<port>`.
fn find_client_listener(config: &Map<String, Value>) -> Option<String> {
    config.get("listeners")?.as_array()?.iter().find_map(|listener| {
        let http = listener.get("type").and_then(Value::as_str) == Some("http");
        let tls = listener.get("tls").and_then(Value::as_bool).unwrap_or(false);
        let client = listener.get("resources").and_then(Value::as_array).is_some_and(|resources| {
            resources.iter().any(|r| {
                r.get("names")
                    .and_then(Value::as_array)
                    .is_some_and(|names| names.iter().any(|n| n == "client"))
            })
        });
        let port = listener.get("port").and_then(Value::as_u64)?;
        (http && !tls && client).then(|| format!("http://localhost:{port}"))
    })
}

fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The MAC `register_new_matrix_user` computes.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> String {
    let mut mac =
        <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

pub fn run(args: RegisterUserArgs) -> anyhow::Result<()> {
    let config = if args.config.is_empty() { None } else { Some(read_raw_config(&args.config)?) };
    let secret = match (&args.shared_secret, &config) {
        (Some(secret), _) => secret.clone(),
        (None, Some(config)) => {
            let inline = config.get("registration_shared_secret").and_then(Value::as_str);
            let path = config.get("registration_shared_secret_path").and_then(Value::as_str);
            match (inline, path) {
                (Some(_), Some(_)) => bail!(
                    "Conflicting options 'registration_shared_secret' and 'registration_shared_secret_path' are both defined in config file."
                ),
                (Some(secret), None) => secret.to_owned(),
                (None, Some(path)) => {
                    let secret = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                    let secret = secret.trim().to_owned();
                    if secret.is_empty() {
                        bail!("The secret given via `registration_shared_secret_path` must not be empty.");
                    }
                    secret
                }
                (None, None) => bail!(
                    "No 'registration_shared_secret' or 'registration_shared_secret_path' defined in config."
                ),
            }
        }
        (None, None) => bail!(
            "no configuration found: give -c homeserver.yaml or -k SHARED_SECRET (or --data-dir DIR, \
             the directory `myelin run` generated its homeserver.yaml in)"
        ),
    };
    let server_url = match (&args.server_url, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(config)) => find_client_listener(config).unwrap_or_else(|| {
            eprintln!("Unable to find a suitable HTTP listener in the configuration file. Trying http://localhost:8008 as a last resort.");
            "http://localhost:8008".to_owned()
        }),
        (None, None) => "http://localhost:8008".to_owned(),
    };
    let interactive = std::io::stdin().is_terminal();
    let user = match args.user {
        Some(user) => user,
        None => {
            let default = std::env::var("USER").ok().filter(|u| !u.is_empty());
            let question = match &default {
                Some(default) => format!("New user localpart [{default}]: "),
                None => "New user localpart: ".to_owned(),
            };
            let answer = prompt(&question)?;
            if answer.is_empty() { default.unwrap_or_default() } else { answer }
        }
    };
    if user.is_empty() {
        bail!("Invalid user name");
    }
    let password = match args.password {
        Some(password) => password,
        None if interactive => {
            let password = rpassword::prompt_password("Password: ")?;
            if password.is_empty() {
                bail!("Password cannot be blank.");
            }
            if rpassword::prompt_password("Confirm password: ")? != password {
                bail!("Passwords do not match");
            }
            password
        }
        None => prompt("Password: ")?,
    };
    if password.is_empty() {
        bail!("Password cannot be blank.");
    }
    let admin = match args.admin {
        Some(admin) => admin,
        None => matches!(prompt("Make admin [no]: ")?.as_str(), "y" | "yes" | "true"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(request_registration(
        &server_url,
        &secret,
        &user,
        &password,
        admin,
        args.user_type.as_deref(),
        args.exists_ok,
    ))
}

async fn request_registration(
    server_url: &str,
    secret: &str,
    user: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
    exists_ok: bool,
) -> anyhow::Result<()> {
    let url = format!("{}/_synapse/admin/v1/register", server_url.trim_end_matches('/'));
    let http = myelin_service::tls::http_client_builder()
        .context("configuring TLS")?
        .build()
        .context("building the HTTP client")?;
    let response = http.get(&url).send().await.with_context(|| format!("connecting to {url}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        bail!("the server answered {status}: {}", body["error"].as_str().unwrap_or("(no error message)"));
    }
    let nonce: Value = response.json().await?;
    let nonce = nonce["nonce"].as_str().context("the server sent no nonce")?.to_owned();
    let mac = registration_mac(secret, &nonce, user, password, admin, user_type);
    println!("Sending registration request...");
    let response = http
        .post(&url)
        .json(&json!({"nonce": nonce, "username": user, "password": password, "mac": mac, "admin": admin, "user_type": user_type}))
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if exists_ok && body["errcode"] == "M_USER_IN_USE" {
            println!("User already exists. Skipping.");
            return Ok(());
        }
        bail!(
            "registration failed: the server answered {status}: {}",
            body["error"].as_str().unwrap_or("(no error message)")
        );
    }
    println!("Success!");
    Ok(())
}
