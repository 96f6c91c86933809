//! The cost estimators on arbitrary query strings and header values: never a panic,
//! and an accepted cost is never above the estimator's maximum.
#![no_main]

use actix_tenancy::quota::{CostEstimator, CostRequest, HeaderCost, QueryCost};
use actix_web::{http::header::HeaderValue, test};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, header) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let query: String = query
        .iter()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'=' | b'&' | b'%' | b'+' | b'-' => {
                char::from(*b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    let mut req = test::TestRequest::get().uri(&format!("/x?{query}"));
    if let Ok(v) = HeaderValue::from_bytes(header) {
        req = req.insert_header(("x-token-count", v));
    }
    let req = req.to_srv_request();
    let cost = CostRequest::new(&req);
    if let Ok(n) = QueryCost::new("max_tokens").max(50_000).estimate(&cost) {
        assert!(n <= 50_000);
    }
    if let Ok(n) = HeaderCost::new("x-token-count")
        .unwrap()
        .max(1_000)
        .estimate(&cost)
    {
        assert!(n <= 1_000);
    }
});
