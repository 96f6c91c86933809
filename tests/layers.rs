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
