//! `THREAT_MODEL.md` names, for every threat, the tests that show its mitigation: each
//! one must exist, so the document cannot point at a test that was renamed or removed.

use std::{fs, path::Path};

fn sources(dir: &Path, out: &mut String) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_test_the_threat_model_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = fs::read_to_string(root.join("THREAT_MODEL.md")).unwrap();
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    sources(&root.join("crates"), &mut code); // the workspace's other crates
                                              // Test names: backticked snake_case words of three parts or more.
    let names: Vec<&str> = model
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.split('_').count() >= 3
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect();
    assert!(names.len() >= 60, "only {} test names found", names.len());
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !code.contains(&format!("fn {n}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "THREAT_MODEL.md names tests that do not exist: {missing:?}"
    );
}

#[test]
fn every_file_the_threat_model_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = fs::read_to_string(root.join("THREAT_MODEL.md")).unwrap();
    // Paths: backticked words under src/ or crates/ that end in `.rs`.
    let paths: Vec<&str> = model
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| (w.starts_with("src/") || w.starts_with("crates/")) && w.ends_with(".rs"))
        .collect();
    assert!(paths.len() >= 10, "only {} paths found", paths.len());
    let missing: Vec<_> = paths.iter().filter(|p| !root.join(p).is_file()).collect();
    assert!(
        missing.is_empty(),
        "THREAT_MODEL.md names files that do not exist: {missing:?}"
    );
}
