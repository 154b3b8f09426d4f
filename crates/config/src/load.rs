//! Reading, merging and validating configuration files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Config;
use crate::synapse_keys::SYNAPSE_TOP_LEVEL_KEYS;

/// A configuration that could not be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config path {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: the top level must be a mapping of keys to values")]
    NotAMapping { path: PathBuf },
    #[error("{file}: `{key}`: {message}")]
    Invalid { file: String, key: String, message: String },
    #[error("no config file given and none found")]
    Empty,
    #[error(
        "{file}: this is a Synapse worker configuration; Myelin does not run workers yet \
         (`worker_app: {worker_app}`): start Myelin with the main process's configuration only"
    )]
    WorkerConfig { file: String, worker_app: String },
}

/// The typed configuration plus the warnings found while reading it.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Where each top-level key came from, for error messages.
#[derive(Default)]
pub(crate) struct Origins {
    by_key: BTreeMap<String, String>,
    /// The first file read, blamed for keys that are missing altogether.
    first_file: String,
}

impl Origins {
    pub(crate) fn file_of(&self, key_path: &str) -> String {
        let top = key_path.split(['.', '[']).next().unwrap_or(key_path);
        self.by_key.get(top).cloned().unwrap_or_else(|| self.first_file.clone())
    }
}

/// Expands the `-c` arguments into the list of files to read, in order.
fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|e| ConfigError::Read { path: path.clone(), message: e.to_string() })?;
        if metadata.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ConfigError::Read { path: path.clone(), message: e.to_string() })?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "yaml") && p.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Parses YAML as Synapse's PyYAML does: a text serde-saphyr refuses only because a quoted
/// scalar continues on an under-indented line is read with those lines indented (which does not
/// change any value; see the `pyyaml` module). Errors are the original text's.
pub fn parse_yaml_value(text: &str) -> Result<Value, String> {
    match serde_saphyr::from_str::<Value>(text) {
        Ok(value) => Ok(value),
        Err(error) => crate::pyyaml::indent_quoted_continuations(text)
            .and_then(|fixed| serde_saphyr::from_str::<Value>(&fixed).ok())
            // serde-saphyr starts its messages with "error: "; ours get one prefix only.
            .ok_or_else(|| {
                let message = error.to_string();
                message.strip_prefix("error: ").map(str::to_owned).unwrap_or(message)
            }),
    }
}

fn parse_yaml(path: &Path, text: &str) -> Result<Map<String, Value>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value =
        parse_yaml_value(text).map_err(|message| ConfigError::Yaml { path: path.to_owned(), message })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(ConfigError::NotAMapping { path: path.to_owned() }),
    }
}

/// Reads and merges the given files or directories, then builds the typed [`Config`].
pub fn load(paths: &[PathBuf]) -> Result<LoadedConfig, ConfigError> {
    let files = expand_paths(paths)?;
    if files.is_empty() {
        return Err(ConfigError::Empty);
    }
    let mut layers = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Read { path: file.clone(), message: e.to_string() })?;
        layers.push((file.clone(), parse_yaml(file, &text)?));
    }
    let config_dir = files[0].parent().map(Path::to_path_buf).unwrap_or_default();
    build(layers, config_dir, files)
}

/// Builds a configuration from YAML text, as if read from `origin` (used by tests and tools).
pub fn load_from_str(yaml: &str, origin: &Path) -> Result<LoadedConfig, ConfigError> {
    let layer = parse_yaml(origin, yaml)?;
    let config_dir = origin.parent().map(Path::to_path_buf).unwrap_or_default();
    build(vec![(origin.to_owned(), layer)], config_dir, vec![origin.to_owned()])
}

fn build(
    layers: Vec<(PathBuf, Map<String, Value>)>,
    config_dir: PathBuf,
    files: Vec<PathBuf>,
) -> Result<LoadedConfig, ConfigError> {
    let mut merged = Map::new();
    let mut origins = Origins {
        first_file: files.first().map(|f| f.display().to_string()).unwrap_or_default(),
        ..Origins::default()
    };
    for (file, layer) in layers {
        for (key, value) in layer {
            origins.by_key.insert(key.clone(), file.display().to_string());
            merged.insert(key, value);
        }
    }
    refuse_worker_config(&merged, &origins)?;
    let root = Value::Object(merged);
    let mut reader =
        SectionReader { root: &root, origins: &origins, sections: Vec::new(), warnings: Vec::new() };
    let mut config = Config::read(&mut reader, config_dir, files)?;
    let mut warnings = reader.finish();
    config.validate(&origins, &mut warnings)?;
    Ok(LoadedConfig { config, warnings })
}

/// A Synapse worker's configuration (`worker_app` other than the main process's own
/// `synapse.app.homeserver`, which Synapse reads as no worker at all) would otherwise be taken
/// for a main process and bind the main process's listeners.
fn refuse_worker_config(merged: &Map<String, Value>, origins: &Origins) -> Result<(), ConfigError> {
    match merged.get("worker_app") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(app)) if app == "synapse.app.homeserver" => Ok(()),
        Some(app) => Err(ConfigError::WorkerConfig {
            file: origins.file_of("worker_app"),
            worker_app: app.as_str().map_or_else(|| app.to_string(), str::to_owned),
        }),
    }
}

/// Reads only what hashing a password needs (`bcrypt_rounds` and `password_config`), from files
/// that may hold nothing else, as Synapse's `hash_password -c` does.
pub fn load_password_config(paths: &[PathBuf]) -> Result<crate::PasswordConfig, ConfigError> {
    let files = expand_paths(paths)?;
    if files.is_empty() {
        return Err(ConfigError::Empty);
    }
    let mut merged = Map::new();
    let mut origins = Origins { first_file: files[0].display().to_string(), ..Origins::default() };
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Read { path: file.clone(), message: e.to_string() })?;
        for (key, value) in parse_yaml(file, &text)? {
            origins.by_key.insert(key.clone(), file.display().to_string());
            merged.insert(key, value);
        }
    }
    let root = Value::Object(merged);
    let mut reader =
        SectionReader { root: &root, origins: &origins, sections: Vec::new(), warnings: Vec::new() };
    crate::sections::read_password_section(&mut reader)
}

/// Deserializes sections from the merged top-level mapping and tracks which keys no section read.
pub(crate) struct SectionReader<'a> {
    root: &'a Value,
    pub(crate) origins: &'a Origins,
    /// For each section read: the top-level keys it ignored, and its ignored nested paths.
    sections: Vec<(BTreeSet<String>, BTreeSet<String>)>,
    /// Warnings about values read (a Synapse shape read leniently, an option that does nothing).
    pub(crate) warnings: Vec<String>,
}

impl SectionReader<'_> {
    pub(crate) fn section<T: DeserializeOwned>(&mut self) -> Result<T, ConfigError> {
        let mut ignored = Vec::new();
        let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(path_segments(&path));
        let deserializer = serde_ignored::Deserializer::new(self.root, &mut on_ignored);
        let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
        let value = result.map_err(|error| {
            let key = error.path().to_string();
            ConfigError::Invalid {
                file: self.origins.file_of(&key),
                message: error.into_inner().to_string(),
                key,
            }
        })?;
        let mut top = BTreeSet::new();
        let mut nested = BTreeSet::new();
        for segments in ignored {
            if segments.len() == 1 {
                top.insert(segments[0].clone());
            } else {
                nested.insert(join_path(&segments));
            }
        }
        self.sections.push((top, nested));
        Ok(value)
    }

    /// The warnings about values, then one warning per key that no section read.
    fn finish(self) -> Vec<String> {
        let mut warnings = self.warnings;
        let mut unread: Option<BTreeSet<String>> = None;
        let mut nested_all = BTreeSet::new();
        for (top, nested) in self.sections {
            unread = Some(match unread {
                None => top,
                Some(previous) => previous.intersection(&top).cloned().collect(),
            });
            nested_all.extend(nested);
        }
        for key in unread.unwrap_or_default() {
            let file = self.origins.file_of(&key);
            if SYNAPSE_TOP_LEVEL_KEYS.contains(&key.as_str()) {
                warnings.push(format!(
                    "{file}: `{key}` is a Synapse option that Myelin does not support yet; ignored"
                ));
            } else if let Some(closest) = closest_known_key(&key) {
                warnings.push(format!(
                    "{file}: `{key}` is not a known option (misspelt? the closest Synapse option is `{closest}`); ignored"
                ));
            } else {
                warnings.push(format!(
                    "{file}: `{key}` is not a known option (neither Synapse's nor Myelin's); ignored"
                ));
            }
        }
        for path in nested_all {
            let file = self.origins.file_of(&path);
            warnings.push(format!("{file}: `{path}` is not supported by Myelin; ignored"));
        }
        warnings
    }
}

/// The Synapse option a misspelt key most likely meant: the nearest by edit distance
/// (transpositions count once), if it is near enough to be a typo rather than another word.
fn closest_known_key(key: &str) -> Option<&'static str> {
    let (distance, closest) =
        SYNAPSE_TOP_LEVEL_KEYS.iter().map(|known| (strsim::damerau_levenshtein(key, known), *known)).min()?;
    // One edit in four characters at most (`enable_regstration`, `listners`), and never more
    // than three: short unrelated words are not typos of each other.
    let allowed = (key.chars().count() / 4).clamp(1, 3);
    (distance <= allowed).then_some(closest)
}

fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut segments = path_segments(parent);
            segments.push(format!("[{index}]"));
            segments
        }
        P::Map { parent, key } => {
            let mut segments = path_segments(parent);
            segments.push(key.clone());
            segments
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_segments(parent)
        }
    }
}

fn join_path(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if !segment.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}
