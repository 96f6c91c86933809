//! Every way a client might spell one path to dodge a check written against it.

/// `path` with each byte after the leading slash percent-encoded in turn (lower- and
/// upper-case hex), every byte but the slashes encoded, every byte after the first
/// encoded, and the shapes that normalisers
/// (but not actix's router) fold back into `path`: doubled and trailing slashes, dot
/// segments, case, and encoded slashes.
pub fn spellings(path: &str) -> Vec<String> {
    assert!(path.starts_with('/') && path.len() > 1 && path.is_ascii());
    let mut out = Vec::new();
    for (i, b) in path.bytes().enumerate().skip(1) {
        let (head, tail) = (&path[..i], &path[i + 1..]);
        out.push(format!("{head}%{b:02x}{tail}"));
        out.push(format!("{head}%{b:02X}{tail}"));
    }
    // The leading slash stays: a request target must start with one.
    let encode = |keep_slashes: bool| -> String {
        let rest: String = path[1..]
            .bytes()
            .map(|b| match b {
                b'/' if keep_slashes => "/".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect();
        format!("/{rest}")
    };
    out.push(encode(true));
    out.push(encode(false));
    let inner = &path[1..];
    let (first, rest) = inner.split_once('/').unwrap_or((inner, ""));
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    };
    out.extend([
        format!("/{path}"),
        format!("{path}/"),
        format!("{path}//"),
        format!("/{first}/{rest}"),
        format!("/./{inner}"),
        format!("/{first}/.{rest}"),
        format!("/{first}/x/..{rest}"),
        format!("{path}/."),
        format!("{path}/%2e"),
        format!("/%2e/{inner}"),
        format!("{path}%2F"),
        format!("/{first}%2F{}", rest.trim_start_matches('/')),
        format!("/{first}%2f{}", rest.trim_start_matches('/')),
        path.to_ascii_uppercase(),
        format!("{path}%00"),
        format!("{path}%20"),
        format!("{path};x"),
        format!("{path}%3Bx"),
    ]);
    out.retain(|s| s != path);
    out.sort();
    out.dedup();
    out
}

/// Whether actix routes `spelling` as `path`: percent-decoding gives `path`, and no
/// slash is encoded (actix keeps `%2F` as it is).
pub fn is_the_route(spelling: &str, path: &str) -> bool {
    if spelling.to_ascii_lowercase().contains("%2f") {
        return false;
    }
    let bytes = spelling.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    decoded == path.as_bytes()
}
