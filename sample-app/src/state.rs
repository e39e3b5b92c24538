//! What every handler shares: the order book, the downstream client and the profiler.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::sync::Semaphore;
use url::Url;

use crate::{
    faults::Faults,
    telemetry::{metrics::AppMetrics, profiles::Profiler},
};

/// Orders kept in memory; beyond this the oldest are forgotten — except the first
/// [`KEPT_FOREVER`], which load-gen's request mix reads (`/api/orders/{{int 1 300}}`): a flood
/// of new orders must not turn a third of a later run's reads into 404s.
pub const MAX_ORDERS: usize = 10_000;
/// The first orders, never forgotten (ids 1 to this).
pub const KEPT_FOREVER: u64 = 1_000;
/// `/generate-load` bursts that may burn CPU at once; more get 429.
pub const MAX_CONCURRENT_BURSTS: usize = 4;
/// CPU burns asked for with `x-fault-cpu-burn-ms` that may run at once; more get 429. Any client
/// may send the header (when faults are enabled), so it gets the bound `/generate-load` has.
/// A plan's `cpu_burn_ms` is not bounded: it is set on the admin route, to saturate the CPU.
pub const MAX_CONCURRENT_FAULT_BURNS: usize = 4;

pub struct AppState {
    pub service_name: String,
    pub version: String,
    pub orders: OrderBook,
    pub downstream: Option<Downstream>,
    pub profiler: Option<Profiler>,
    pub metrics: AppMetrics,
    /// Permits for `/generate-load` bursts; a burst holds one until its CPU work ends (even
    /// when the client has gone).
    pub cpu_bursts: Arc<Semaphore>,
    /// Permits for burns asked for with `x-fault-cpu-burn-ms`, held the same way.
    pub fault_burns: Arc<Semaphore>,
    pub faults: Arc<Faults>,
}

/// The service `/external` calls, and how long it may take.
pub struct Downstream {
    pub base: Url,
    pub timeout: Duration,
    pub client: reqwest::Client,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Order {
    pub id: u64,
    pub item: String,
    pub quantity: u32,
    pub status: &'static str,
    pub created_at: String,
}

/// A bounded, in-memory order store.
#[derive(Default)]
pub struct OrderBook {
    next_id: AtomicU64,
    orders: Mutex<BTreeMap<u64, Order>>,
}

impl OrderBook {
    pub fn insert(&self, item: String, quantity: u32, created_at: String) -> Order {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let order = Order {
            id,
            item,
            quantity,
            status: "accepted",
            created_at,
        };
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        orders.insert(id, order.clone());
        while orders.len() > MAX_ORDERS {
            let Some(oldest) = orders.range(KEPT_FOREVER + 1..).next().map(|(id, _)| *id) else {
                break;
            };
            orders.remove(&oldest);
        }
        order
    }

    pub fn get(&self, id: u64) -> Option<Order> {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_forgets_the_oldest_orders_beyond_its_bound_but_keeps_the_first_ones() {
        let book = OrderBook::default();
        for i in 0..MAX_ORDERS + 5 {
            book.insert(format!("item-{i}"), 1, String::new());
        }
        assert_eq!(book.len(), MAX_ORDERS);
        let first_forgotten = KEPT_FOREVER + 1;
        assert!(book.get(first_forgotten + 4).is_none());
        assert_eq!(
            book.get(first_forgotten + 5).unwrap().item,
            format!("item-{}", first_forgotten + 4)
        );
        for id in [1, 300, KEPT_FOREVER] {
            assert!(book.get(id).is_some(), "order {id} was forgotten");
        }
        assert_eq!(
            book.get((MAX_ORDERS + 5) as u64).unwrap().item,
            format!("item-{}", MAX_ORDERS + 4)
        );
    }
}
