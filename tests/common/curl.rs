//! The README's curl sessions: each `$ curl -s [-X METHOD] URL [-H 'Name: value']...`
//! line and the body shown on the line after it, by the `## ` section it is in.

/// One exchange.
#[derive(Debug)]
pub struct Exchange {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub expected: String,
}

pub fn exchanges(readme: &str, section: &str) -> Vec<Exchange> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut current = String::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            current = h.trim().to_owned();
        }
        let Some(cmd) = line.strip_prefix("$ curl -s ") else {
            continue;
        };
        let mut rest = cmd.split("  #").next().unwrap().trim();
        let mut method = "GET".to_owned();
        if let Some(r) = rest.strip_prefix("-X ") {
            let (m, r) = r.split_once(' ').expect("a method then the URL");
            method = m.to_owned();
            rest = r.trim();
        }
        let (url, mut rest) = match rest.strip_prefix('\'') {
            Some(r) => {
                let end = r.find('\'').expect("closing quote of the URL");
                (&r[..end], &r[end + 1..])
            }
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        let (host, path) = url.split_at(url.find('/').expect("url with a path"));
        let mut headers = Vec::new();
        while let Some(r) = rest.trim().strip_prefix("-H '") {
            let end = r.find('\'').expect("closing quote");
            let (name, value) = r[..end].split_once(": ").expect("Name: value");
            headers.push((name.to_owned(), value.to_owned()));
            rest = &r[end + 1..];
        }
        assert!(rest.trim().is_empty(), "unparsed curl arguments: {rest:?}");
        if current == section {
            out.push(Exchange {
                method,
                host: host.to_owned(),
                path: path.to_owned(),
                headers,
                expected: lines[i + 1].to_owned(),
            });
        }
    }
    out
}

impl Exchange {
    /// The body the exchange expects: the line shown, and the newline that ends a JSON
    /// body (so a shell prompt starts on its own line, as the README shows it).
    pub fn body(&self) -> String {
        if self.expected.starts_with('{') {
            format!("{}\n", self.expected)
        } else {
            self.expected.clone()
        }
    }
}

/// The request an exchange sends.
pub fn request(ex: &Exchange) -> actix_web::test::TestRequest {
    let method = actix_web::http::Method::from_bytes(ex.method.as_bytes()).expect("a method");
    let mut req = actix_web::test::TestRequest::default()
        .method(method)
        .uri(&ex.path)
        .insert_header(("host", ex.host.clone()));
    for (name, value) in &ex.headers {
        req = req.insert_header((name.as_str(), value.as_str()));
    }
    req
}
