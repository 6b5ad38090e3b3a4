//! The OpenAPI 3.1 document of a service. Its own routes are documented
//! where they are registered (`#[utoipa::path]` on each handler, collected
//! by utoipa-axum's `OpenApiRouter`, so a route cannot be served without
//! being documented); [`service_document`] adds what every service shares
//! (health, metrics, the dead-letter admin routes, this document) and the
//! error answers every route can give, as [`ApiError`](crate::ApiError)
//! and the standard layers (crate::http) really produce them.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, PathItem, Ref, RefOr, Response, Tag,
};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where every service serves its document.
pub const DOCUMENT_ROUTE: &str = "/openapi.json";
/// The security scheme of the admin routes (`Authorization: Bearer <ADMIN_TOKEN>`).
pub const ADMIN_SECURITY: &str = "admin_token";

/// Every error answer: `{"error": {"code", "message", "field"?}}`
/// ([`ApiError`](crate::ApiError) and the standard layers answer with it).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `validation_failed`, `invalid_parameter`, `bad_request`,
    /// `not_found`, `conflict`, `unauthorized`, `unavailable`, `internal`, …
    pub code: String,
    pub message: String,
    /// The offending field, parameter or header (`lines[0].quantity`), on 400 and 422.
    #[schema(required = false, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error answers routes share, by status: the name of the response in
/// `components.responses`, and what it means.
const ERRORS: &[(u16, &str, &str)] = &[
    (
        400,
        "BadRequest",
        "A path or query parameter, a header or the body cannot be read (`field` names the parameter).",
    ),
    (401, "Unauthorized", "The bearer token is missing or wrong."),
    (404, "NotFound", "No such resource (on the admin routes: also every route of a service without `ADMIN_TOKEN`)."),
    (408, "RequestTimeout", "The request took longer than the service's request timeout."),
    (409, "Conflict", "The request cannot be applied in the resource's current state."),
    (413, "PayloadTooLarge", "The body is larger than the service accepts."),
    (415, "UnsupportedMediaType", "The body is not declared as JSON."),
    (
        422,
        "ValidationFailed",
        "The body is JSON but a field is missing, of the wrong type or out of range (`field` names it).",
    ),
    (500, "Internal", "An unexpected failure; the detail is in the service's log, under the trace id."),
    (
        503,
        "Unavailable",
        "The service is protecting itself (backpressure) or a dependency (database, broker) is unavailable; retry after `Retry-After` seconds.",
    ),
];

fn error_name(status: u16) -> &'static str {
    ERRORS.iter().find(|(s, _, _)| *s == status).map_or("Internal", |(_, name, _)| name)
}

/// A reference to the shared error answer of `status`.
fn error_response(status: u16) -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(error_name(status)))
}

fn error_component(status: u16, description: &str) -> Response {
    let content = ContentBuilder::new().schema(Some(ErrorBody::schema())).build();
    let mut builder = ResponseBuilder::new().description(description).content("application/json", content);
    if status == 503 {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new().schema(u64::schema()).description(Some("Seconds to wait before retrying.")).build(),
        );
    }
    builder.build()
}

/// `service`'s whole document: `own` (its routes), the shared routes, the
/// shared error answers added to every operation that can give them.
pub fn service_document(service: &str, own: OpenApi) -> OpenApi {
    let mut document = own;
    document.info = InfoBuilder::new()
        .title(format!("ordermesh {service}"))
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "The HTTP API of ordermesh's {service} service: its queries{}, its health, metrics and dead-letter \
             administration. Commands and events travel over RabbitMQ and Kafka: see asyncapi.json.",
            if service == "order" { ", placing an order" } else { "" }
        )))
        .build();
    document.merge(crate::operational_routes::openapi());
    document.merge(crate::admin::openapi());
    document.merge(document_route_openapi());
    let mut components = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schema_from::<ErrorDetail>()
        .security_scheme(ADMIN_SECURITY, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    for (status, name, description) in ERRORS {
        components = components.response(*name, error_component(*status, description));
    }
    let mut shared = components.build();
    if let Some(own) = document.components.take() {
        shared.schemas.extend(own.schemas);
        shared.responses.extend(own.responses);
        shared.security_schemes.extend(own.security_schemes);
    }
    document.components = Some(shared);
    for (path, item) in document.paths.paths.iter_mut() {
        for operation in operations(item) {
            add_shared_errors(path, operation);
        }
    }
    document.tags = Some(vec![Tag::new(service), Tag::new("operations"), Tag::new("dead letters")]);
    document
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten()
}

/// The errors an operation can give whatever its handler does: the
/// timeout and an internal failure on every route; 400 where there are
/// parameters; 400, 413, 415 and 422 where there is a body; 503 wherever a
/// database or broker is reached (every route but health, metrics and this
/// document).
fn add_shared_errors(path: &str, operation: &mut Operation) {
    let mut statuses = vec![408, 500];
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_parameters {
        statuses.push(400);
    }
    if operation.request_body.is_some() {
        statuses.extend([400, 413, 415, 422]);
    }
    let self_contained = path.starts_with("/health/") || path == "/metrics" || path == DOCUMENT_ROUTE;
    if !self_contained {
        statuses.push(503);
    }
    if operation.security.is_some() {
        statuses.push(401);
    }
    for status in statuses {
        operation.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(status));
    }
}

/// The shared error answers a handler names itself (the others,
/// [`add_shared_errors`] adds wherever they apply):
/// `responses((status = 404, response = openapi::NotFound))` refers to
/// `#/components/responses/NotFound`, which [`service_document`] defines.
macro_rules! shared_error_answers {
    ($($name:ident = $status:literal),* $(,)?) => {$(
        pub struct $name;
        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                let (_, name, description) = ERRORS.iter().find(|(s, _, _)| *s == $status).copied().unwrap_or((500, "Internal", ""));
                (name, RefOr::T(error_component($status, description)))
            }
        }
    )*};
}
shared_error_answers!(NotFound = 404, Conflict = 409);

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object))
)]
async fn document_route() {}

fn document_route_openapi() -> OpenApi {
    OpenApiRouter::<()>::new().routes(routes!(document_route)).into_openapi()
}

/// The handler that serves `document`.
pub fn serve_document(document: &OpenApi) -> axum::Router {
    let body = serde_json::to_value(document).unwrap_or_default();
    axum::Router::new().route(DOCUMENT_ROUTE, axum::routing::get(move || async move { Json(body).into_response() }))
}

/// The document as committed under docs/api/: pretty JSON with a final newline.
pub fn render(document: &OpenApi) -> Result<String, serde_json::Error> {
    let mut text = document.to_pretty_json()?;
    text.push('\n');
    Ok(text)
}
