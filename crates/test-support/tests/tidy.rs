//! Tidy tests: the rules of ARCHITECTURE.md, checked by reading the source tree.
//!
//! Each test parses every `crates/*/src/**/*.rs` file with `syn` (code under `#[cfg(test)]`,
//! `#[test]` and test-only modules is skipped) or reads the crates' manifests, and fails with
//! the file, line and rule of every violation. A rule with a justified exception lists it in
//! the test, next to the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;
use syn::{Attribute, Item, Visibility};

/// The workspace root (this crate lives in `crates/test-support`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The workspace's crates: directory name under `crates/` → path.
fn crates() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates/") {
        let path = entry.expect("crates/ entry").path();
        if path.join("Cargo.toml").is_file() {
            let name = path.file_name().expect("crate dir name").to_string_lossy().into_owned();
            out.insert(name, path);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    SqlOutsideStore,
    HttpOutsideApi,
    WireJsonOutsideApi,
    Global,
    Unsafe,
    Unwrap,
    StoreExposed,
}

impl Rule {
    fn explain(self) -> &'static str {
        match self {
            Rule::SqlOutsideStore => "SQL is written only in `store`",
            Rule::HttpOutsideApi => "HTTP statuses and types belong to `api` (and outbound clients)",
            Rule::WireJsonOutsideApi => "client wire JSON is built only in `api`",
            Rule::Global => {
                "no process-wide state: pass it explicitly (no static/OnceLock/LazyLock/thread_local)"
            }
            Rule::Unsafe => "no unsafe code",
            Rule::Unwrap => "no unwrap()/expect() on request paths: return an error",
            Rule::StoreExposed => "the store is reached only through service methods",
        }
    }
}

struct Finding {
    file: PathBuf,
    line: usize,
    rule: Rule,
    what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.strip_prefix(workspace()).unwrap_or(&self.file);
        write!(f, "{}:{}: {} ({})", file.display(), self.line, self.what, self.rule.explain())
    }
}

/// One parsed source file of a crate, with the crate's directory name.
struct Source {
    krate: String,
    path: PathBuf,
    file: syn::File,
}

/// Every non-test source file of every crate, parsed. Files that are test-only modules
/// (declared `#[cfg(test)] mod x;`) are left out.
fn sources() -> Vec<Source> {
    let mut out = Vec::new();
    for (krate, dir) in crates() {
        let src = dir.join("src");
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&src)
            .into_iter()
            .map(|e| e.expect("walk src").into_path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        let parsed: Vec<(PathBuf, syn::File)> = files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("read source");
                let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (path, file)
            })
            .collect();
        let test_only = test_only_files(&parsed);
        for (path, file) in parsed {
            if !test_only.iter().any(|t| path == *t || path.starts_with(t.with_extension(""))) {
                out.push(Source { krate: krate.clone(), path, file });
            }
        }
    }
    out
}

/// The files of modules declared under `#[cfg(test)]` (`#[cfg(test)] mod prop_support;`).
fn test_only_files(parsed: &[(PathBuf, syn::File)]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (path, file) in parsed {
        let stem = path.file_stem().expect("file stem").to_string_lossy();
        let dir = path.parent().expect("parent dir");
        let children = if matches!(stem.as_ref(), "mod" | "lib" | "main") {
            dir.to_path_buf()
        } else {
            dir.join(&*stem)
        };
        for item in &file.items {
            if let Item::Mod(module) = item
                && module.content.is_none()
                && is_test_only(&module.attrs)
            {
                let name = module.ident.to_string();
                out.push(children.join(format!("{name}.rs")));
                out.push(children.join(&name).join("mod.rs"));
            }
        }
    }
    out
}

fn is_test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let path = attr.path();
        if path.is_ident("test") {
            return true;
        }
        if path.is_ident("cfg") {
            let tokens = attr.meta.require_list().map(|l| l.tokens.to_string()).unwrap_or_default();
            return tokens.trim() == "test"
                || tokens.starts_with("all(test")
                || tokens.contains("feature = \"test-hooks\"");
        }
        false
    })
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Keys that appear only in client-server response envelopes (never in event content), so a
/// string literal naming one outside `api` is building a client response.
const WIRE_KEYS: &[&str] = &[
    "errcode",
    "next_batch",
    "prev_batch",
    "next_token",
    "chunk",
    "unread_notifications",
    "unread_thread_notifications",
    "notification_count",
    "highlight_count",
    "timeline",
    "ephemeral",
    "joined_member_count",
    "invited_member_count",
    "device_one_time_keys_count",
    "total_room_count_estimate",
    "next_batch_token",
    "user_id_to_device",
];

/// SQL statements, recognised by their upper-case keywords as the store writes them.
fn looks_like_sql(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let has = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    let select = words.contains(&"SELECT") && words.contains(&"FROM");
    let update = words.windows(3).any(|w| w[0] == "UPDATE" && w[2] == "SET");
    select
        || update
        || has("INSERT", "INTO")
        || has("DELETE", "FROM")
        || has("CREATE", "TABLE")
        || has("CREATE", "INDEX")
        || has("ALTER", "TABLE")
        || has("DROP", "TABLE")
}

/// Which rules apply to which crates.
fn applies(rule: Rule, krate: &str) -> bool {
    match rule {
        Rule::SqlOutsideStore => krate != "store" && krate != "test-support",
        Rule::HttpOutsideApi | Rule::WireJsonOutsideApi => {
            matches!(krate, "core" | "config" | "store" | "service")
        }
        Rule::Global | Rule::Unsafe => true,
        Rule::Unwrap => matches!(krate, "core" | "store" | "service" | "api" | "federation"),
        Rule::StoreExposed => matches!(krate, "service" | "store"),
    }
}

struct Checker<'a> {
    krate: &'a str,
    path: &'a Path,
    findings: Vec<Finding>,
    /// The type of the `impl` block being visited.
    impl_of: String,
}

impl Checker<'_> {
    fn report(&mut self, rule: Rule, span: proc_macro2::Span, what: impl Into<String>) {
        if applies(rule, self.krate) {
            self.findings.push(Finding {
                file: self.path.to_path_buf(),
                line: span.start().line,
                rule,
                what: what.into(),
            });
        }
    }

    fn check_text(&mut self, text: &str, span: proc_macro2::Span) {
        if WIRE_KEYS.contains(&text) {
            self.report(Rule::WireJsonOutsideApi, span, format!("the response key \"{text}\""));
        }
        if looks_like_sql(text) {
            let head: String = text.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            self.report(Rule::SqlOutsideStore, span, format!("SQL string \"{head} ...\""));
        }
    }

    /// Macro bodies are not parsed by syn: walk their tokens for strings, `.unwrap()` and names.
    fn check_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Group(group) => self.check_tokens(group.stream()),
                TokenTree::Literal(literal) => {
                    if let Ok(syn::Lit::Str(s)) = syn::parse_str::<syn::Lit>(&literal.to_string()) {
                        let value = s.value();
                        self.check_text(&value, literal.span());
                    }
                }
                TokenTree::Ident(ident) => {
                    let after_dot =
                        i > 0 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '.');
                    let called = matches!(trees.get(i + 1), Some(TokenTree::Group(_)));
                    if after_dot && called && (ident == "unwrap" || ident == "expect") {
                        self.report(Rule::Unwrap, ident.span(), format!(".{ident}() in a macro"));
                    }
                    self.check_ident(ident);
                }
                TokenTree::Punct(_) => {}
            }
        }
    }

    fn check_ident(&mut self, ident: &proc_macro2::Ident) {
        match ident.to_string().as_str() {
            "OnceLock" | "LazyLock" | "OnceCell" | "Lazy" | "lazy_static" | "thread_local" => {
                self.report(Rule::Global, ident.span(), format!("`{ident}`"))
            }
            "StatusCode" => self.report(Rule::HttpOutsideApi, ident.span(), "`StatusCode`"),
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for Checker<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        if is_test_only(item_attrs(item)) {
            return;
        }
        match item {
            Item::Static(s) => self.report(Rule::Global, s.static_token.span, format!("static {}", s.ident)),
            Item::Fn(f) if f.sig.unsafety.is_some() => {
                self.report(Rule::Unsafe, f.sig.ident.span(), "unsafe fn")
            }
            Item::Impl(i) if i.unsafety.is_some() => {
                self.report(Rule::Unsafe, i.impl_token.span, "unsafe impl")
            }
            Item::Struct(s) => {
                for field in &s.fields {
                    let public = matches!(field.vis, Visibility::Public(_));
                    let ty = quote_tokens(&field.ty);
                    if public && (ty.split(|c: char| !c.is_alphanumeric()).any(|w| w == "Store" || w == "Db"))
                    {
                        let name = field.ident.as_ref().map(|i| i.to_string()).unwrap_or_default();
                        self.report(
                            Rule::StoreExposed,
                            s.ident.span(),
                            format!("pub field {}.{name}: {ty}", s.ident),
                        );
                    }
                }
            }
            _ => {}
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            return;
        }
        let returns = match &f.sig.output {
            syn::ReturnType::Type(_, ty) => quote_tokens(ty),
            syn::ReturnType::Default => String::new(),
        };
        let public = matches!(f.vis, Visibility::Public(_));
        if public
            && self.krate == "store"
            && self.impl_of == "Store"
            && returns.split(|c: char| !c.is_alphanumeric()).any(|w| w == "Db")
        {
            self.report(
                Rule::StoreExposed,
                f.sig.ident.span(),
                format!("pub fn {} returns the raw database", f.sig.ident),
            );
        }
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let outer = std::mem::replace(&mut self.impl_of, quote_tokens(&i.self_ty));
        syn::visit::visit_item_impl(self, i);
        self.impl_of = outer;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_trait_item_fn(self, f);
        }
    }

    fn visit_expr_unsafe(&mut self, e: &'ast syn::ExprUnsafe) {
        self.report(Rule::Unsafe, e.unsafe_token.span, "unsafe block");
        syn::visit::visit_expr_unsafe(self, e);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let name = call.method.to_string();
        if (name == "unwrap" && call.args.is_empty()) || (name == "expect" && call.args.len() == 1) {
            self.report(Rule::Unwrap, call.method.span(), format!(".{name}()"));
        }
        if name == "with_status" {
            self.report(Rule::HttpOutsideApi, call.method.span(), ".with_status()");
        }
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
        self.check_text(&lit.value(), lit.span());
    }

    fn visit_ident(&mut self, ident: &'ast proc_macro2::Ident) {
        self.check_ident(ident);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let name = mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        self.check_tokens(mac.tokens.clone());
        if matches!(name.as_str(), "lazy_static" | "thread_local") {
            self.report(Rule::Global, mac.path.segments[0].ident.span(), format!("{name}!"));
        }
        syn::visit::visit_macro(self, mac);
    }
}

fn quote_tokens(ty: &syn::Type) -> String {
    use quote::ToTokens;
    ty.to_token_stream().to_string()
}

/// Runs the checker over every source file and keeps the findings of `rules`, minus the
/// `allowed` (file suffix, rule, text of the finding) exceptions.
fn findings(rules: &[Rule], allowed: &[(&str, Rule, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = vec![false; allowed.len()];
    for source in sources() {
        let mut checker = Checker {
            krate: &source.krate,
            path: &source.path,
            findings: Vec::new(),
            impl_of: String::new(),
        };
        checker.visit_file(&source.file);
        for finding in checker.findings {
            let path = finding.file.to_string_lossy().replace('\\', "/");
            let exempt = allowed.iter().position(|(suffix, rule, what)| {
                *rule == finding.rule && path.ends_with(suffix) && finding.what.contains(what)
            });
            if let Some(index) = exempt {
                used[index] = true;
            }
            let exempt = exempt.is_some();
            if rules.contains(&finding.rule) && !exempt {
                out.push(finding.to_string());
            }
        }
    }
    for (exempt, used) in allowed.iter().zip(used) {
        assert!(used, "stale exception {exempt:?}: nothing matches it any more, remove it");
    }
    out
}

fn assert_clean(rule_name: &str, findings: Vec<String>) {
    assert!(findings.is_empty(), "{rule_name}: {} violation(s):\n{}", findings.len(), findings.join("\n"));
}

#[test]
fn sql_is_written_only_in_the_store() {
    assert_clean("SQL outside store", findings(&[Rule::SqlOutsideStore], &[]));
}

#[test]
fn http_statuses_and_wire_json_stay_in_api() {
    let allowed = [
        // A bundled `m.reference` aggregation (`{"chunk": [...]}`) is part of an event's
        // `unsigned`, which the service builds with the event in its client format.
        ("service/src/rooms/relations.rs", Rule::WireJsonOutsideApi, "\"chunk\""),
        // An appservice transaction (`PUT /_matrix/app/v1/transactions`) is an outbound
        // request the service sends, like a push gateway's body: its `ephemeral` list is the
        // application-service API's, not a client response.
        ("service/src/appservice.rs", Rule::WireJsonOutsideApi, "\"ephemeral\""),
    ];
    assert_clean("HTTP outside api", findings(&[Rule::HttpOutsideApi, Rule::WireJsonOutsideApi], &allowed));
}

#[test]
fn no_globals_and_no_unsafe() {
    assert_clean("globals / unsafe", findings(&[Rule::Global, Rule::Unsafe], &[]));
}

#[test]
fn request_paths_do_not_unwrap() {
    assert_clean("unwrap on request paths", findings(&[Rule::Unwrap], &[]));
}

#[test]
fn the_store_is_not_exposed() {
    assert_clean("store exposed", findings(&[Rule::StoreExposed], &[]));
}

/// A crate's `Cargo.toml`.
fn manifest(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml").parse().expect("valid Cargo.toml")
}

/// The `[dependencies]` (not dev-dependencies) of a crate's manifest.
fn dependencies(dir: &Path) -> BTreeSet<String> {
    manifest(dir)
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn crates_depend_only_downwards_and_http_stays_out_of_the_core() {
    // Each layer and the workspace crates it may use (ARCHITECTURE.md's diagram).
    let layers: &[(&str, &[&str])] = &[
        ("core", &[]),
        ("config", &[]),
        ("store", &["myelin-core", "myelin-config"]),
        ("federation", &["myelin-core", "myelin-config", "myelin-store"]),
        ("service", &["myelin-core", "myelin-config", "myelin-store", "myelin-federation"]),
        ("api", &["myelin-core", "myelin-config", "myelin-service"]),
    ];
    let http = ["axum", "hyper", "hyper-util", "http", "http-body-util", "tower", "tower-http"];
    // The federation crate is an HTTP *client* (hyper's pooled client with its own connector);
    // the server side of the stack stays out of it.
    let client_stack = ["hyper", "hyper-util", "http", "http-body-util", "tower"];
    let crates = crates();
    let mut problems = Vec::new();
    for (krate, allowed) in layers {
        let deps = dependencies(&crates[*krate]);
        for dep in deps.iter().filter(|d| d.starts_with("myelin-")) {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!("{krate} depends on {dep}"));
            }
        }
        if *krate != "api" {
            let allowed_http: &[&str] = if *krate == "federation" { &client_stack } else { &[] };
            for dep in
                deps.iter().filter(|d| http.contains(&d.as_str()) && !allowed_http.contains(&d.as_str()))
            {
                problems.push(format!("{krate} depends on the HTTP server stack ({dep})"));
            }
        }
    }
    assert!(problems.is_empty(), "layering: {problems:#?}");
}

/// Whether Rust source `text` uses the crate `name` (as `name::...`, `use name` or
/// `extern crate name`), the way rustc would need it.
fn uses_crate(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = &text[at + name.len()..];
        let starts_word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let as_path = after.starts_with("::");
        let as_use = text[..at].ends_with("use ") || text[..at].ends_with("extern crate ");
        starts_word
            && (as_path || (as_use && after.starts_with(|c: char| !(c.is_alphanumeric() || c == '_'))))
    })
}

/// Every dependency a crate declares is used by its sources: an unused one costs build time
/// and widens the supply chain. (What cargo-machete checks, without a tool to install in CI.)
#[test]
fn every_declared_dependency_is_used() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let manifest = manifest(&dir);
        let text: String = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_entry(|e| e.file_name() != "target")
            .map(|e| e.expect("walk crate").into_path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| std::fs::read_to_string(p).expect("read source"))
            .collect::<Vec<_>>()
            .join("\n");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else { continue };
            for dep in deps.keys() {
                if !uses_crate(&text, &dep.replace('-', "_")) {
                    problems.push(format!("crates/{name}: [{section}] {dep} is never used"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(uses_crate("use serde::Serialize;", "serde") && uses_crate("#[tokio::test]", "tokio"));
    assert!(!uses_crate("let serde_json = 1; // serde", "serde") && !uses_crate("my_tokio::x", "tokio"));
}

#[test]
fn every_crate_is_on_the_architecture_map_and_uses_the_workspace_lints() {
    let map = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let manifest = manifest(&dir);
        let package = manifest["package"]["name"].as_str().expect("package name").to_owned();
        if !map.contains(&format!("`crates/{name}`")) || !map.contains(&format!("`{package}`")) {
            problems
                .push(format!("crates/{name} ({package}) is not described in ARCHITECTURE.md's code map"));
        }
        let lints = manifest.get("lints").and_then(|l| l.get("workspace")).and_then(|w| w.as_bool());
        if lints != Some(true) {
            problems.push(format!(
                "crates/{name} does not inherit the workspace lints (`[lints] workspace = true`)"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The checker itself: each rule fires on a sample and stays quiet on test code.
#[test]
fn the_checker_finds_what_it_looks_for() {
    let sample = r#"
        static COUNTER: u32 = 0;
        fn f(x: Option<u32>) -> u32 {
            let _q = "SELECT a FROM b WHERE c = $1";
            let _s = http::StatusCode::OK;
            let _j = serde_json::json!({"next_batch": "s1", "body": "hi"});
            tracing::info!("{}", x.expect("x"));
            unsafe { std::hint::unreachable_unchecked() }
        }
        pub struct Services { pub store: Store }
        #[cfg(test)]
        mod tests { fn g() { Some(1).unwrap(); let _ = "DELETE FROM t"; } }
    "#;
    let file = syn::parse_file(sample).expect("sample parses");
    let mut checker = Checker {
        krate: "service",
        path: Path::new("sample.rs"),
        findings: Vec::new(),
        impl_of: String::new(),
    };
    checker.visit_file(&file);
    let mut rules: Vec<Rule> = checker.findings.iter().map(|f| f.rule).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            Rule::SqlOutsideStore,
            Rule::HttpOutsideApi,
            Rule::WireJsonOutsideApi,
            Rule::Global,
            Rule::Unsafe,
            Rule::Unwrap,
            Rule::StoreExposed,
        ],
        "findings: {:#?}",
        checker.findings.iter().map(|f| f.to_string()).collect::<Vec<_>>()
    );
    assert!(looks_like_sql("UPDATE users SET admin = 1"));
    assert!(!looks_like_sql("Select a room from the list"));
}
