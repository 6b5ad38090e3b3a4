//! Typed extractors for path and query parameters whose every refusal is an
//! [`ApiError`] 400 naming the parameter, the same body for every service.
//!
//! Parameters are read as text first and parsed here rather than by serde:
//! serde's messages ("missing field `order_id`", the uuid crate's wording)
//! would change the documented 400 bodies, and a typed `Query` struct would
//! refuse a repeated parameter that the API has always taken (last wins).

use crate::error::ApiError;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use std::collections::HashMap;
use uuid::Uuid;

/// A value a path or query parameter can hold, parsed from its text.
pub trait ParamValue: Sized {
    /// `field` names the parameter in the 400 a bad `value` gets.
    fn parse_param(field: &str, value: &str) -> Result<Self, ApiError>;
}

impl ParamValue for Uuid {
    fn parse_param(field: &str, value: &str) -> Result<Self, ApiError> {
        ApiError::parse_uuid(field, value)
    }
}

/// Any text: for parameters the handler checks against what exists (a
/// dead-letter destination), where a malformed one is simply not found.
impl ParamValue for String {
    fn parse_param(_field: &str, value: &str) -> Result<Self, ApiError> {
        Ok(value.to_owned())
    }
}

/// A customer id, SKU or other identifier the API accepts (see
/// [`crate::identifier_problem`]): checked before it reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

impl Identifier {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ParamValue for Identifier {
    fn parse_param(field: &str, value: &str) -> Result<Self, ApiError> {
        ApiError::parse_identifier(field, value).map(|v| Identifier(v.to_owned()))
    }
}

/// The one parameter of a route (`/orders/{id}`, `/stock/{sku}`), parsed as
/// `T`; a bad value is a 400 naming the parameter as the route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParam<T>(pub T);

impl<T: ParamValue, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: PathRejection| ApiError::from(rejection))?;
        let mut params = params.into_iter();
        match (params.next(), params.next()) {
            (Some((name, value)), None) => T::parse_param(&name, &value).map(PathParam),
            // A handler on a route with no parameter or several: our bug.
            _ => Err(ApiError::Internal("PathParam used on a route without exactly one parameter".into())),
        }
    }
}

/// A request's query parameters as text; a parameter given twice keeps its
/// last value, and parameters nobody asks for are ignored.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    /// `field`, which must be present (400 `required` otherwise).
    pub fn required<V: ParamValue>(&self, field: &str) -> Result<V, ApiError> {
        let value = self.0.get(field).ok_or_else(|| ApiError::invalid_parameter(field, "required"))?;
        V::parse_param(field, value)
    }

    /// `field` parsed by `parse` when present; `None` when absent.
    pub fn optional_with<V>(
        &self,
        field: &str,
        parse: impl FnOnce(&str) -> Result<V, ApiError>,
    ) -> Result<Option<V>, ApiError> {
        self.0.get(field).map(|value| parse(value)).transpose()
    }
}

impl From<HashMap<String, String>> for QueryParams {
    fn from(params: HashMap<String, String>) -> Self {
        Self(params)
    }
}

/// A query string's typed form, built from its text parameters.
pub trait FromQueryParams: Sized {
    fn from_query_params(params: &QueryParams) -> Result<Self, ApiError>;
}

/// `?order_id=…`, required and a UUID: the order-scoped queries of every service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderIdQuery {
    pub order_id: Uuid,
}

impl FromQueryParams for OrderIdQuery {
    fn from_query_params(params: &QueryParams) -> Result<Self, ApiError> {
        Ok(Self { order_id: params.required("order_id")? })
    }
}

/// The query string parsed as `T`; a bad or missing parameter is a 400
/// naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidQuery<T>(pub T);

impl<T: FromQueryParams, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Text into a map cannot fail to deserialize (decoding is lossy), so
        // this rejection is only kept for completeness.
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        T::from_query_params(&QueryParams(params)).map(ValidQuery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn by_id(PathParam(id): PathParam<Uuid>) -> String {
        id.to_string()
    }

    async fn by_sku(PathParam(sku): PathParam<Identifier>) -> String {
        sku.into_string()
    }

    async fn of_order(ValidQuery(query): ValidQuery<OrderIdQuery>) -> String {
        query.order_id.to_string()
    }

    fn app() -> Router {
        Router::new()
            .route("/orders/{id}", get(by_id))
            .route("/stock/{sku}", get(by_sku))
            .route("/payments", get(of_order))
            .route("/two/{a}/{b}", get(by_id))
    }

    async fn call(uri: &str) -> (StatusCode, serde_json::Value) {
        let response = app().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into());
        (status, body)
    }

    fn invalid(field: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"error": {"code": "invalid_parameter", "message": message, "field": field}})
    }

    /// The body the hand-written parsing answered, built the way it did.
    async fn body_of(error: ApiError) -> serde_json::Value {
        let bytes = axum::body::to_bytes(error.into_response().into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_path_uuid_is_parsed() {
        let id = Uuid::now_v7();
        assert_eq!(call(&format!("/orders/{id}")).await, (StatusCode::OK, id.to_string().into()));
    }

    #[tokio::test]
    async fn a_bad_path_uuid_is_a_400_naming_the_route_parameter() {
        let (status, body) = call("/orders/not-a-uuid").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("id", "`not-a-uuid` is not a UUID"));
        assert_eq!(body, body_of(ApiError::parse_uuid("id", "not-a-uuid").unwrap_err()).await);
    }

    #[tokio::test]
    async fn a_path_that_is_not_utf8_is_a_400_as_before() {
        let (status, body) = call("/orders/%FF").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("id", "is not valid UTF-8 once percent-decoded"));
    }

    #[tokio::test]
    async fn a_path_identifier_is_checked() {
        assert_eq!(call("/stock/SKU-002").await, (StatusCode::OK, "SKU-002".into()));
        let (status, body) = call("/stock/SKU%20002").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("sku", "may contain only letters, digits, '-', '_' and '.'"));
        let long = "x".repeat(65);
        let (status, body) = call(&format!("/stock/{long}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("sku", "must be 1 to 64 characters"));
    }

    #[tokio::test]
    async fn a_route_with_two_parameters_is_our_error() {
        let (status, _) = call(&format!("/two/{}/{}", Uuid::now_v7(), Uuid::now_v7())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_query_uuid_is_parsed_and_unknown_parameters_ignored() {
        let id = Uuid::now_v7();
        assert_eq!(call(&format!("/payments?order_id={id}&other=1")).await, (StatusCode::OK, id.to_string().into()));
    }

    #[tokio::test]
    async fn a_repeated_query_parameter_keeps_its_last_value() {
        let id = Uuid::now_v7();
        assert_eq!(
            call(&format!("/payments?order_id=bad&order_id={id}")).await,
            (StatusCode::OK, id.to_string().into())
        );
    }

    #[tokio::test]
    async fn a_missing_query_parameter_is_required() {
        let (status, body) = call("/payments").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("order_id", "required"));
        let (_, body) = call("/payments?orderid=x").await;
        assert_eq!(body, invalid("order_id", "required"));
    }

    #[tokio::test]
    async fn a_bad_query_uuid_is_a_400_as_before() {
        let (status, body) = call("/payments?order_id=12").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, invalid("order_id", "`12` is not a UUID"));
        let (_, body) = call("/payments?order_id=").await;
        assert_eq!(body, invalid("order_id", "`` is not a UUID"));
    }
}
