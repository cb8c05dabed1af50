//! Which upstream serves a model, and the one in-flight limit per upstream that every chunk of
//! every batch shares.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vllm_batch_upstream::{ModelMap, UpstreamError, Upstreams};

use crate::adaptive::{Limit, Slot};

/// How often the model map is refreshed in the background.
const REFRESH: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Router {
    pub upstreams: Upstreams,
    limits: Arc<Vec<Arc<Limit>>>,
    map: Arc<RwLock<ModelMap>>,
    started: std::time::Instant,
    /// Models already reported loaded once (their load duration is set once).
    seen: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Router {
    pub fn new(upstreams: Upstreams, max_in_flight: usize) -> Self {
        let limits = (0..upstreams.specs().len()).map(|_| Limit::new(max_in_flight)).collect();
        Router {
            upstreams,
            limits: Arc::new(limits),
            map: Arc::default(),
            started: std::time::Instant::now(),
            seen: Arc::default(),
        }
    }

    /// In-flight requests the worker can have across all upstreams now.
    pub fn total_capacity(&self) -> usize {
        self.limits.iter().map(|l| l.current()).sum()
    }

    /// The in-flight limit of each upstream.
    pub fn limits(&self) -> &[Arc<Limit>] {
        &self.limits
    }

    /// Asks the upstreams for their models now and remembers the answer.
    pub async fn discover(&self) -> Result<ModelMap, UpstreamError> {
        let map = self.upstreams.discover().await?;
        let m = vllm_batch_metrics::metrics();
        let mut seen = self.seen.lock().unwrap();
        for model in seen.iter() {
            if !map.routes.contains_key(model) {
                m.model_loaded.with_label_values(&[model]).set(0);
            }
        }
        for model in map.routes.keys() {
            m.model_loaded.with_label_values(&[model]).set(1);
            if seen.insert(model.clone()) {
                m.model_load_duration.with_label_values(&[model]).set(self.started.elapsed().as_secs_f64());
            }
        }
        drop(seen);
        *self.map.write().unwrap() = map.clone();
        Ok(map)
    }

    pub async fn refresh_loop(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.discover().await {
                tracing::warn!(error = %e, "model discovery failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// The upstream for `model` with the most free room; with a single upstream, that one.
    pub fn pick(&self, model: &str) -> usize {
        let map = self.map.read().unwrap();
        match map.routes.get(model) {
            Some(candidates) if !candidates.is_empty() => {
                *candidates.iter().max_by_key(|&&i| self.limits[i].available()).expect("non-empty")
            }
            _ => 0,
        }
    }

    pub async fn acquire(&self, upstream: usize) -> Slot {
        self.limits[upstream].acquire().await
    }
}
