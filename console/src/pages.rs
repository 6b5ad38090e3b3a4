//! The pages and their assets, built into the binary so the console is one
//! file to run. The pages are shells: their scripts poll the JSON API.

use crate::ConsoleState;
use crate::api::{order_exists, parse_order_id};
use crate::error::ConsoleError;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const MAP_PAGE: &str = include_str!("../assets/map.html");
const JOURNEY_PAGE: &str = include_str!("../assets/journey.html");

/// Name, content type and text of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("../assets/console.css")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("../assets/common.js")),
    ("map.js", "text/javascript; charset=utf-8", include_str!("../assets/map.js")),
    ("journey.js", "text/javascript; charset=utf-8", include_str!("../assets/journey.js")),
];

/// `GET /`: the system map.
pub async fn map_page() -> Html<&'static str> {
    Html(MAP_PAGE)
}

/// `GET /orders/{id}`: one order's journey; 400 for an id that is not
/// one, 404 for an order nobody knows.
pub async fn journey_page(State(state): State<ConsoleState>, Path(id): Path<String>) -> Response {
    let order = match parse_order_id(&id) {
        Ok(order) => order,
        Err(e) => return e.into_page(),
    };
    match order_exists(&state, order).await {
        Ok(true) => Html(JOURNEY_PAGE).into_response(),
        Ok(false) => ConsoleError::NotFound(format!(
            "No order {order}: no span names it and the order service does not know it."
        ))
        .into_page(),
        Err(e) => e.into_page(),
    }
}

/// `GET /assets/{name}`
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, text)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Unknown routes: a page for a browser, JSON for the API.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let error = ConsoleError::NotFound(format!("no page {}", uri.path()));
    if uri.path().starts_with("/api/") || uri.path().starts_with("/v1/") {
        error.into_response()
    } else {
        error.into_page()
    }
}
