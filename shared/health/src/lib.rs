//! Readiness of a process: each component (database, AMQP connection, Kafka
//! client, …) reports whether it is usable, and `/health/ready` is green only
//! when all of them are.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ComponentStatus {
    pub ready: bool,
    /// Why it is not ready, for the readiness response and the logs.
    pub detail: Option<String>,
}

/// Shared, cloneable registry of component readiness.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<RwLock<BTreeMap<String, ComponentStatus>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component as not ready yet; it must report before the
    /// process is ready, so a slow start is never mistaken for readiness.
    pub fn register(&self, component: &str) {
        self.set(component, ComponentStatus { ready: false, detail: Some("starting".into()) });
    }

    pub fn ready(&self, component: &str) {
        self.set(component, ComponentStatus { ready: true, detail: None });
    }

    pub fn not_ready(&self, component: &str, detail: impl Into<String>) {
        self.set(component, ComponentStatus { ready: false, detail: Some(detail.into()) });
    }

    fn set(&self, component: &str, status: ComponentStatus) {
        // A poisoned lock only means a writer panicked mid-insert of a plain
        // value; the map is still valid, so keep serving it.
        let mut map = self.components.write().unwrap_or_else(|e| e.into_inner());
        map.insert(component.to_owned(), status);
    }

    pub fn is_ready(&self) -> bool {
        self.snapshot().values().all(|s| s.ready)
    }

    pub fn snapshot(&self) -> BTreeMap<String, ComponentStatus> {
        self.components.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let r = Readiness::new();
        r.register("db");
        r.register("amqp");
        assert!(!r.is_ready());
        r.ready("db");
        assert!(!r.is_ready());
        r.ready("amqp");
        assert!(r.is_ready());
        r.not_ready("db", "connection refused");
        assert!(!r.is_ready());
        assert_eq!(r.snapshot()["db"].detail.as_deref(), Some("connection refused"));
    }
}
