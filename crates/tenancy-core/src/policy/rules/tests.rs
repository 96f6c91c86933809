use super::*;

#[test]
fn route_rules_match_by_segment() {
    let r = RouteRule::parse("GET /items/*").unwrap();
    assert!(r.matches(&Method::GET, "/items/{id}"));
    assert!(r.matches(&Method::GET, "/items/42"));
    assert!(!r.matches(&Method::POST, "/items/42"));
    assert!(!r.matches(&Method::GET, "/items"));
    assert!(!r.matches(&Method::GET, "/items/"));
    assert!(!r.matches(&Method::GET, "/items/42/parts"));
    assert!(!r.matches(&Method::GET, "items/42"));

    let r = RouteRule::parse("/admin/**").unwrap();
    for p in ["/admin", "/admin/", "/admin/users/{id}"] {
        assert!(r.matches(&Method::DELETE, p), "{p}");
    }
    assert!(!r.matches(&Method::GET, "/administrator"));

    let all = RouteRule::parse("* /**").unwrap();
    assert!(all.matches(&Method::PATCH, "/"));
    let root = RouteRule::parse("/").unwrap();
    assert!(root.matches(&Method::GET, "/"));
    assert!(!root.matches(&Method::GET, "/x"));
}

#[test]
fn rules_match_concrete_paths_with_parameters_as_segments() {
    let r = RouteRule::parse("GET /items/{id}").unwrap();
    for p in ["/items/7", "/items/export", "/items/{id}"] {
        assert!(r.matches_path(&Method::GET, p), "{p}");
    }
    for p in ["/items", "/items/", "/items/7/parts", "items/7"] {
        assert!(!r.matches_path(&Method::GET, p), "{p}");
    }
    assert!(!r.matches_path(&Method::POST, "/items/7"));
    let tail = RouteRule::parse("/files/{rest:.+}").unwrap();
    assert!(tail.matches_path(&Method::GET, "/files/a/b/c"));
    assert!(!tail.matches_path(&Method::GET, "/other/a"));
    let literal = RouteRule::parse("POST /items/export").unwrap();
    assert!(literal.matches_path(&Method::POST, "/items/export"));
    assert!(!literal.matches_path(&Method::POST, "/items/exports"));
    let wild = RouteRule::parse("* /items/*").unwrap();
    assert!(wild.matches_path(&Method::PUT, "/items/export"));
    assert!(!wild.matches_path(&Method::PUT, "/items//"));
}

#[test]
fn literal_rules_match_exactly_as_the_segment_walk_does() {
    let targets = [
        "",
        "/",
        "//",
        "/a",
        "/a/",
        "/a//",
        "/a/b",
        "/a/b/",
        "/ab",
        "/a/bc",
        "a/b",
        "/A/b",
        "/a/b/c",
        "/items/{id}",
    ];
    for raw in ["/", "/a", "/a/", "/a/b", "/a//", "GET /a/b", "/items/{id}"] {
        let fast = RouteRule::parse(raw).unwrap();
        assert!(fast.literal, "{raw}");
        let walk = RouteRule {
            literal: false,
            ..fast.clone()
        };
        for t in targets {
            for m in [Method::GET, Method::POST] {
                assert_eq!(fast.matches(&m, t), walk.matches(&m, t), "{raw} vs {t}");
            }
        }
    }
    for wild in ["/a/*", "/a/**", "* /**"] {
        assert!(!RouteRule::parse(wild).unwrap().literal, "{wild}");
    }
}

#[test]
fn bad_route_rules_are_rejected_with_the_reason() {
    for (raw, why) in [
        ("GETT /x", "unknown method"),
        ("get /x", "unknown method"),
        ("GET x", "start with '/'"),
        ("GET /a/**/b", "'**' may only end"),
        ("GET /a*", "whole segment"),
        ("GET /a b", "printable"),
        ("", "start with '/'"),
    ] {
        let err = RouteRule::parse(raw).unwrap_err();
        assert!(err.contains(why), "{raw:?}: {err}");
    }
}

#[test]
fn tiers_are_found_by_name_among_few_and_many() {
    for n in [0, 1, Tiers::FEW, Tiers::FEW + 1, 40] {
        let mut set = PolicySet::new();
        for i in 0..n {
            set = set.tier(
                &format!("tier{i}"),
                Rules::new().allow(&format!("GET /t{i}")),
            );
        }
        let compiled = Compiled::compile(set, 1).unwrap();
        assert_eq!(
            matches!(compiled.tiers, Tiers::Many(_)),
            n > Tiers::FEW,
            "{n} tiers"
        );
        for i in 0..n {
            let level = compiled.tiers.get(&format!("tier{i}")).unwrap();
            assert!(level.route(&Method::GET, &format!("/t{i}")).is_some());
            assert!(level.route(&Method::GET, &format!("/t{}", i + 1)).is_none());
        }
        for absent in ["", "tier", "tier00", "Tier0", "tier0 "] {
            assert!(compiled.tiers.get(absent).is_none(), "{absent:?}");
        }
    }
}

#[test]
fn capability_rules() {
    let exact = CapabilityRule::parse("model:gpt-4o").unwrap();
    assert!(exact.matches("model:gpt-4o"));
    assert!(!exact.matches("model:gpt-4o-mini"));
    let kind = CapabilityRule::parse("tool:*").unwrap();
    assert!(kind.matches("tool:web_search"));
    assert!(!kind.matches("tool:"));
    assert!(!kind.matches("toolbox:x"));
    assert!(!kind.matches("model:x"));
    assert!(CapabilityRule::parse("*").unwrap().matches("anything:x"));
    for bad in [
        "model",
        ":x",
        "model:",
        "Model:x",
        "model:gpt*",
        "model:a b",
        "m:*x",
    ] {
        assert!(CapabilityRule::parse(bad).is_err(), "{bad}");
    }
}
