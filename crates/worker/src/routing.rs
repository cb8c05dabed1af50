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
    /// Per upstream: it refused a request's `priority` (an older vLLM without
    /// `--scheduling-policy priority`), so none is sent to it any more.
    priority_refused: Arc<Vec<std::sync::atomic::AtomicBool>>,
}

impl Router {
    pub fn new(upstreams: Upstreams, max_in_flight: usize) -> Self {
        let limits = (0..upstreams.specs().len()).map(|_| Limit::new(max_in_flight)).collect();
        let priority_refused = Arc::new((0..upstreams.specs().len()).map(|_| Default::default()).collect());
        Router {
            upstreams,
            limits: Arc::new(limits),
            map: Arc::default(),
            started: std::time::Instant::now(),
            seen: Arc::default(),
            priority_refused,
        }
    }

    /// Whether `upstream` takes a request `priority` (until it has refused one).
    pub fn takes_priority(&self, upstream: usize) -> bool {
        !self.priority_refused[upstream].load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that `upstream` refused a `priority`; true the first time.
    pub fn refuse_priority(&self, upstream: usize) -> bool {
        !self.priority_refused[upstream].swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// In-flight requests the worker can have across the upstreams that are up now (a down
    /// upstream's slots do not count, so claiming ahead stops while it is down).
    pub fn total_capacity(&self) -> usize {
        let health = self.upstreams.health();
        self.limits.iter().enumerate().filter(|(i, _)| health.is_up(*i)).map(|(_, l)| l.current()).sum()
    }

    /// The in-flight limit of each upstream.
    pub fn limits(&self) -> &[Arc<Limit>] {
        &self.limits
    }

    /// Asks the upstreams for their models now and remembers the answer. An upstream that does
    /// not answer keeps its last known models (see `Upstreams::discover`), so a slow discovery
    /// never unloads a model or reroutes its work.
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
        // Requests waiting for a route look again.
        self.upstreams.health().notify();
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

    /// An upstream that serves `model` and is up, the one with the most free room — other than
    /// `avoid` (where the request just failed) when there is another; `None` when none is up
    /// (every server of the model is down, or none is known to serve it yet). Never another
    /// model's upstream: a request waits rather than go where its model is not served.
    pub fn pick(&self, model: &str, avoid: Option<usize>) -> Option<usize> {
        let map = self.map.read().unwrap();
        let health = self.upstreams.health();
        let routes = map.routes.get(model)?;
        let up = || routes.iter().copied().filter(|&i| health.is_up(i));
        let room = |&i: &usize| self.limits[i].available();
        up().filter(|&i| Some(i) != avoid).max_by_key(room).or_else(|| up().max_by_key(room))
    }

    pub async fn acquire(&self, upstream: usize) -> Slot {
        self.limits[upstream].acquire().await
    }
}
