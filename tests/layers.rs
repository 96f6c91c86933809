//! The crate's layers, read from its own sources: the core imports no other module of
//! the crate, the pipeline only the core, and no stage another stage. Only
//! `tenancy.rs`, the composition root, names every stage.
//!
//! An import is any `crate::NAME` path (or a name in a `crate::{..}` group) in a
//! module's code, outside comments and its `#[cfg(test)] mod tests` (inline, or a
//! `tests.rs` of its own).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each top-level module, and the modules it may import.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("pipeline", &["core"]),
    ("extract", &["core"]),
    // A helper beside the stages: its incoming side is a resolver source.
    ("baggage", &["core", "resolve"]),
    // The test kit runs against the registry, quota and session traits.
    ("testing", &["core", "registry", "quota", "session"]),
    ("guard", &["core"]),
    // The registry is the resolver's backend, beneath it: the core only.
    ("registry", &["core"]),
    ("resolve", &["core", "pipeline", "registry"]),
    ("policy", &["core", "pipeline"]),
    ("quota", &["core", "pipeline"]),
    // Per-tenant identity providers may be bound in registry records.
    ("session", &["core", "pipeline", "registry"]),
    // Tenant data: read from what resolution left, like the extractors.
    ("storage", &["core"]),
    (
        "tenancy",
        &["core", "pipeline", "resolve", "policy", "quota", "session"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: comments and the trailing test module removed.
fn code(text: &str) -> String {
    let text = match text.find("\n#[cfg(test)]\nmod tests") {
        Some(cut) => &text[..cut],
        None => text,
    };
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The crate modules `code` names: `crate::x` and every top-level name of `crate::{..}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident_at(group[start..j].trim_start()).to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident_at(group[start..j].trim_start()).to_owned());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest).to_owned());
        }
    }
    names
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut seen = BTreeMap::<String, BTreeSet<String>>::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        if module == "lib" {
            continue; // the crate root re-exports; it is no layer
        }
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a module's unit tests, in a file of their own
        }
        assert!(
            allowed.contains_key(module),
            "src/{module} is in no layer: add it to LAYERS"
        );
        let text = fs::read_to_string(&file).unwrap();
        seen.entry(module.to_owned())
            .or_default()
            .extend(imports(&code(&text)));
    }
    let modules: BTreeSet<&str> = allowed.keys().copied().collect();
    for (module, names) in &seen {
        for name in names {
            if name == module || !modules.contains(name.as_str()) {
                continue;
            }
            assert!(
                allowed[module.as_str()].contains(&name.as_str()),
                "src/{module} imports crate::{name}, which its layer may not"
            );
        }
    }
    assert!(seen["core"]
        .iter()
        .all(|n| !modules.contains(n.as_str()) || n == "core"));
}

#[test]
fn the_reader_finds_imports_in_paths_and_groups() {
    let names = imports(&code(
        "use crate::{core::{a, b}, pipeline::Step};\n\
         // use crate::quota::X;\n\
         fn f() { crate::resolve::g(); }\n\
         #[cfg(test)]\nmod tests { use crate::session::Y; }",
    ));
    let names: Vec<_> = names.iter().map(String::as_str).collect();
    assert_eq!(names, ["core", "pipeline", "resolve"]);
}

/// The stages' own types and modules, which the core and the pipeline never name:
/// they know stages only through the pipeline's stage protocol.
const STAGE_NAMES: &[&str] = &[
    "TenantResolver",
    "TenantPolicy",
    "TenantQuota",
    "TenantAuth",
    "JwtAuth",
    "SessionManager",
    "RulePolicy",
    "LocalQuota",
    "RedisQuota",
    "InMemoryRegistry",
    "CachedRegistry",
    "PostgresRegistry",
    "TenantIssuers",
    // A list of the stages (once `observe::Stage`'s variants) or of their settings'
    // mistakes (once variants of `ConfigError`): each stage names itself and its
    // settings. (What resolution leaves, `core::Resolution`, is the core's own.)
    "Authentication",
    "Policy",
    "Quota",
    "InvalidCapability",
    "InvalidPlan",
    "InvalidIssuerPattern",
    "StalePolicyVersion",
    "AuthWithoutClaim",
    // Modules, as the start of a path.
    "resolve::",
    "policy::",
    "quota::",
    "session::",
    "registry::",
    "tenancy::",
];

/// The identifiers of Rust `text` outside comments, string and char literals (a
/// message may name what it likes); one that starts a path (`x::`) as `x::`.
fn code_identifiers(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let (mut i, mut ids, mut word) = (0, BTreeSet::new(), String::new());
    let flush = |word: &mut String, ids: &mut BTreeSet<String>, path: bool| {
        if word.starts_with(|c: char| c.is_ascii_alphabetic()) {
            if path {
                word.push_str("::");
            }
            ids.insert(std::mem::take(word));
        }
        word.clear();
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            // `r"..."`, `r#"..."#`, `b"..."`, `br"..."`: the prefix is no identifier.
            let raw = word.is_empty() && (c == b'r' || c == b'b');
            if raw {
                let mut j = i + 1;
                if c == b'b' && b.get(j) == Some(&b'r') {
                    j += 1;
                }
                let hashes = b[j..].iter().take_while(|&&h| h == b'#').count();
                if b.get(j + hashes) == Some(&b'"') && (hashes > 0 || b[i..j].contains(&b'r')) {
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    let from = j + hashes + 1;
                    let end = b[from..]
                        .windows(close.len())
                        .position(|w| w == close.as_slice())
                        .map_or(b.len(), |p| from + p + close.len());
                    i = end;
                    continue;
                }
            }
            word.push(c as char);
            i += 1;
            continue;
        }
        flush(&mut word, &mut ids, b[i..].starts_with(b"::"));
        match c {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // A char literal ('x', '\n', '"'); a lifetime ('a) is left to be read on.
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
            _ => i += 1,
        }
    }
    flush(&mut word, &mut ids, false);
    ids
}

/// What a web framework's crates are called: the neutral core names none of them.
const FRAMEWORKS: &[&str] = &[
    "actix",
    "actix_web",
    "actix_http",
    "actix_rt",
    "actix_service",
    "actix_tls",
    "actix_router",
    "axum",
    "axum_core",
    "tower",
    "tower_layer",
    "tower_service",
    "tonic",
    "hyper",
    "http",
    "http_body",
];

/// The crates of `list` that `text`'s code names (`http::` as well as `http`).
fn crates_named(text: &str, list: &[&str]) -> Vec<String> {
    code_identifiers(text)
        .into_iter()
        .filter(|w| list.contains(&w.trim_end_matches("::")))
        .collect()
}

#[test]
fn the_neutral_core_names_no_web_framework_but_in_its_compat_impls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/tenancy-core");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() >= 5, "crates/tenancy-core/src has {files:?}");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let named = crates_named(&text, FRAMEWORKS);
        // Rust lets only the crate that owns a type implement a framework's trait for
        // it: those impls, and nothing else, are in src/compat/, one file a framework.
        let rel = file.strip_prefix(&root).unwrap();
        if let Ok(compat) = rel.strip_prefix("src/compat") {
            let framework = compat.file_stem().unwrap().to_str().unwrap();
            if framework == "mod" {
                continue; // it declares the compat files, one a framework
            }
            // (`http` is a module of every framework too: `actix_web::http::header`.)
            assert!(
                named
                    .iter()
                    .all(|n| n.starts_with(framework) || n == "http::"),
                "{} names {named:?}: a compat file names its own framework only",
                file.display()
            );
            continue;
        }
        // The identity providers' key fetcher (feature `oidc`) is an HTTP client on
        // hyper's client half: a server framework's crates it may not name.
        if rel.starts_with("src/session/oidc") {
            assert!(
                named.iter().all(|n| n.trim_end_matches("::") == "hyper"),
                "{} names {named:?}: the key fetcher is a hyper client, nothing else",
                file.display()
            );
            continue;
        }
        assert!(
            named.is_empty(),
            "{} names {named:?}: the core is framework-neutral (its compat files aside)",
            file.display()
        );
    }
    // A framework is only ever an optional dependency, turned on by a feature named
    // for it and its major version (`actix-web-4`), which only its adapter enables.
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for line in manifest.lines() {
        let name = line.split(['=', ' ', '.']).next().unwrap_or("");
        if !FRAMEWORKS.contains(&name.replace('-', "_").as_str()) {
            continue;
        }
        assert!(
            line.contains("optional = true"),
            "crates/tenancy-core depends on {name} whatever its features: {line}"
        );
        // hyper's client half is the identity providers' key fetcher: turned on by
        // `oidc` alone.
        if name == "hyper" {
            assert!(
                manifest
                    .lines()
                    .filter(|l| l.contains("\"dep:hyper\""))
                    .all(|l| l.trim_start().starts_with("oidc =")),
                "hyper is turned on by another feature than oidc"
            );
            continue;
        }
        // The feature that turns it on is named for a framework and its major version
        // (`actix-web-4`, `axum-core-0_5`), and turns on nothing but that framework's
        // crates.
        let feature = manifest.lines().find(|l| {
            l.contains(&format!("\"dep:{name}\""))
                && l.split('=').next().is_some_and(|f| {
                    let f = f.trim().replace('-', "_");
                    FRAMEWORKS.iter().any(|fw| f.starts_with(fw))
                        && f.ends_with(|c: char| c.is_ascii_digit())
                })
        });
        let feature =
            feature.unwrap_or_else(|| panic!("{name} is turned on by no framework's feature"));
        assert!(
            feature
                .split('"')
                .filter(|w| w.starts_with("dep:"))
                .all(|w| FRAMEWORKS.contains(&w[4..].replace('-', "_").as_str())),
            "{feature}: a framework's feature turns on that framework only"
        );
    }
}

/// Each adapter names its own framework only: actix-tenancy no Tower crate, and
/// tower-tenancy no actix crate. What they share is in the core.
#[test]
fn each_adapter_names_its_own_framework_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tower_side = [
        "axum",
        "axum_core",
        "tower",
        "tower_layer",
        "tower_service",
        "tonic",
    ];
    for (dir, foreign) in [
        (root.join("src"), &tower_side[..]),
        (root.join("crates/tower-tenancy/src"), &FRAMEWORKS[..7]),
    ] {
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        assert!(!files.is_empty(), "{} has no sources", dir.display());
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            let named = crates_named(&text, foreign);
            assert!(named.is_empty(), "{} names {named:?}", file.display());
        }
    }
}

#[test]
fn the_core_and_the_pipeline_name_no_stage_by_module_or_by_type() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for layer in ["core", "pipeline"] {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} has no files");
        for file in files {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap();
            let text = match text.find("\n#[cfg(test)]\nmod tests") {
                Some(cut) => &text[..cut],
                None => &text,
            };
            let named: Vec<String> = code_identifiers(text)
                .into_iter()
                .filter(|w| STAGE_NAMES.contains(&w.as_str()))
                .collect();
            assert!(
                named.is_empty(),
                "{} names {named:?}, which only the stages and the composition root may",
                file.display()
            );
        }
    }
}

#[test]
fn the_stage_name_check_sees_code_and_not_messages_or_comments() {
    let ids = code_identifiers(concat!(
        "let r: TenantResolver = x; // TenantAuth\n",
        "f(\"a \\\"TenantQuota\\\" https://x\", '\"', 'a', b'\\'');\n",
        "/* RulePolicy */ let s = r#\"LocalQuota \"quoted\"\"#; g::<'a, SessionManager>();",
        "crate::quota::Charge; policy.version = 1;",
    ));
    assert!(ids.contains("TenantResolver") && ids.contains("SessionManager"));
    assert!(ids.contains("quota::") && ids.contains("policy") && !ids.contains("policy::"));
    for hidden in [
        "TenantAuth",
        "TenantQuota",
        "RulePolicy",
        "LocalQuota",
        "https",
    ] {
        assert!(!ids.contains(hidden), "{hidden}: {ids:?}");
    }
}
