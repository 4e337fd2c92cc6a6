//! The one OSB router, served by `lambda_http` on Lambda and by `axum::serve` locally.
//! Authentication, the version header, ids, queries and bodies are checked by extractors and one
//! middleware; handlers call the domain and map its answer.

pub mod admin;
pub mod error;
pub mod extract;
mod handlers;

use crate::broker::Broker;
use crate::catalog::CatalogConfig;
use crate::tenants::Tenants;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

pub use error::ApiError;

/// Default limit on request bodies.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Each tenant's serialized catalog, with the catalog version it was made of.
type TenantCatalogs = (u64, Arc<HashMap<String, Bytes>>);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub tenants: Arc<Tenants>,
    /// The catalog as each tenant sees it, serialized once per catalog version.
    catalogs: Arc<std::sync::RwLock<TenantCatalogs>>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
}

impl AppState {
    pub fn new(broker: Arc<Broker>, tenants: Arc<Tenants>, body_limit: usize) -> Self {
        let version = broker.catalog.version();
        let catalogs = serialize_catalogs(&broker, &tenants);
        AppState {
            broker,
            tenants,
            catalogs: Arc::new(std::sync::RwLock::new((version, Arc::new(catalogs)))),
            body_limit,
        }
    }

    /// The serialized catalog a tenant sees, rebuilt once after the catalog was replaced.
    pub fn catalog_of(&self, tenant: &str) -> Bytes {
        let version = self.broker.catalog.version();
        let cached = {
            let c = self.catalogs.read().unwrap_or_else(|e| e.into_inner());
            (c.0 == version).then(|| c.1.clone())
        };
        let map = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(serialize_catalogs(&self.broker, &self.tenants));
                *self.catalogs.write().unwrap_or_else(|e| e.into_inner()) = (version, m.clone());
                m
            }
        };
        map.get(tenant).cloned().unwrap_or_default()
    }
}

fn serialize_catalogs(broker: &Broker, tenants: &Tenants) -> HashMap<String, Bytes> {
    let mut catalogs = HashMap::new();
    for t in tenants.iter() {
        let services = broker
            .catalog
            .services()
            .iter()
            .filter(|s| t.can_use(&s.id))
            .cloned()
            .collect();
        let json = serde_json::to_vec(&CatalogConfig { services }).unwrap_or_default();
        catalogs.insert(t.name.clone(), Bytes::from(json));
    }
    catalogs
}

/// Builds the OSB router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    use handlers::*;
    Router::new()
        .route("/v2/catalog", get(catalog))
        .route(
            "/v2/service_instances/{instance_id}",
            get(fetch_instance)
                .put(provision)
                .patch(update)
                .delete(deprovision),
        )
        .route(
            "/v2/service_instances/{instance_id}/last_operation",
            get(instance_last_operation),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}",
            get(fetch_binding).put(bind).delete(unbind),
        )
        .route(
            "/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation",
            get(binding_last_operation),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::authenticate,
        ))
        .layer(axum::middleware::from_fn(extract::echo_request_identity))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
