//! A small order API so dashboards have several real route templates: create an order, read
//! it back. Orders live in memory ([`crate::state::OrderBook`], bounded).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::extractors::JsonBody;
use crate::{error::ApiError, state::AppState};

pub const MAX_ITEM_CHARS: usize = 64;
pub const MAX_QUANTITY: i64 = 100;

/// The body of `POST /api/orders`. Unknown fields are refused so typos do not pass silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    item: String,
    /// Signed and wide, so out-of-range values get a range error rather than a type error.
    quantity: i64,
}

impl NewOrder {
    fn validate(self) -> Result<(String, u32), ApiError> {
        let chars = self.item.chars().count();
        if self.item.trim().is_empty() || chars > MAX_ITEM_CHARS {
            return Err(ApiError::Unprocessable {
                error: "invalid_order",
                detail: format!(
                    "item must be 1 to {MAX_ITEM_CHARS} characters and not blank, got {chars}"
                ),
            });
        }
        if !(1..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(ApiError::Unprocessable {
                error: "invalid_order",
                detail: format!(
                    "quantity must be from 1 to {MAX_QUANTITY}, got {}",
                    self.quantity
                ),
            });
        }
        Ok((self.item, self.quantity as u32))
    }
}

pub async fn create(
    body: JsonBody<NewOrder>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (item, quantity) = body.0.validate()?;
    // The order flow's dependency: with a downstream configured, ask it for the stock first.
    let in_stock = match state.downstream {
        Some(_) => super::downstream::stock_level(&state, &item)
            .await?
            .get("in_stock")
            .cloned(),
        None => None,
    };
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let order = state.orders.insert(item, quantity, now);
    tracing::info!(order.id = order.id, order.item = %order.item, order.quantity = order.quantity, order.in_stock = in_stock.and_then(|v| v.as_u64()), "order accepted");
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/orders/{}", order.id)))
        .json(order))
}

pub async fn read(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_order_id",
            "order id must be a positive whole number",
        )
    })?;
    state
        .orders
        .get(id)
        .map(|order| HttpResponse::Ok().json(order))
        .ok_or_else(|| ApiError::NotFound {
            error: "order_not_found",
            detail: format!("no order with id {id}"),
        })
}
