//! Sentry initialisation from the environment: `SENTRY_DSN` (unset: off, nothing is sent and
//! nothing fails), `SENTRY_ENVIRONMENT`, `SENTRY_RELEASE`, `SENTRY_TRACES_SAMPLE_RATE`.

use std::borrow::Cow;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Starts the Sentry client when `SENTRY_DSN` is set; the guard flushes events on drop.
pub fn init() -> Option<sentry::ClientInitGuard> {
    let dsn = env("SENTRY_DSN")?;
    let dsn = match dsn.parse() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SENTRY_DSN is not a valid DSN ({e}); Sentry stays off");
            return None;
        }
    };
    let traces_sample_rate = env("SENTRY_TRACES_SAMPLE_RATE").and_then(|r| r.parse::<f32>().ok()).unwrap_or(0.0);
    let release = env("SENTRY_RELEASE")
        .map(Cow::Owned)
        .unwrap_or(Cow::Borrowed(concat!("vllm-batch@", env!("CARGO_PKG_VERSION"))));
    Some(sentry::init(sentry::ClientOptions {
        dsn: Some(dsn),
        environment: env("SENTRY_ENVIRONMENT").map(Cow::Owned),
        release: Some(release),
        traces_sample_rate,
        attach_stacktrace: true,
        ..Default::default()
    }))
}

/// Whether Sentry is on in this process.
pub fn enabled() -> bool {
    sentry::Hub::current().client().is_some_and(|c| c.is_enabled())
}
