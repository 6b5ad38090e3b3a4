//! `POST /orders/sync`: the synchronous twin of `POST /orders`, the course's
//! phone call. It calls stock, payment, shipping, email and loyalty over
//! HTTP, one after another, waiting for each answer, and answers only when
//! all five did: the caller is blocked for the sum of their times, and one
//! service down fails the order. The reliable path (`POST /orders`, the
//! outbox and the saga) is untouched; nothing here publishes a message.
//!
//! The effects are the asynchronous path's (the same rows, through the
//! services' `sync_api`), so the invariant checker checks a mixed run. A
//! business refusal (no stock, a declined card) cancels the order as the
//! saga does: stock released, a cancellation e-mail. A service that fails
//! or cannot be reached stops the order where it is, and the answer (502,
//! 503 or 504) names the service, what was already done and what was not
//! reached: the phone call has nothing to catch up later.

use crate::api::{AppState, PlaceOrderRequest, check_skus, validate};
use crate::store::{self, InsertOutcome, NewOrder, OrderStatus};
use crate::sync_peers::{CallError, Peer};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contracts::catalogue::{
    Cents, OrderCancelled, OrderLine, OrderPaid, PricedLine, ProcessPayment, ShipmentScheduled,
};
use serde::{Deserialize, Serialize};
use service_kit::openapi::Conflict;
use service_kit::{ApiError, ApiJson};
use std::time::Instant;
use utoipa::ToSchema;
use uuid::Uuid;

/// One call of the twin, as the caller experienced it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Step {
    pub service: &'static str,
    pub call: &'static str,
    /// What the service answered (`reserved`, `declined`, …), or the failure.
    pub outcome: String,
    /// From the request's arrival to this answer: what the caller of
    /// `/orders/sync` has been blocked for when it comes.
    pub answered_after_ms: f64,
}

/// `200`: all five services answered.
#[derive(Debug, Serialize, ToSchema)]
struct SyncAnswer {
    order_id: Uuid,
    /// `COMPLETED`, or `CANCELLED` when stock or payment refused the order.
    #[schema(value_type = OrderStatus)]
    status: &'static str,
    location: String,
    steps: Vec<Step>,
    blocked_ms: f64,
}

/// The order as far as it got, and the service that stopped it.
#[derive(Debug)]
pub struct SyncFailure {
    order_id: Uuid,
    status: OrderStatus,
    error: CallError,
    steps: Vec<Step>,
    started: Instant,
}

/// `502`/`503`/`504`: a service failed, was unreachable or too slow; the
/// order stays where it got to.
#[derive(Debug, Serialize, ToSchema)]
struct SyncFailureBody {
    error: SyncError,
    order_id: Uuid,
    status: OrderStatus,
    /// The services that answered before the failure.
    done: Vec<&'static str>,
    failed: &'static str,
    /// The services never called: the course's "not reached".
    not_reached: Vec<&'static str>,
    steps: Vec<Step>,
    blocked_ms: f64,
}

/// The body of a 503: a [`SyncFailureBody`] when a peer was unreachable, an
/// [`ErrorBody`](service_kit::openapi::ErrorBody) when this service's own
/// database is unavailable.
struct SyncUnavailableBody;

impl utoipa::PartialSchema for SyncUnavailableBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::AnyOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("SyncFailureBody"))
            .item(utoipa::openapi::Ref::from_schema_name("ErrorBody"))
            .into()
    }
}

impl ToSchema for SyncUnavailableBody {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("SyncFailureBody".into(), <SyncFailureBody as utoipa::PartialSchema>::schema()));
        <SyncFailureBody as ToSchema>::schemas(schemas);
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct SyncError {
    /// `bad_gateway`, `service_unavailable` or `gateway_timeout`.
    code: String,
    message: String,
    /// The service that failed.
    service: &'static str,
}

impl IntoResponse for SyncFailure {
    fn into_response(self) -> Response {
        let status = match &self.error {
            CallError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CallError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            CallError::Failed { .. } => StatusCode::BAD_GATEWAY,
        };
        let failed = self.error.peer();
        let done: Vec<&str> = self.steps.iter().filter(|s| s.service != failed).map(|s| s.service).collect();
        let not_reached: Vec<&str> = Peer::ALL
            .iter()
            .map(|p| p.name())
            .filter(|name| *name != failed && !self.steps.iter().any(|s| s.service == *name))
            .collect();
        let body = SyncFailureBody {
            error: SyncError {
                code: status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace(' ', "_"),
                message: format!("the synchronous order failed at {failed}: {}", self.error),
                service: failed,
            },
            order_id: self.order_id,
            status: self.status,
            done,
            failed,
            not_reached,
            steps: self.steps,
            blocked_ms: millis(self.started),
        };
        (status, Json(body)).into_response()
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Reservation {
    Reserved { lines: Vec<PricedLine>, total_cents: Cents },
    Rejected { reason: String },
}

#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Charge {
    Succeeded { payment_id: Uuid },
    Declined { reason: String },
}

#[derive(Deserialize)]
struct Shipment {
    id: Uuid,
    carrier: String,
}

/// Calls made so far, and the order they are for.
struct Call<'a> {
    state: &'a AppState,
    order_id: Uuid,
    status: OrderStatus,
    steps: Vec<Step>,
    started: Instant,
}

impl Call<'_> {
    /// One call, waited for; its answer (or failure) becomes a step.
    async fn make<T: serde::de::DeserializeOwned>(
        &mut self,
        peer: Peer,
        call: &'static str,
        path: &str,
        body: &impl Serialize,
        outcome: impl Fn(&T) -> String,
    ) -> Result<T, SyncFailure> {
        let result = self.state.sync_peers.call::<T>(peer, path, body).await;
        let outcome = match &result {
            Ok(answer) => outcome(answer),
            Err(e) => format!("failed: {e}"),
        };
        self.steps.push(Step { service: peer.name(), call, outcome, answered_after_ms: millis(self.started) });
        result.map_err(|error| self.failure(error))
    }

    fn failure(&mut self, error: CallError) -> SyncFailure {
        metrics::counter!("sync_orders_total", "outcome" => "failed", "service" => error.peer()).increment(1);
        SyncFailure {
            order_id: self.order_id,
            status: self.status,
            error,
            steps: std::mem::take(&mut self.steps),
            started: self.started,
        }
    }

    /// Moves the order on (as the saga's transitions do, without messages).
    async fn advance(&mut self, to: OrderStatus, fields: store::TransitionFields, note: &str) -> Result<(), ApiError> {
        let mut tx = self.state.pool.begin().await?;
        store::advance_sync(&mut tx, self.order_id, self.status, to, &fields, note).await?;
        tx.commit().await?;
        self.status = to;
        Ok(())
    }
}

/// `POST /orders/sync`: the body of `POST /orders`; 200 when all five
/// services answered (the order `COMPLETED`, or `CANCELLED` when stock or
/// payment refused it), 502/503/504 naming the service that did not.
#[utoipa::path(
    post,
    path = "/orders/sync",
    operation_id = "place_order_sync",
    tag = "order",
    request_body = PlaceOrderRequest,
    responses(
        (status = 200, description = "All five services answered.", body = SyncAnswer),
        (status = 409, response = Conflict),
        (status = 502, description = "A service answered with an error.", body = SyncFailureBody),
        (status = 503, description = "A service was unreachable (the order's progress), or this service's database is unavailable (an error body).", body = SyncUnavailableBody,
         headers(("Retry-After" = u64, description = "When this service's database is unavailable."))),
        (status = 504, description = "A service did not answer in time.", body = SyncFailureBody),
    )
)]
#[tracing::instrument(name = "place_order_sync", skip_all, fields(order_id))]
pub async fn place_order_sync(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let lines = validate(&req)?;
    check_skus(&lines, &state.catalogue).await?;
    let order_id = Uuid::now_v7();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let new_order = NewOrder {
        id: order_id,
        customer_id: req.customer_id.clone(),
        payment_method: req.payment_method.clone(),
        lines: lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        idempotency_key: None,
        request_fingerprint: String::new(),
        trace_id: telemetry::current_trace_id(),
        awaiting_message_id: None,
    };
    let mut tx = state.pool.begin().await?;
    if let InsertOutcome::Existing(_) = store::insert_order(&mut tx, &new_order).await? {
        return Err(ApiError::Conflict(format!("order {order_id} exists already")));
    }
    tx.commit().await?;
    let mut call = Call { state: &state, order_id, status: OrderStatus::Placed, steps: Vec::new(), started };
    match run(&mut call, &req, &lines).await? {
        Ok(status) => {
            metrics::counter!("sync_orders_total", "outcome" => status.as_str()).increment(1);
            let answer = SyncAnswer {
                order_id,
                status: status.as_str(),
                location: format!("/orders/{order_id}"),
                steps: call.steps,
                blocked_ms: millis(started),
            };
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        Err(failure) => {
            let note = format!("synchronous order stopped: {}", failure.error);
            let mut tx = state.pool.begin().await?;
            store::record_history(&mut tx, order_id, Some(failure.status), failure.status, None, Some(&note)).await?;
            tx.commit().await?;
            Ok(failure.into_response())
        }
    }
}

/// The five calls; a database error is the order service's own (outer
/// `Result`), a peer's failure stops the order (inner).
async fn run(
    call: &mut Call<'_>,
    req: &PlaceOrderRequest,
    lines: &[OrderLine],
) -> Result<Result<OrderStatus, SyncFailure>, ApiError> {
    let order_id = call.order_id;
    let reserve = serde_json::json!({ "order_id": order_id, "lines": lines });
    let reservation = match call
        .make(Peer::Stock, "reserve", "/sync/reservations", &reserve, |r: &Reservation| match r {
            Reservation::Reserved { .. } => "reserved".to_owned(),
            Reservation::Rejected { reason } => format!("rejected: {reason}"),
        })
        .await
    {
        Ok(reservation) => reservation,
        Err(failure) => return Ok(Err(failure)),
    };
    let total_cents = match reservation {
        Reservation::Rejected { reason } => return cancel(call, req, &reason, false).await,
        Reservation::Reserved { lines: priced, total_cents } => {
            let prices: Vec<(String, i64)> = priced.iter().map(|l| (l.sku.clone(), l.unit_price_cents)).collect();
            let mut tx = call.state.pool.begin().await?;
            store::set_line_prices(&mut tx, order_id, &prices).await?;
            tx.commit().await?;
            let fields = store::TransitionFields { total_cents: Some(total_cents), ..Default::default() };
            call.advance(OrderStatus::StockReserved, fields, "stock reserved (synchronous call)").await?;
            total_cents
        }
    };

    let charge = ProcessPayment {
        order_id,
        customer_id: req.customer_id.clone(),
        amount_cents: total_cents,
        payment_method: req.payment_method.clone(),
    };
    let outcome = |c: &Charge| match c {
        Charge::Succeeded { .. } => "succeeded".to_owned(),
        Charge::Declined { reason } => format!("declined: {reason}"),
    };
    let payment_id = match call.make(Peer::Payment, "charge", "/sync/payments", &charge, outcome).await {
        Err(failure) => return Ok(Err(failure)),
        Ok(Charge::Declined { reason }) => return cancel(call, req, &reason, true).await,
        Ok(Charge::Succeeded { payment_id }) => payment_id,
    };
    let fields = store::TransitionFields { payment_id: Some(payment_id), ..Default::default() };
    call.advance(OrderStatus::Paid, fields, "paid (synchronous call)").await?;

    let paid = OrderPaid { order_id, customer_id: req.customer_id.clone(), amount_cents: total_cents, payment_id };
    let ship = serde_json::json!({ "order_id": order_id, "customer_id": req.customer_id, "payment_id": payment_id });
    let shipment: Shipment = match call
        .make(Peer::Shipping, "ship", "/sync/shipments", &ship, |s: &Shipment| format!("scheduled with {}", s.carrier))
        .await
    {
        Ok(shipment) => shipment,
        Err(failure) => return Ok(Err(failure)),
    };
    let scheduled = ShipmentScheduled {
        order_id,
        shipment_id: shipment.id,
        customer_id: req.customer_id.clone(),
        carrier: shipment.carrier,
    };
    let emails = serde_json::json!({ "outcome": "shipped", "paid": paid, "shipment": scheduled });
    if let Err(failure) =
        call.make(Peer::Email, "send", "/sync/emails", &emails, |_: &serde_json::Value| "recorded".to_owned()).await
    {
        return Ok(Err(failure));
    }
    if let Err(failure) = call
        .make(Peer::Loyalty, "credit", "/sync/credits", &paid, |v: &serde_json::Value| {
            format!("{} points", v["points"])
        })
        .await
    {
        return Ok(Err(failure));
    }
    call.advance(OrderStatus::Completed, store::TransitionFields::default(), "completed (synchronous calls)").await?;
    Ok(Ok(OrderStatus::Completed))
}

/// Stock or payment refused the order: cancelled as the saga cancels it
/// (stock released when it was reserved, a cancellation e-mail).
async fn cancel(
    call: &mut Call<'_>,
    req: &PlaceOrderRequest,
    reason: &str,
    release_stock: bool,
) -> Result<Result<OrderStatus, SyncFailure>, ApiError> {
    let order_id = call.order_id;
    if release_stock {
        let release = serde_json::json!({ "order_id": order_id });
        if let Err(failure) = call
            .make(Peer::Stock, "release", "/sync/releases", &release, |_: &serde_json::Value| "released".into())
            .await
        {
            return Ok(Err(failure));
        }
    }
    let cancelled = OrderCancelled { order_id, customer_id: req.customer_id.clone(), reason: reason.to_owned() };
    let email = serde_json::json!({ "outcome": "cancelled", "cancelled": cancelled });
    if let Err(failure) =
        call.make(Peer::Email, "send", "/sync/emails", &email, |_: &serde_json::Value| "recorded".to_owned()).await
    {
        return Ok(Err(failure));
    }
    let fields = store::TransitionFields { cancel_reason: Some(reason.to_owned()), ..Default::default() };
    call.advance(OrderStatus::Cancelled, fields, "cancelled (synchronous calls)").await?;
    Ok(Ok(OrderStatus::Cancelled))
}
