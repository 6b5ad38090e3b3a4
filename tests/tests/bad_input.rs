//! No route answers 5xx to bad input: every HTTP route of every service,
//! sent malformed, missing, wrong-typed, out-of-range, over-long and
//! oversized input, answers a 4xx with a JSON body
//! `{"error": {"code", "message", "field"?}}` naming the offending field
//! where there is one, and never drops the connection.
//!
//! One system of all six services is shared by every case (starting six
//! processes takes seconds); each case is checked and every failure is
//! listed at the end, so one run shows every broken route at once. Only
//! order has an `ADMIN_TOKEN`, so the admin routes are probed there and are
//! absent (404) everywhere else.

#![allow(clippy::unwrap_used)]

use contracts::Topology;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use system_tests::{TestSystem, order_request, test_stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const JSON: &str = "application/json";
/// The one service with admin routes here, and its token.
const ADMIN_SERVICE: &str = "order";
const ADMIN_TOKEN: &str = "bad-input-admin";

/// What a case expects back.
#[derive(Clone, Copy)]
enum Expect {
    /// This 4xx, with a JSON error body whose `field` is the given one
    /// (`None`: no particular field, e.g. a body that is not JSON at all).
    Error(u16, Option<&'static str>),
    /// A success (positive controls: the route works with good input).
    Ok(u16),
}

struct Probe<'a> {
    system: &'a TestSystem,
    cases: usize,
    failures: Vec<String>,
}

impl<'a> Probe<'a> {
    fn new(system: &'a TestSystem) -> Self {
        Self { system, cases: 0, failures: Vec::new() }
    }

    fn request(&self, method: Method, service: &str, path: &str) -> RequestBuilder {
        self.system.http.request(method, format!("{}{path}", self.system.url(service)))
    }

    /// `POST /orders` with `body` as JSON.
    fn post_json(&self, body: &Value) -> RequestBuilder {
        self.post_raw(JSON, body.to_string())
    }

    /// `POST /orders` with raw bytes and a Content-Type.
    fn post_raw(&self, content_type: &str, body: impl Into<reqwest::Body>) -> RequestBuilder {
        self.request(Method::POST, "order", "/orders").header(CONTENT_TYPE, content_type).body(body)
    }

    /// Sends `request` and checks the answer; returns the body when it was JSON.
    async fn check(&mut self, case: &str, request: RequestBuilder, expect: Expect) -> Option<Value> {
        self.cases += 1;
        let started = Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                self.fail(case, format!("no answer (dropped connection?): {e:?}"));
                return None;
            }
        };
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if status == 405 && !response.headers().contains_key(reqwest::header::ALLOW) {
            self.fail(case, "405 without an Allow header".to_owned());
        }
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => {
                self.fail(case, format!("{status}, body cut off: {e}"));
                return None;
            }
        };
        let shown: String = text.chars().take(300).collect();
        if status >= 500 {
            self.fail(case, format!("answered {status}: {shown}"));
            return None;
        }
        let body: Option<Value> = serde_json::from_str(&text).ok();
        match expect {
            Expect::Ok(expected) => {
                if status != expected {
                    self.fail(case, format!("expected {expected}, got {status}: {shown}"));
                }
            }
            Expect::Error(expected, field) => {
                if status != expected {
                    self.fail(case, format!("expected {expected}, got {status}: {shown}"));
                }
                if !content_type.starts_with(JSON) {
                    self.fail(case, format!("{status} with Content-Type `{content_type}`, not JSON: {shown}"));
                }
                let error = body.as_ref().map(|b| &b["error"]);
                let well_formed = error.is_some_and(|e| {
                    e["code"].as_str().is_some_and(|c| !c.is_empty())
                        && e["message"].as_str().is_some_and(|m| !m.is_empty())
                        && (e.get("field").is_none() || e["field"].is_string())
                });
                if !well_formed {
                    self.fail(case, format!("{status} without an {{\"error\": {{code, message}}}} body: {shown}"));
                } else if let Some(field) = field {
                    let got = &error.unwrap()["field"];
                    if got != field {
                        self.fail(case, format!("{status} names field {got}, expected \"{field}\": {shown}"));
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        if elapsed > Duration::from_secs(5) {
            self.fail(case, format!("took {elapsed:?}"));
        }
        body
    }

    fn fail(&mut self, case: &str, why: String) {
        println!("FAIL {case}: {why}");
        self.failures.push(format!("{case}: {why}"));
    }
}

/// A valid order body with `edit` applied to it.
fn order_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = order_request("c-bad-input", &[("SKU-001", 1)], "card");
    edit(&mut body);
    body
}

fn lines(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"sku": format!("SKU-{:03}", i % 5 + 1), "quantity": 1})).collect())
}

/// Waits until the order service has read stock's catalogue (before that it
/// accepts any well-formed SKU and leaves the verdict to stock).
async fn wait_for_catalogue(system: &TestSystem) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) =
            system.place_order(&order_request("c-catalogue-probe", &[("SKU-NO-SUCH", 1)], "card"), None).await.unwrap();
        if status == 422 {
            return;
        }
        assert!(Instant::now() < deadline, "the order service never loaded the catalogue");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn post_orders_cases(p: &mut Probe<'_>) {
    use Expect::Error;
    // Positive control: the body every case below breaks in one place.
    let ok = order_with(|_| {});
    p.check("valid order", p.post_json(&ok), Expect::Ok(202)).await;

    // Not JSON, or not a JSON object.
    p.check("malformed JSON", p.post_raw(JSON, r#"{"customer_id": "c", "lines": ["#), Error(400, None)).await;
    p.check("not JSON at all", p.post_raw(JSON, "{not json"), Error(400, None)).await;
    p.check("empty body", p.post_raw(JSON, ""), Error(400, None)).await;
    p.check("whitespace body", p.post_raw(JSON, " \n\t "), Error(400, None)).await;
    p.check("trailing garbage", p.post_raw(JSON, format!("{ok} trailing")), Error(400, None)).await;
    p.check("invalid UTF-8", p.post_raw(JSON, b"{\"customer_id\": \"\xff\xfe\"}".to_vec()), Error(400, None)).await;
    p.check("number out of any range", p.post_raw(JSON, r#"{"customer_id": 1e400}"#), Error(400, None)).await;
    for (name, body) in [("array", "[1, 2]"), ("string", "\"order\""), ("number", "42"), ("null", "null")] {
        p.check(&format!("a JSON {name} instead of an object"), p.post_raw(JSON, body), Error(422, Some("body"))).await;
    }

    // Content-Type.
    let text = ok.to_string();
    p.check("Content-Type text/plain", p.post_raw("text/plain", text.clone()), Error(415, None)).await;
    p.check("form Content-Type", p.post_raw("application/x-www-form-urlencoded", text.clone()), Error(415, None)).await;
    p.check("no Content-Type", p.request(Method::POST, "order", "/orders").body(text.clone()), Error(415, None)).await;
    p.check("garbage Content-Type", p.post_raw("{{{", text.clone()), Error(415, None)).await;

    // Wrong types.
    let wrong_types: [(&str, Value, &'static str); 8] = [
        ("quantity a string", order_with(|b| b["lines"][0]["quantity"] = json!("2")), "lines[0].quantity"),
        ("quantity null", order_with(|b| b["lines"][0]["quantity"] = Value::Null), "lines[0].quantity"),
        ("lines an object", order_with(|b| b["lines"] = json!({"sku": "SKU-001", "quantity": 1})), "lines"),
        ("lines null", order_with(|b| b["lines"] = Value::Null), "lines"),
        ("a line a string", order_with(|b| b["lines"] = json!(["SKU-001"])), "lines[0]"),
        ("customer_id a number", order_with(|b| b["customer_id"] = json!(5)), "customer_id"),
        ("payment_method an array", order_with(|b| b["payment_method"] = json!(["card"])), "payment_method"),
        ("sku a bool", order_with(|b| b["lines"][0]["sku"] = json!(true)), "lines[0].sku"),
    ];
    for (name, body, field) in wrong_types {
        p.check(name, p.post_json(&body), Error(422, Some(field))).await;
    }
    // Only the methods the payment service knows: any other string was
    // once accepted, and the order completed as if paid by card.
    for method in ["bitcoin", "CARD", "card ", ""] {
        let body = order_with(|b| b["payment_method"] = json!(method));
        p.check(&format!("payment_method {method:?}"), p.post_json(&body), Error(422, Some("payment_method"))).await;
    }

    // Missing and unknown fields.
    let two_lines = |b: &mut Value| b["lines"] = json!([{"sku": "SKU-001", "quantity": 1}, {"sku": "SKU-002"}]);
    let structure: [(&str, Value, &'static str); 9] = [
        ("no customer_id", order_with(|b| drop(b.as_object_mut().unwrap().remove("customer_id"))), "customer_id"),
        ("no lines", order_with(|b| drop(b.as_object_mut().unwrap().remove("lines"))), "lines"),
        (
            "no payment_method",
            order_with(|b| drop(b.as_object_mut().unwrap().remove("payment_method"))),
            "payment_method",
        ),
        ("a line without sku", order_with(|b| b["lines"] = json!([{"quantity": 1}])), "lines[0].sku"),
        ("a line without quantity", order_with(|b| b["lines"] = json!([{"sku": "SKU-001"}])), "lines[0].quantity"),
        ("second line without quantity", order_with(two_lines), "lines[1].quantity"),
        ("empty object", json!({}), "customer_id"),
        ("unknown top-level field", order_with(|b| b["coupon"] = json!("FREE")), "coupon"),
        ("unknown line field", order_with(|b| b["lines"][0]["price"] = json!(1)), "lines[0].price"),
    ];
    for (name, body, field) in structure {
        p.check(name, p.post_json(&body), Error(422, Some(field))).await;
    }
    p.check(
        "duplicate JSON key",
        p.post_raw(JSON, r#"{"customer_id": "a", "customer_id": "b", "lines": [], "payment_method": "card"}"#),
        Error(422, Some("customer_id")),
    )
    .await;

    // Quantities.
    let quantities: [(&str, &str); 8] = [
        ("zero", "0"),
        ("negative", "-1"),
        ("above the maximum", "1001"),
        ("i64::MAX", "9223372036854775807"),
        ("i64::MIN", "-9223372036854775808"),
        ("above u64::MAX", "18446744073709551616"),
        ("1e20", "1e20"),
        ("2.5", "2.5"),
    ];
    for (name, quantity) in quantities {
        let body = format!(
            r#"{{"customer_id": "c", "payment_method": "card", "lines": [{{"sku": "SKU-001", "quantity": {quantity}}}]}}"#
        );
        p.check(&format!("quantity {name}"), p.post_raw(JSON, body), Error(422, Some("lines[0].quantity"))).await;
    }

    // Lines.
    p.check("no lines at all", p.post_json(&order_with(|b| b["lines"] = json!([]))), Error(422, Some("lines"))).await;
    p.check("51 lines", p.post_json(&order_with(|b| b["lines"] = lines(51))), Error(422, Some("lines"))).await;
    // 10 000 lines do not fit in the body limit (64 kB): refused as too large.
    p.check("10 000 lines", p.post_json(&order_with(|b| b["lines"] = lines(10_000))), Error(413, None)).await;
    p.check(
        "unknown SKU",
        p.post_json(&order_with(|b| b["lines"][0]["sku"] = json!("SKU-NO-SUCH"))),
        Error(422, Some("lines[0].sku")),
    )
    .await;
    p.check(
        "unknown SKU on the second line",
        p.post_json(&order_with(|b| {
            b["lines"] = json!([{"sku": "SKU-001", "quantity": 1}, {"sku": "NOPE", "quantity": 1}])
        })),
        Error(422, Some("lines[1].sku")),
    )
    .await;
    p.check(
        "duplicate SKUs",
        p.post_json(&order_with(|b| {
            b["lines"] = json!([{"sku": "SKU-001", "quantity": 1}, {"sku": "SKU-001", "quantity": 2}])
        })),
        Error(422, Some("lines[1].sku")),
    )
    .await;

    // Identifiers: empty, over-long, non-ASCII, control characters.
    let long = "c".repeat(65);
    let identifiers: [(&str, &str, &'static str); 4] = [
        ("customer_id", "", "customer_id"),
        ("payment_method", "", "payment_method"),
        ("customer_id", &long, "customer_id"),
        ("payment_method", &long, "payment_method"),
    ];
    for (key, value, field) in identifiers {
        let body = order_with(|b| b[key] = json!(value));
        p.check(&format!("{key} of {} characters", value.len()), p.post_json(&body), Error(422, Some(field))).await;
    }
    for odd in ["zoë", "客户", "a b", "a\u{0}b", "a\nb", "🦀", "a/b", "..%2F"] {
        let body = order_with(|b| b["customer_id"] = json!(odd));
        p.check(&format!("customer_id {odd:?}"), p.post_json(&body), Error(422, Some("customer_id"))).await;
        let body = order_with(|b| b["lines"][0]["sku"] = json!(odd));
        p.check(&format!("sku {odd:?}"), p.post_json(&body), Error(422, Some("lines[0].sku"))).await;
    }
    let body = order_with(|b| b["lines"][0]["sku"] = json!("S".repeat(65)));
    p.check("sku of 65 characters", p.post_json(&body), Error(422, Some("lines[0].sku"))).await;
    let body = order_with(|b| b["customer_id"] = json!("c".repeat(100_000)));
    p.check("customer_id of 100 kB (over the body limit)", p.post_json(&body), Error(413, None)).await;

    // Bodies over the limit (64 kB), announced or not.
    let padded = |size: usize| {
        let mut body = ok.clone();
        body["padding"] = json!("x".repeat(size));
        body.to_string()
    };
    p.check("1 MB body", p.post_raw(JSON, padded(1 << 20)), Error(413, None)).await;
    p.check("65 kB body", p.post_raw(JSON, padded(65 * 1024)), Error(413, None)).await;
    // The size is checked before anything else.
    p.check("1 MB body of text/plain", p.post_raw("text/plain", padded(1 << 20)), Error(413, None)).await;
    raw_oversized_bodies(p).await;
    // Again and again, with requests in between on the same kept-alive
    // connections: the 413 always arrives, and so does the next answer (a
    // server that stops reading a body and closes the connection may have
    // it reset under the client, or leave a dead connection in its pool).
    for round in 0..10 {
        let oversized = [
            ("65 kB body", Method::POST, "/orders", padded(65 * 1024)),
            ("1 MB body to a route that takes none", Method::PUT, "/orders", padded(1 << 20)),
            ("1 MB body to no route", Method::POST, "/no/such/route", padded(1 << 20)),
        ];
        for (name, method, path, body) in oversized {
            let request = p.request(method, "order", path).header(CONTENT_TYPE, JSON).body(body);
            p.check(&format!("{name}, round {round}"), request, Error(413, None)).await;
            let request = p.request(Method::GET, "order", "/orders?customer_id=c-bad-input");
            p.check(&format!("a query after a {name}, round {round}"), request, Expect::Ok(200)).await;
        }
    }

    // Idempotency-Key.
    let bad_keys: [(&str, HeaderValue); 4] = [
        ("empty", HeaderValue::from_static("")),
        ("blank", HeaderValue::from_static("   ")),
        ("201 characters", HeaderValue::from_str(&"k".repeat(201)).unwrap()),
        ("non-ASCII bytes", HeaderValue::from_bytes(b"cl\xe9-\xff").unwrap()),
    ];
    for (name, key) in bad_keys {
        p.check(
            &format!("Idempotency-Key {name}"),
            p.post_json(&ok).header("Idempotency-Key", key),
            Error(400, Some("Idempotency-Key")),
        )
        .await;
    }
    let key = format!("bad-input-{}", Uuid::now_v7());
    let first =
        p.check("Idempotency-Key first use", p.post_json(&ok).header("Idempotency-Key", &key), Expect::Ok(202)).await;
    let replay =
        p.check("Idempotency-Key replay", p.post_json(&ok).header("Idempotency-Key", &key), Expect::Ok(202)).await;
    if let (Some(first), Some(replay)) = (first, replay) {
        if first["order_id"] != replay["order_id"] {
            p.fail("Idempotency-Key replay", format!("another order: {first} then {replay}"));
        }
    }
    let other = order_with(|b| b["lines"][0]["quantity"] = json!(2));
    p.check(
        "Idempotency-Key reused with another body",
        p.post_json(&other).header("Idempotency-Key", &key),
        Error(422, Some("Idempotency-Key")),
    )
    .await;
}

/// Over a raw socket, bodies the client library would not send: a chunked
/// body (no Content-Length) over the limit, and a body announced far larger
/// than the server will ever read. Either way the answer is a JSON 413, and
/// it arrives although the server does not take the whole body.
async fn raw_oversized_bodies(p: &mut Probe<'_>) {
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    let cases = [
        ("chunked 1 MB body", "Transfer-Encoding: chunked", chunk, 64, "0\r\n\r\n"),
        ("a body announced as 1 GB", "Content-Length: 1073741824", " ".repeat(16 * 1024), 16, ""),
    ];
    let address = p.system.url("order").trim_start_matches("http://").to_owned();
    for (case, framing, chunk, chunks, end) in cases {
        p.cases += 1;
        let result = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            let head = format!(
                "POST /orders HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            // The server may answer and close before taking it all: stop writing then.
            for _ in 0..chunks {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = stream.write_all(end.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        }
        .await;
        match result {
            Ok(answer) if answer.starts_with("HTTP/1.1 413") && answer.contains("\"payload_too_large\"") => {}
            Ok(answer) => {
                p.fail(case, format!("expected a JSON 413, got: {}", answer.chars().take(300).collect::<String>()))
            }
            Err(e) => p.fail(case, format!("no answer: {e}")),
        }
    }
}

/// GET routes: malformed, over-long and percent-encoded junk ids, ids that
/// do not exist, missing and malformed query parameters.
async fn query_cases(p: &mut Probe<'_>) {
    use Expect::Error;
    let long = "a".repeat(10_000);
    let missing = Uuid::now_v7();
    // (service, path prefix, path suffix, the path parameter's name)
    let uuid_routes = [
        ("order", "/orders/", "", "id"),
        ("payment", "/payments/", "", "payment_id"),
        ("shipping", "/shipments/", "", "id"),
        ("email", "/emails/", "", "id"),
    ];
    for (service, prefix, suffix, field) in uuid_routes {
        let route = format!("{service} GET {prefix}{{{field}}}{suffix}");
        for (name, segment) in [
            ("not a UUID", "not-a-uuid"),
            ("10 kB segment", long.as_str()),
            ("percent-encoded junk", "%FF%FE%00"),
            ("percent-encoded NUL", "%00"),
            ("UUID with junk", "0190f0c2-0000-7000-8000-000000000000%20x"),
            ("UUID too short", "0190f0c2-0000-7000-8000"),
        ] {
            let path = format!("{prefix}{segment}{suffix}");
            p.check(&format!("{route}: {name}"), p.request(Method::GET, service, &path), Error(400, Some(field))).await;
        }
        let path = format!("{prefix}{missing}{suffix}");
        p.check(&format!("{route}: no such id"), p.request(Method::GET, service, &path), Error(404, None)).await;
    }

    // Free-form string ids: SKUs and customer ids.
    let string_routes = [("stock", "/stock/", "", "sku"), ("loyalty", "/customers/", "/loyalty", "id")];
    for (service, prefix, suffix, field) in string_routes {
        let route = format!("{service} GET {prefix}{{{field}}}{suffix}");
        for (name, segment) in [
            ("10 kB segment", long.as_str()),
            ("65 characters", &long[..65]),
            ("percent-encoded junk", "%FF%FE"),
            ("percent-encoded NUL", "a%00b"),
            ("control character", "a%0Ab"),
        ] {
            let path = format!("{prefix}{segment}{suffix}");
            p.check(&format!("{route}: {name}"), p.request(Method::GET, service, &path), Error(400, Some(field))).await;
        }
        for (name, segment) in [("unknown", "NO-SUCH-ID"), ("non-ASCII unknown", "%C3%A9t%C3%A9")] {
            let path = format!("{prefix}{segment}{suffix}");
            let expect = if name == "unknown" { Error(404, None) } else { Error(400, Some(field)) };
            p.check(&format!("{route}: {name}"), p.request(Method::GET, service, &path), expect).await;
        }
    }
    p.check("stock GET /stock/SKU-001", p.request(Method::GET, "stock", "/stock/SKU-001"), Expect::Ok(200)).await;

    // ?order_id= queries.
    let order_id_routes =
        [("stock", "/reservations"), ("payment", "/payments"), ("shipping", "/shipments"), ("email", "/emails")];
    for (service, path) in order_id_routes {
        let route = format!("{service} GET {path}");
        for (name, query) in [
            ("no query", String::new()),
            ("no order_id", "?orderid=1".to_owned()),
            ("empty order_id", "?order_id=".to_owned()),
            ("order_id not a UUID", "?order_id=42".to_owned()),
            ("order_id percent-encoded junk", "?order_id=%FF%00%FE".to_owned()),
            ("order_id of 10 kB", format!("?order_id={long}")),
            ("order_id malformed escape", "?order_id=%G1%".to_owned()),
        ] {
            let request = p.request(Method::GET, service, &format!("{path}{query}"));
            p.check(&format!("{route}: {name}"), request, Error(400, Some("order_id"))).await;
        }
        // An order nobody heard of: an empty list, not an error.
        p.check(
            &format!("{route}: unknown order"),
            p.request(Method::GET, service, &format!("{path}?order_id={missing}")),
            Expect::Ok(200),
        )
        .await;
    }

    // GET /orders?customer_id=&limit=
    for (name, query, field) in [
        ("no query", "", "customer_id"),
        ("no customer_id", "?limit=5", "customer_id"),
        ("limit 0", "?customer_id=c&limit=0", "limit"),
        ("limit 501", "?customer_id=c&limit=501", "limit"),
        ("limit not a number", "?customer_id=c&limit=ten", "limit"),
        ("limit negative", "?customer_id=c&limit=-1", "limit"),
        ("limit huge", "?customer_id=c&limit=99999999999999999999999", "limit"),
        ("customer_id with NUL", "?customer_id=a%00b", "customer_id"),
        ("customer_id percent-encoded junk", "?customer_id=%FF%FE", "customer_id"),
        ("customer_id empty", "?customer_id=", "customer_id"),
    ] {
        p.check(
            &format!("order GET /orders{query}: {name}"),
            p.request(Method::GET, "order", &format!("/orders{query}")),
            Error(400, Some(field)),
        )
        .await;
    }
    let long_customer = format!("/orders?customer_id={long}");
    p.check(
        "order GET /orders: customer_id of 10 kB",
        p.request(Method::GET, "order", &long_customer),
        Error(400, Some("customer_id")),
    )
    .await;
    p.check(
        "order GET /orders?customer_id=nobody",
        p.request(Method::GET, "order", "/orders?customer_id=nobody"),
        Expect::Ok(200),
    )
    .await;
    p.check("stock GET /stock with junk query", p.request(Method::GET, "stock", "/stock?x=%FF&y"), Expect::Ok(200))
        .await;
}

/// Health and metrics, unknown routes and wrong methods, on every service.
async fn operational_cases(p: &mut Probe<'_>) {
    use Expect::Error;
    let some_id = Uuid::now_v7();
    for service in system_tests::system::ALL_SERVICES {
        for path in ["/health/live", "/health/ready", "/metrics", "/health/live?verbose=%FF"] {
            p.check(&format!("{service} GET {path}"), p.request(Method::GET, service, path), Expect::Ok(200)).await;
        }
        for (method, path) in [
            (Method::POST, "/health/live"),
            (Method::PUT, "/health/ready"),
            (Method::DELETE, "/metrics"),
            (Method::PATCH, "/health/ready"),
        ] {
            p.check(&format!("{service} {method} {path}"), p.request(method, service, path), Error(405, None)).await;
        }
        for path in [
            "/",
            "/nope",
            "/health",
            "/health/live/extra",
            "/metrics/x",
            "/%FF",
            "/orders/x/y/z",
            "/admin/dead-letters",
        ] {
            if service == ADMIN_SERVICE && path.starts_with("/admin/") {
                continue; // admin_cases
            }
            p.check(
                &format!("{service} GET {path} (no such route)"),
                p.request(Method::GET, service, path),
                Error(404, None),
            )
            .await;
        }
    }
    let wrong_methods = [
        ("order", Method::DELETE, "/orders".to_owned()),
        ("order", Method::PUT, "/orders".to_owned()),
        ("order", Method::PUT, format!("/orders/{some_id}")),
        ("order", Method::POST, format!("/orders/{some_id}")),
        ("order", Method::DELETE, format!("/orders/{some_id}")),
        ("stock", Method::POST, "/stock".to_owned()),
        ("stock", Method::DELETE, "/stock/SKU-001".to_owned()),
        ("stock", Method::POST, "/reservations".to_owned()),
        ("payment", Method::POST, "/payments".to_owned()),
        ("payment", Method::DELETE, format!("/payments/{some_id}")),
        ("shipping", Method::POST, "/shipments".to_owned()),
        ("shipping", Method::PATCH, format!("/shipments/{some_id}")),
        ("email", Method::POST, "/emails".to_owned()),
        ("email", Method::DELETE, format!("/emails/{some_id}")),
        ("loyalty", Method::POST, "/customers/c-1/loyalty".to_owned()),
        ("loyalty", Method::DELETE, "/customers/c-1/loyalty".to_owned()),
    ];
    for (service, method, path) in wrong_methods {
        let case = format!("{service} {method} {path}");
        let request = p.request(method, service, &path).header(CONTENT_TYPE, JSON).body("{}");
        p.check(&case, request, Error(405, None)).await;
    }
    // Routes of another service are unknown here.
    p.check(
        "stock GET /orders (another service's route)",
        p.request(Method::GET, "stock", "/orders"),
        Error(404, None),
    )
    .await;
    p.check("order POST /stock", p.request(Method::POST, "order", "/stock"), Error(404, None)).await;
}

/// The admin routes (on order): no token or a wrong one, bad `limit`s,
/// message ids, destination names and replay bodies, on both a RabbitMQ
/// dead-letter queue and a Kafka dead-letter topic.
async fn admin_cases(p: &mut Probe<'_>) {
    use Expect::Error;
    use Method as M;
    let topology = p.system.topology();
    let queue_dlq = Topology::dead_letter_queue(&topology.order_replies());
    let topic_dlq = Topology::dead_letter_topic(&topology.shipments_topic(), &topology.consumer_group("order"));
    let admin = |p: &Probe<'_>, method: Method, path: &str| {
        p.request(method, ADMIN_SERVICE, path).header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
    };

    // The token: missing, wrong, or not a bearer token, on every route.
    let some_id = Uuid::now_v7();
    let routes = [
        (M::GET, "/admin/dead-letters".to_owned()),
        (M::GET, format!("/admin/dead-letters/{queue_dlq}?limit=abc")),
        (M::GET, format!("/admin/dead-letters/{topic_dlq}/{some_id}")),
        (M::POST, format!("/admin/dead-letters/{queue_dlq}/replay")),
        (M::POST, format!("/admin/dead-letters/{topic_dlq}/purge")),
        (M::GET, "/admin/dead-letters/%FF%FE".to_owned()),
    ];
    let bad_tokens: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("wrong token", Some("Bearer wrong")),
        ("token without scheme", Some(ADMIN_TOKEN)),
        ("basic auth", Some("Basic YWRtaW46YWRtaW4=")),
        ("empty bearer", Some("Bearer ")),
        ("token with a suffix", Some("Bearer bad-input-admin2")),
    ];
    for (name, auth) in bad_tokens {
        for (method, path) in &routes {
            let mut request = p.request(method.clone(), ADMIN_SERVICE, path);
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            p.check(&format!("admin {method} {path}: {name}"), request, Error(401, None)).await;
        }
    }

    // Positive controls.
    p.check("admin GET /admin/dead-letters", admin(p, M::GET, "/admin/dead-letters"), Expect::Ok(200)).await;
    for dlq in [&queue_dlq, &topic_dlq] {
        let path = format!("/admin/dead-letters/{dlq}?limit=5");
        p.check(&format!("admin GET {path}"), admin(p, M::GET, &path), Expect::Ok(200)).await;
    }

    // ?limit=
    for dlq in [&queue_dlq, &topic_dlq] {
        for (name, query) in [
            ("not a number", "?limit=abc"),
            ("zero", "?limit=0"),
            ("above the maximum", "?limit=1001"),
            ("negative", "?limit=-1"),
            ("huge", "?limit=99999999999999999999999"),
            ("empty", "?limit="),
            ("a fraction", "?limit=2.5"),
            ("percent-encoded junk", "?limit=%FF%00"),
        ] {
            let path = format!("/admin/dead-letters/{dlq}{query}");
            p.check(&format!("admin GET {dlq}: limit {name}"), admin(p, M::GET, &path), Error(400, Some("limit")))
                .await;
        }
    }

    // Message ids and destination names.
    let long = "a".repeat(10_000);
    for dlq in [&queue_dlq, &topic_dlq] {
        for (name, id) in [
            ("percent-encoded junk", "%FF%FE"),
            ("percent-encoded NUL", "a%00b"),
            ("control character", "a%0Ab"),
            ("256 bytes", &long[..256]),
            ("10 kB", long.as_str()),
        ] {
            let path = format!("/admin/dead-letters/{dlq}/{id}");
            let case = format!("admin GET {dlq}/{{message_id}}: {name}");
            p.check(&case, admin(p, M::GET, &path), Error(400, Some("message_id"))).await;
        }
        let path = format!("/admin/dead-letters/{dlq}/{some_id}");
        p.check(&format!("admin GET {dlq}/{{message_id}}: unknown"), admin(p, M::GET, &path), Error(404, None)).await;
    }
    for (name, path, expect) in [
        ("junk destination", "/admin/dead-letters/%FF%FE".to_owned(), Error(400, Some("dlq"))),
        ("unknown destination", "/admin/dead-letters/nonsense.dlq".to_owned(), Error(404, None)),
        (
            "another service's destination",
            format!("/admin/dead-letters/{}.dlq", topology.stock_commands()),
            Error(404, None),
        ),
        ("10 kB destination", format!("/admin/dead-letters/{long}"), Error(404, None)),
    ] {
        p.check(&format!("admin GET {name}"), admin(p, M::GET, &path), expect).await;
    }
    for route in ["replay", "purge"] {
        let path = format!("/admin/dead-letters/%FF%FE/{route}");
        p.check(&format!("admin POST junk destination/{route}"), admin(p, M::POST, &path), Error(400, Some("dlq")))
            .await;
    }

    // Replay bodies.
    for dlq in [&queue_dlq, &topic_dlq] {
        let path = format!("/admin/dead-letters/{dlq}/replay");
        for (name, body, expect) in [
            ("malformed JSON", r#"{"message_id": "#.to_owned(), Error(400, None)),
            ("a JSON array", "[1]".to_owned(), Error(422, Some("body"))),
            ("message_id a number", r#"{"message_id": 5}"#.to_owned(), Error(422, Some("message_id"))),
            ("message_id empty", r#"{"message_id": ""}"#.to_owned(), Error(422, Some("message_id"))),
            ("message_id of 10 kB", format!(r#"{{"message_id": "{long}"}}"#), Error(422, Some("message_id"))),
            ("unknown field", r#"{"all": true}"#.to_owned(), Error(422, Some("all"))),
            ("up_to a string", r#"{"up_to": "0:1"}"#.to_owned(), Error(422, Some("up_to"))),
            ("up_to without offset", r#"{"up_to": {"partition": 0}}"#.to_owned(), Error(422, Some("up_to.offset"))),
            (
                "negative partition",
                r#"{"up_to": {"partition": -1, "offset": 0}}"#.to_owned(),
                Error(422, Some("up_to.partition")),
            ),
            (
                "negative offset",
                r#"{"up_to": {"partition": 0, "offset": -1}}"#.to_owned(),
                Error(422, Some("up_to.offset")),
            ),
            (
                "message_id and up_to",
                format!(r#"{{"message_id": "{some_id}", "up_to": {{"partition": 0, "offset": 1}}}}"#),
                // A body of a shape the document's oneOf refuses: 422, like the other shapes.
                Error(422, Some("up_to")),
            ),
            ("an unknown message", format!(r#"{{"message_id": "{some_id}"}}"#), Error(404, None)),
        ] {
            let request = admin(p, M::POST, &path).header(CONTENT_TYPE, JSON).body(body);
            p.check(&format!("admin POST {dlq}/replay: {name}"), request, expect).await;
        }
    }
    let path = format!("/admin/dead-letters/{queue_dlq}/replay");
    let request =
        admin(p, M::POST, &path).header(CONTENT_TYPE, JSON).body(r#"{"up_to": {"partition": 0, "offset": 1}}"#);
    p.check("admin POST queue/replay: an offset on a queue", request, Error(409, None)).await;
    // Nothing pending: replaying all and purging are fine, and do nothing.
    for dlq in [&queue_dlq, &topic_dlq] {
        for route in ["replay", "purge"] {
            let path = format!("/admin/dead-letters/{dlq}/{route}");
            p.check(&format!("admin POST {dlq}/{route}: nothing pending"), admin(p, M::POST, &path), Expect::Ok(200))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_answers_5xx_to_bad_input() {
    let started = Instant::now();
    let system = TestSystem::start_on_with(
        test_stack().await,
        "badinput",
        &system_tests::system::ALL_SERVICES,
        &[],
        &[(ADMIN_SERVICE, "ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await
    .unwrap();
    println!("six services ready in {:?}", started.elapsed());
    wait_for_catalogue(&system).await;

    let mut probe = Probe::new(&system);
    post_orders_cases(&mut probe).await;
    query_cases(&mut probe).await;
    operational_cases(&mut probe).await;
    admin_cases(&mut probe).await;
    println!("{} cases in {:?}, {} failures", probe.cases, started.elapsed(), probe.failures.len());

    // No service logged a panic or an internal error along the way.
    for service in system_tests::system::ALL_SERVICES {
        let log = std::fs::read_to_string(system.log_path(service)).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("panicked") || l.contains("internal error")) {
            probe.failures.push(format!("{service} logged: {}", line.chars().take(300).collect::<String>()));
        }
    }
    let failures = std::mem::take(&mut probe.failures);
    system.shutdown().await;
    assert!(failures.is_empty(), "{} of the bad-input cases failed:\n{}", failures.len(), failures.join("\n"));
}
