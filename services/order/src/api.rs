//! The public HTTP API: place an order (a command, answered 202 at once) and
//! read it back (a query).

use crate::catalogue::{Catalogue, SkuCheck};
use crate::store::OrderStatus;
use crate::store::{self, InsertOutcome, NewOrder};
use crate::sync_peers::SyncPeers;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use contracts::Topology;
use contracts::catalogue::{OrderLine, OrderPlaced, PaymentMethod, ReserveStock};
use messaging::outbox::OutboxBacklogMonitor;
use messaging::{MessageFactory, Outbox, OutboxMessage};
use serde::{Deserialize, Serialize};
use service_kit::extract::{FromQueryParams, QueryParams};
use service_kit::openapi::NotFound;
use service_kit::{ApiError, ApiJson, Identifier, PathParam, ValidQuery};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1_000;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub factory: MessageFactory,
    pub topology: Topology,
    pub catalogue: Arc<Catalogue>,
    pub max_outbox_backlog: i64,
    /// Unsent outbox rows, sampled in the background.
    pub outbox_backlog: OutboxBacklogMonitor,
    /// The five services, for the synchronous twin (`POST /orders/sync`).
    pub sync_peers: SyncPeers,
}

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(crate::sync_order::place_order_sync))
}

pub fn router(state: AppState) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$", example = "c-42")]
    pub customer_id: String,
    /// 1 to 50 lines, each SKU once, each SKU one the stock service sells.
    #[schema(min_items = 1, max_items = 50)]
    pub lines: Vec<LineRequest>,
    #[schema(value_type = PaymentMethod)]
    pub payment_method: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$", example = "SKU-002")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// `202 Accepted`: the order is placed; follow `location`.
#[derive(Debug, Serialize, ToSchema)]
struct PlacedResponse {
    order_id: Uuid,
    /// `PLACED` when new; the order's current status when the request is a replay.
    #[schema(value_type = OrderStatus)]
    status: String,
    /// `/orders/{order_id}`.
    location: String,
}

/// `GET /orders?customer_id=`.
#[derive(Debug, Serialize, ToSchema)]
struct CustomerOrders {
    customer_id: String,
    /// Newest first.
    orders: Vec<store::OrderSummary>,
}

/// The `Idempotency-Key` header of `POST /orders`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documentation only: `idempotency_key` reads the header, to answer 400 as ApiError.
struct IdempotencyHeader {
    /// Any visible ASCII, 1 to 200 characters. The same key with the same body
    /// answers the same order (`Idempotent-Replayed: true`); with another body, 422.
    #[serde(rename = "Idempotency-Key")]
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 200, nullable = false)]
    idempotency_key: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    customer_id: String,
    /// 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

const DEFAULT_LIST_LIMIT: i64 = 50;

impl FromQueryParams for ListQuery {
    fn from_query_params(params: &QueryParams) -> Result<Self, ApiError> {
        let customer_id: Identifier = params.required("customer_id")?;
        let limit = params.optional_with("limit", |limit| {
            limit
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=500).contains(l))
                .ok_or_else(|| ApiError::invalid_parameter("limit", "must be an integer from 1 to 500"))
        })?;
        Ok(Self { customer_id: customer_id.into_string(), limit })
    }
}

fn valid_identifier(field: &str, value: &str) -> Result<(), ApiError> {
    match service_kit::identifier_problem(value) {
        Some(problem) => Err(ApiError::validation(field, problem)),
        None => Ok(()),
    }
}

/// Checks the shape of every field and returns the lines to order; the
/// first problem found is reported with the path of its field.
pub(crate) fn validate(req: &PlaceOrderRequest) -> Result<Vec<OrderLine>, ApiError> {
    valid_identifier("customer_id", &req.customer_id)?;
    if PaymentMethod::parse(&req.payment_method).is_none() {
        let accepted: Vec<String> = PaymentMethod::ALL.iter().map(|m| format!("`{}`", m.as_str())).collect();
        return Err(ApiError::validation(
            "payment_method",
            format!("unknown payment method `{}`; accepted: {}", req.payment_method, accepted.join(", ")),
        ));
    }
    if req.lines.is_empty() {
        return Err(ApiError::validation("lines", "an order needs at least one line"));
    }
    if req.lines.len() > MAX_LINES {
        return Err(ApiError::validation("lines", format!("at most {MAX_LINES} lines per order")));
    }
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, line) in req.lines.iter().enumerate() {
        valid_identifier(&format!("lines[{i}].sku"), &line.sku)?;
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(ApiError::validation(
                format!("lines[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(line.sku.as_str()) {
            return Err(ApiError::validation(format!("lines[{i}].sku"), "the same SKU appears on two lines"));
        }
        lines.push(OrderLine { sku: line.sku.clone(), quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX) });
    }
    Ok(lines)
}

/// Refuses a SKU the stock service does not sell.
pub(crate) async fn check_skus(lines: &[OrderLine], catalogue: &Catalogue) -> Result<(), ApiError> {
    for (i, line) in lines.iter().enumerate() {
        if catalogue.check(&line.sku).await == SkuCheck::Unknown {
            return Err(ApiError::validation(format!("lines[{i}].sku"), format!("unknown SKU `{}`", line.sku)));
        }
    }
    Ok(())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key =
        value.to_str().map_err(|_| ApiError::invalid_parameter("Idempotency-Key", "must be visible ASCII"))?.trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::invalid_parameter(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// `POST /orders`: one transaction writes the order (`PLACED`), the
/// `ReserveStock` command and the `OrderPlaced` event; the relay publishes
/// them after the commit. Answers 202 with the order's location.
#[utoipa::path(
    post,
    path = "/orders",
    operation_id = "place_order",
    tag = "order",
    params(IdempotencyHeader),
    request_body = PlaceOrderRequest,
    responses(
        (status = 202, description = "The order is placed (or, for a replayed key, was).", body = PlacedResponse,
         headers(("Location" = String, description = "`/orders/{order_id}`."),
                 ("Idempotent-Replayed" = String, description = "`true` when the answer is a replay of an earlier request with the same key."))),
    )
)]
#[tracing::instrument(name = "place_order", skip_all, fields(order_id))]
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let lines = validate(&req)?;
    // Exactly what was asked, to recognise a replay of the same request.
    let fingerprint = serde_json::json!({
        "customer_id": req.customer_id, "payment_method": req.payment_method,
        "lines": lines.iter().map(|l| (&l.sku, l.quantity)).collect::<Vec<_>>(),
    })
    .to_string();
    // A replay is answered from what was stored, before anything that may
    // have changed since (the catalogue, the backlog): the order exists.
    if let Some(key) = &key {
        if let Some(existing) = store::find_by_idempotency_key(&state.pool, key).await? {
            return replayed(&state, existing, &fingerprint).await;
        }
    }
    check_skus(&lines, &state.catalogue).await?;
    let backlog = state.outbox_backlog.pending();
    if backlog > state.max_outbox_backlog {
        // Shed load rather than queue without limit; nothing was accepted.
        metrics::counter!("orders_rejected_total", "reason" => "backpressure").increment(1);
        return Err(ApiError::Unavailable {
            reason: format!("{backlog} messages wait to be published; retry shortly"),
            retry_after_secs: 2,
        });
    }

    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let correlation = order_id.to_string();
    let reserve = state.factory.command(
        &state.topology.stock_commands(),
        &correlation,
        &state.topology.order_replies(),
        None,
        &ReserveStock { order_id, lines: lines.clone() },
    )?;
    let placed = state.factory.event(
        &state.topology.orders_topic(),
        &correlation,
        1,
        None,
        &OrderPlaced {
            order_id,
            customer_id: req.customer_id.clone(),
            lines: lines.clone(),
            payment_method: req.payment_method.clone(),
        },
    )?;
    let new_order = NewOrder {
        id: order_id,
        customer_id: req.customer_id.clone(),
        payment_method: req.payment_method.clone(),
        lines: lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        idempotency_key: key,
        request_fingerprint: fingerprint.clone(),
        trace_id: telemetry::current_trace_id(),
        awaiting_message_id: Some(reserve.envelope.message_id),
    };

    let write = write_order(&state, &new_order, &reserve, &placed)
        .instrument(messaging::db_span::transaction_span(&state.pool, "INSERT"));
    match write.await? {
        InsertOutcome::Created => {
            messaging::crash::crash_point(messaging::crash::AFTER_BUSINESS_COMMIT);
            metrics::counter!("orders_placed_total").increment(1);
            Ok(accepted(order_id, "PLACED", false))
        }
        InsertOutcome::Existing(existing) => replayed(&state, existing, &fingerprint).await,
    }
}

/// The answer to a request whose idempotency key already made an order:
/// that order, if the request is the same; a 422 if the key was reused for
/// a different one.
async fn replayed(state: &AppState, existing: store::KeyedOrder, fingerprint: &str) -> Result<Response, ApiError> {
    if existing.request_fingerprint.as_deref() != Some(fingerprint) {
        return Err(ApiError::validation("Idempotency-Key", "this key was already used for a different request"));
    }
    let status =
        store::fetch_order(&state.pool, existing.id).await?.map(|o| o.status).unwrap_or_else(|| "PLACED".to_owned());
    Ok(accepted(existing.id, &status, true))
}

/// The one transaction of `POST /orders`: the order, its `ReserveStock`
/// command and its `OrderPlaced` event commit together or not at all.
async fn write_order(
    state: &AppState,
    order: &NewOrder,
    reserve: &OutboxMessage,
    placed: &OutboxMessage,
) -> Result<InsertOutcome, ApiError> {
    let mut tx = state.pool.begin().await?;
    let outcome = store::insert_order(&mut tx, order).await?;
    match outcome {
        InsertOutcome::Created => {
            Outbox::add(&mut tx, reserve).await?;
            Outbox::add(&mut tx, placed).await?;
            tx.commit().await?;
        }
        InsertOutcome::Existing { .. } => tx.rollback().await?,
    }
    Ok(outcome)
}

fn accepted(order_id: Uuid, status: &str, replayed: bool) -> Response {
    let location = format!("/orders/{order_id}");
    let body = PlacedResponse { order_id, status: status.to_owned(), location: location.clone() };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `GET /orders/{id}`: the order, its lines, its status history and trace id.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    operation_id = "get_order",
    tag = "order",
    params(("id" = Uuid, Path, description = "The order id.")),
    responses((status = 200, body = store::OrderView), (status = 404, response = NotFound))
)]
async fn get_order(State(state): State<AppState>, PathParam(id): PathParam<Uuid>) -> Result<Response, ApiError> {
    match store::fetch_order(&state.pool, id).await? {
        Some(order) => Ok(Json(order).into_response()),
        None => Err(ApiError::NotFound(format!("no order {id}"))),
    }
}

/// `GET /orders?customer_id=…&limit=…`: a customer's latest orders.
#[utoipa::path(get, path = "/orders", operation_id = "list_orders", tag = "order", params(ListQuery), responses((status = 200, body = CustomerOrders)))]
async fn list_orders(
    State(state): State<AppState>,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    let orders = store::orders_of_customer(&state.pool, &query.customer_id, limit).await?;
    Ok(Json(CustomerOrders { customer_id: query.customer_id, orders }).into_response())
}
