//! The console's JSON API, which its pages poll and act through, and the
//! OTLP/HTTP receiver the services export to.

use crate::ConsoleState;
use crate::error::ConsoleError;
use crate::journey::{Journey, journey};
use crate::order_service::{HistoryEntry, QueryLink, query_links};
use crate::order_traffic::{TrafficRequest, TrafficStatus};
use crate::otlp::{self, Encoding};
use crate::process_control::Action;
use crate::span_store::SeenOrder;
use crate::system_map::MapSample;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST /v1/traces`: an OTLP/HTTP export, protobuf or JSON.
pub async fn receive_traces(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let encoding = Encoding::of_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    let export = otlp::decode(&body, encoding)?;
    let answer = otlp::response_body(&export, encoding);
    if !export.spans.is_empty() && !state.ingest.offer(export.spans) {
        return Err(ConsoleError::Overloaded);
    }
    Ok(([(header::CONTENT_TYPE, encoding.content_type())], answer).into_response())
}

#[derive(Serialize)]
struct Control {
    enabled: bool,
    reason: Option<&'static str>,
    token_required: bool,
}

#[derive(Serialize)]
struct MapResponse {
    #[serde(flatten)]
    sample: Option<MapSample>,
    control: Control,
}

/// `GET /api/map`: the latest sample of the system map.
pub async fn map(State(state): State<ConsoleState>) -> Json<impl Serialize> {
    let reason = state.control.unavailable_reason();
    Json(MapResponse {
        sample: state.map.get(),
        control: Control { enabled: reason.is_none(), reason, token_required: state.admin_token.is_some() },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
}

#[derive(Serialize)]
struct RecentOrder {
    #[serde(flatten)]
    seen: SeenOrder,
    status: Option<String>,
}

/// `GET /api/orders?limit=`: the orders seen last, with their state.
pub async fn recent_orders(
    State(state): State<ConsoleState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ConsoleError> {
    let Query(params) = params.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let limit = match params.limit.as_deref() {
        None => 30,
        Some(text) => text.parse::<i64>().ok().filter(|l| (1..=200).contains(l)).ok_or_else(|| {
            ConsoleError::InvalidParameter { field: "limit", message: "must be an integer from 1 to 200".into() }
        })?,
    };
    let seen = state.store.recent_orders(limit).await?;
    // The order service answers each in a millisecond or two; asked together.
    let states = futures::future::join_all(seen.iter().map(|o| state.orders.state(o.order_id))).await;
    let orders: Vec<RecentOrder> = seen
        .into_iter()
        .zip(states)
        .map(|(seen, found)| RecentOrder { seen, status: found.ok().flatten().map(|s| s.status) })
        .collect();
    Ok(Json(serde_json::json!({ "orders": orders })))
}

#[derive(Serialize)]
struct JourneyResponse {
    order_id: Uuid,
    status: Option<String>,
    status_error: Option<String>,
    history: Vec<HistoryEntry>,
    links: Vec<QueryLink>,
    #[serde(flatten)]
    journey: Journey,
}

pub fn parse_order_id(text: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(text).map_err(|_| ConsoleError::InvalidParameter {
        field: "id",
        message: format!("`{text}` is not an order id (a UUID)"),
    })
}

/// `GET /api/orders/{id}`: the order's journey beside its state history.
pub async fn order_journey(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let order = parse_order_id(&id)?;
    let (spans, found) = tokio::join!(state.store.spans_of_order(order), state.orders.state(order));
    let spans = spans?;
    let (order_state, status_error) = match found {
        Ok(found) => (found, None),
        Err(e) => (None, Some(e.to_string())),
    };
    if spans.is_empty() && order_state.is_none() && status_error.is_none() {
        return Err(ConsoleError::NotFound(format!(
            "no order {order}: no spans name it and the order service does not know it"
        )));
    }
    let customer = order_state.as_ref().map(|s| s.customer_id.clone());
    let response = JourneyResponse {
        order_id: order,
        status: order_state.as_ref().map(|s| s.status.clone()),
        status_error,
        history: order_state.map(|s| s.history).unwrap_or_default(),
        links: query_links(&state.service_urls, order, customer.as_deref()),
        journey: journey(&spans, &state.channels),
    };
    Ok(Json(response).into_response())
}

/// Whether the order is known at all, for the journey page's 404.
pub async fn order_exists(state: &ConsoleState, order: Uuid) -> Result<bool, ConsoleError> {
    if state.store.knows_order(order).await? {
        return Ok(true);
    }
    // Not traced (yet): the order service may still know it; if it cannot
    // be asked, show the page and let it say so.
    Ok(!matches!(state.orders.state(order).await, Ok(None)))
}

/// `POST /api/orders`: places one order through the order service.
pub async fn place_order(State(state): State<ConsoleState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    state.authorize(&headers)?;
    let placed = state.orders.place().await?;
    let body = serde_json::json!({
        "order_id": placed.order_id,
        "status": placed.status,
        "journey": format!("/orders/{}", placed.order_id),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/traffic`
pub async fn traffic(State(state): State<ConsoleState>) -> Json<TrafficStatus> {
    Json(state.traffic.status())
}

/// `POST /api/traffic` `{"per_second": 5, "seconds": 30}`: a stream of orders.
pub async fn start_traffic(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<Json<TrafficRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ConsoleError> {
    state.authorize(&headers)?;
    let Json(request) = body.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    if let Some((field, message)) = request.problem() {
        return Err(ConsoleError::InvalidParameter { field, message });
    }
    let status = state.traffic.start(request, state.orders.clone(), &state.shutdown);
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// `DELETE /api/traffic`: stops the stream.
pub async fn stop_traffic(State(state): State<ConsoleState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    state.authorize(&headers)?;
    state.traffic.stop();
    Ok(Json(state.traffic.status()).into_response())
}

/// `POST /api/components/{name}/{action}`: kill, stop or restart.
pub async fn act_on_component(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    state.authorize(&headers)?;
    let action: Action = action.parse()?;
    let output = state.control.act(&name, action).await?;
    let body = serde_json::json!({ "component": name, "action": format!("{action:?}").to_ascii_lowercase(), "output": output });
    Ok(Json(body).into_response())
}

/// `POST /api/lesson/coupling` `{"orders": N}`: N orders each way, one at
/// a time, and how long the caller was blocked (see [`crate::coupling`]).
pub async fn coupling_lesson(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<Json<crate::coupling::CouplingRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ConsoleError> {
    state.authorize(&headers)?;
    let Json(request) = body.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    if !(1..=crate::coupling::MAX_ORDERS).contains(&request.orders) {
        let message = format!("must be from 1 to {}", crate::coupling::MAX_ORDERS);
        return Err(ConsoleError::InvalidParameter { field: "orders", message });
    }
    Ok(Json(crate::coupling::run(&state.orders, request.orders).await).into_response())
}
