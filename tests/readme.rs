//! The README's curl session, replayed against the quickstart's app: every `$ curl`
//! line must answer exactly the body the README shows under it.

use actix_web::{test, App};

#[allow(dead_code, unreachable_pub)]
mod quickstart {
    include!("../examples/quickstart.rs");
}

/// One `$ curl -s HOST:PORT/PATH [-H 'Name: value']...` line and the body shown after it.
#[derive(Debug)]
struct Exchange {
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    expected: String,
}

fn exchanges(readme: &str) -> Vec<Exchange> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(cmd) = line.strip_prefix("$ curl -s ") else {
            continue;
        };
        let cmd = cmd.split("  #").next().unwrap().trim();
        let (url, mut rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
        let (host, path) = url.split_at(url.find('/').expect("url with a path"));
        let mut headers = Vec::new();
        while let Some(r) = rest.trim().strip_prefix("-H '") {
            let end = r.find('\'').expect("closing quote");
            let (name, value) = r[..end].split_once(": ").expect("Name: value");
            headers.push((name.to_owned(), value.to_owned()));
            rest = &r[end + 1..];
        }
        assert!(rest.trim().is_empty(), "unparsed curl arguments: {rest:?}");
        out.push(Exchange {
            host: host.to_owned(),
            path: path.to_owned(),
            headers,
            expected: lines[i + 1].to_owned(),
        });
    }
    out
}

#[actix_web::test]
async fn readme_curl_session_answers_as_shown() {
    let readme = include_str!("../README.md");
    let session = exchanges(readme);
    assert!(session.len() >= 8, "the README's curl session went missing");

    let app = test::init_service(
        App::new()
            .wrap(quickstart::resolver().unwrap())
            .configure(quickstart::routes),
    )
    .await;
    for ex in session {
        let mut req = test::TestRequest::get()
            .uri(&ex.path)
            .insert_header(("host", ex.host.clone()));
        for (name, value) in &ex.headers {
            req = req.insert_header((name.as_str(), value.as_str()));
        }
        let body = test::call_and_read_body(&app, req.to_request()).await;
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            ex.expected,
            "curl {}{} {:?}",
            ex.host,
            ex.path,
            ex.headers
        );
    }
}
