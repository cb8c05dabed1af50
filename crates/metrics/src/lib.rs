//! Observability from one place: logging initialisation today; the Prometheus registry, the
//! NVML sampler and Sentry join it in the instrumentation work.

pub mod logging;

pub use logging::{init_logging, LogFormat};
