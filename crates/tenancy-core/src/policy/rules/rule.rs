//! The rules as written: names, route rules and capability rules, parsed and matched.

use super::*;

/// A tier, tenant or feature name: non-empty printable ASCII, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct Name(pub(super) Box<str>);

impl Name {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_NAME_LEN || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "invalid name {raw:?}: 1 to {MAX_NAME_LEN} printable ASCII characters"
            ));
        }
        Ok(Self(raw.into()))
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// A route rule: `[METHOD ]/seg/*/**`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RouteRule {
    pub(super) raw: Box<str>,
    pub(super) method: Option<Method>,
    pub(super) segments: Box<[Segment]>,
    /// Ends in `**`.
    pub(super) rest: bool,
    /// Where the path starts in `raw` (after `METHOD `, if any).
    pub(super) path_at: usize,
    /// The rule has no wildcard: its path is matched by one comparison.
    pub(super) literal: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Segment {
    Any,
    Literal(Box<str>),
}

pub(super) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl RouteRule {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid route rule {raw:?}: {why}"));
        let (method, path) = match raw.split_once(' ') {
            Some((m, p)) => (Some(m), p),
            None => (None, raw),
        };
        let method = match method {
            None | Some("*") => None,
            // A named method that did not parse must never widen to "any method".
            Some(m) => match METHODS
                .contains(&m)
                .then(|| Method::from_bytes(m.as_bytes()))
            {
                Some(Ok(m)) => Some(m),
                _ => {
                    return bad(&format!(
                        "unknown method {m:?} (use one of {} or *)",
                        METHODS.join(", ")
                    ))
                }
            },
        };
        if !path.starts_with('/') {
            return bad("the path must start with '/'");
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("the path must be printable ASCII without spaces");
        }
        let mut parts: Vec<&str> = path[1..].split('/').collect();
        let rest = parts.last() == Some(&"**");
        if rest {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            segments.push(match part {
                "*" => Segment::Any,
                "**" => return bad("'**' may only end a path"),
                p if p.contains('*') => return bad("'*' must be a whole segment"),
                p => Segment::Literal(p.into()),
            });
        }
        let wild = rest || segments.iter().any(|s| matches!(s, Segment::Any));
        Ok(Self {
            raw: raw.into(),
            method,
            segments: segments.into(),
            rest,
            path_at: raw.len() - path.len(),
            literal: !wild,
        })
    }

    /// Whether `method` and the route pattern (or path) `target` match; allocates
    /// nothing.
    #[inline]
    pub(super) fn matches(&self, method: &Method, target: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.literal {
            // Segment by segment, literal segments match exactly when the whole
            // strings are equal.
            return self.raw[self.path_at..] == *target;
        }
        let Some(target) = target.strip_prefix('/') else {
            return false;
        };
        let mut parts = target.split('/');
        for segment in &*self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(p)) if !p.is_empty() => {}
                (Segment::Literal(l), Some(p)) if **l == *p => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

impl RouteRule {
    /// Whether `method` and a concrete `path` (as actix routes it) match. A segment
    /// written as a route parameter (`{id}`, `v{n}`) matches any one non-empty
    /// segment, and a last one with a pattern of its own (`{rest:.+}`, which may span
    /// segments) matches the rest: whatever a rule matches as a route pattern, it matches on every path
    /// that pattern routes. Allocates nothing.
    pub(super) fn matches_path(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.literal && !self.raw[self.path_at..].contains('{') {
            return self.raw[self.path_at..] == *path;
        }
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = path.split('/');
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(p) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Any if !p.is_empty() => {}
                Segment::Literal(l) if l.contains('{') => {
                    if i == last && l.contains(':') {
                        return true;
                    }
                    if p.is_empty() {
                        return false;
                    }
                }
                Segment::Literal(l) if **l == *p => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

impl TryFrom<String> for RouteRule {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// A capability rule: `kind:name`, `kind:*` or `*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct CapabilityRule {
    pub(super) raw: Box<str>,
    pub(super) matching: Matching,
}

/// How a [`CapabilityRule`] matches, as read from its text.
#[derive(Debug, Clone, Copy)]
pub(super) enum Matching {
    /// `*`: everything.
    Any,
    /// `kind:*`: a name of the kind; the length of `kind:`.
    Kind(usize),
    /// `kind:name`: exactly the rule's text.
    Exact,
}

impl CapabilityRule {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        if raw == "*" {
            return Ok(Self {
                raw: raw.into(),
                matching: Matching::Any,
            });
        }
        let bad = || {
            Err(format!(
                "invalid capability {raw:?}: write kind:name (e.g. model:gpt-4o), kind:* or *"
            ))
        };
        let Some((kind, name)) = raw.split_once(':') else {
            return bad();
        };
        let kind_ok = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let name_ok = !name.is_empty()
            && raw.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_graphic())
            && (name == "*" || !name.contains('*'));
        if !kind_ok || !name_ok {
            return bad();
        }
        Ok(Self {
            raw: raw.into(),
            matching: if name == "*" {
                Matching::Kind(kind.len() + 1)
            } else {
                Matching::Exact
            },
        })
    }

    pub(super) fn matches(&self, capability: &str) -> bool {
        match self.matching {
            Matching::Exact => *self.raw == *capability,
            Matching::Kind(len) => {
                capability.len() > len && capability.starts_with(&self.raw[..len])
            }
            Matching::Any => true,
        }
    }
}

impl TryFrom<String> for CapabilityRule {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}
