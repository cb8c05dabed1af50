//! Observability from one place: the Prometheus registry with every metric, JSON logging (and
//! its log files), Sentry, and the NVML GPU sampler.

pub mod gpu;
pub mod logging;
pub mod registry;
pub mod sentry;
pub mod throughput;

pub use logging::{init_logging, LogFormat, LogGuard, LogOptions, Service};
pub use registry::{init_upstreams, metrics, Metrics, CONTENT_TYPE};
