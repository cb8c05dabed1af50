//! The NVML GPU sampler: reads each GPU's temperature, memory, utilization and power draw on a
//! dedicated thread (NVML calls block), publishes them as the `vllm_gpu_*` gauges and keeps the
//! latest readings for the verbose health endpoint. Without an NVML library or a GPU it warns
//! once and stays off: the GPU series are then absent, never zero.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use prometheus::{GaugeVec, IntGaugeVec};
use tokio_util::sync::CancellationToken;

/// The shortest sampling interval; shorter ones are raised to it (NVML's own utilization
/// window is longer than this anyway).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// One GPU's reading. A field NVML could not read for this GPU is `None`, and its series is
/// not exported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuReading {
    /// NVML's index of the GPU; also the `gpu` label of its series.
    pub index: u32,
    /// The product name, e.g. `NVIDIA H100 80GB HBM3` (empty if NVML could not say).
    pub name: String,
    /// The GPU's UUID, e.g. `GPU-…` (empty if NVML could not say).
    pub uuid: String,
    /// Die temperature in °C.
    pub temperature_celsius: Option<f64>,
    /// Memory allocated on the GPU, in bytes.
    pub memory_used_bytes: Option<f64>,
    /// Memory installed on the GPU, in bytes.
    pub memory_total_bytes: Option<f64>,
    /// Percent of the last sample period in which a kernel was running.
    pub utilization_percent: Option<f64>,
    /// Power draw in watts.
    pub power_watts: Option<f64>,
}

/// Where a sampler stands.
const STARTING: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;
const DISABLED: u8 = 3;

struct Inner {
    state: AtomicU8,
    latest: Mutex<Vec<GpuReading>>,
}

/// Samples every GPU through NVML in the background. Cheap to clone: clones share one sampler.
#[derive(Clone)]
pub struct GpuSampler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSampler").field("available", &self.available()).finish_non_exhaustive()
    }
}

impl GpuSampler {
    /// Loads NVML once and samples every `interval` (at least 100 ms), the first time right away,
    /// on a dedicated thread until `shutdown` is cancelled. With no NVML library or no GPU it
    /// logs one warning saying why and that GPU metrics are off, and never sets a GPU series.
    ///
    /// Loading NVML happens on that thread: `available()` is false until it has succeeded.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (it spawns a task that waits for `shutdown`).
    pub fn start(interval: Duration, shutdown: CancellationToken) -> GpuSampler {
        let inner = Arc::new(Inner { state: AtomicU8::new(STARTING), latest: Mutex::new(Vec::new()) });
        let interval = interval.max(MIN_INTERVAL);

        // The thread waits on this channel between samples; dropping the sender stops it.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // Cancelled when the thread ends, so the waiting task doesn't outlive it.
        let thread_done = CancellationToken::new();
        let done = thread_done.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = done.cancelled() => {}
            }
            drop(stop_tx);
        });

        // The thread logs through the caller's subscriber, global or scoped.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let thread_inner = inner.clone();
        let spawned = std::thread::Builder::new().name("gpu-sampler".into()).spawn(move || {
            let _done = thread_done.drop_guard();
            tracing::dispatcher::with_default(&dispatch, || {
                sample_loop(&thread_inner, &Gauges::global(), interval, &stop_rx);
            });
        });
        if let Err(e) = spawned {
            inner.state.store(UNAVAILABLE, Ordering::Release);
            off(format_args!("the sampler thread could not start ({e})"));
        }
        GpuSampler { inner }
    }

    /// A sampler that never reads anything (tests, or when disabled).
    pub fn disabled() -> GpuSampler {
        GpuSampler { inner: Arc::new(Inner { state: AtomicU8::new(DISABLED), latest: Mutex::new(Vec::new()) }) }
    }

    /// Whether NVML loaded and found at least one GPU.
    pub fn available(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == AVAILABLE
    }

    /// The latest readings, one per GPU read (empty when unavailable), for the verbose health
    /// endpoint.
    pub fn latest(&self) -> Vec<GpuReading> {
        self.inner.latest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The one warning of a sampler that is off.
fn off(why: impl Display) {
    tracing::warn!("GPU metrics are off: {why}");
}

/// The sampler thread: loads NVML, then samples until the stop channel closes.
fn sample_loop(inner: &Inner, gauges: &Gauges, interval: Duration, stop: &mpsc::Receiver<()>) {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(e) => {
            inner.state.store(UNAVAILABLE, Ordering::Release);
            off(format_args!("NVML could not be loaded ({e})"));
            return;
        }
    };
    let count = match nvml.device_count() {
        Ok(0) => {
            inner.state.store(UNAVAILABLE, Ordering::Release);
            off("NVML found no GPU");
            return;
        }
        Ok(n) => n,
        Err(e) => {
            inner.state.store(UNAVAILABLE, Ordering::Release);
            off(format_args!("NVML could not count the GPUs ({e})"));
            return;
        }
    };
    inner.state.store(AVAILABLE, Ordering::Release);
    tracing::info!(gpus = count, interval = ?interval, "NVML loaded; sampling GPU metrics");

    let mut identities: HashMap<u32, Identity> = HashMap::new();
    let mut previous: Vec<GpuReading> = Vec::new();
    let mut next = Instant::now();
    loop {
        let readings: Vec<GpuReading> =
            (0..count).filter_map(|index| read_device(&nvml, index, &mut identities)).collect();
        publish(gauges, &previous, &readings);
        *inner.latest.lock().unwrap_or_else(PoisonError::into_inner) = readings.clone();
        previous = readings;

        // A fixed cadence; after a slow sample, wait a whole interval rather than catch up.
        let now = Instant::now();
        next += interval;
        if next <= now {
            next = now + interval;
        }
        match stop.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::debug!("GPU sampler stopped");
}

/// A GPU's name and UUID, read until both are known.
#[derive(Default)]
struct Identity {
    name: Option<String>,
    uuid: Option<String>,
}

/// Logs a failed read at debug and turns it into `None`.
fn field<T>(index: u32, what: &str, r: Result<T, nvml_wrapper::error::NvmlError>) -> Option<T> {
    r.map_err(|e| tracing::debug!(gpu = index, error = %e, "NVML could not read the GPU's {what}")).ok()
}

/// Reads one GPU; `None` if NVML could not open it this time.
fn read_device(nvml: &Nvml, index: u32, identities: &mut HashMap<u32, Identity>) -> Option<GpuReading> {
    let device = field(index, "handle", nvml.device_by_index(index))?;
    let id = identities.entry(index).or_default();
    if id.name.is_none() {
        id.name = field(index, "name", device.name());
    }
    if id.uuid.is_none() {
        id.uuid = field(index, "UUID", device.uuid());
    }
    let memory = field(index, "memory", device.memory_info());
    Some(GpuReading {
        index,
        name: id.name.clone().unwrap_or_default(),
        uuid: id.uuid.clone().unwrap_or_default(),
        temperature_celsius: field(index, "temperature", device.temperature(TemperatureSensor::Gpu)).map(f64::from),
        memory_used_bytes: memory.as_ref().map(|m| m.used as f64),
        memory_total_bytes: memory.as_ref().map(|m| m.total as f64),
        utilization_percent: field(index, "utilization", device.utilization_rates()).map(|u| f64::from(u.gpu)),
        power_watts: field(index, "power", device.power_usage()).map(|mw| f64::from(mw) / 1000.0),
    })
}

/// Picks one field of a reading.
type Field = fn(&GpuReading) -> Option<f64>;

/// The GPU gauges this sampler writes.
struct Gauges {
    temperature: GaugeVec,
    memory_used: GaugeVec,
    memory_total: GaugeVec,
    utilization: GaugeVec,
    power: GaugeVec,
    info: IntGaugeVec,
}

impl Gauges {
    /// The process-wide ones of `metrics()`.
    fn global() -> Gauges {
        let m = crate::registry::metrics();
        Gauges {
            temperature: m.gpu_temperature.clone(),
            memory_used: m.gpu_memory_used.clone(),
            memory_total: m.gpu_memory_total.clone(),
            utilization: m.gpu_utilization.clone(),
            power: m.gpu_power.clone(),
            info: m.gpu_info.clone(),
        }
    }

    fn values(&self) -> [(&GaugeVec, Field); 5] {
        [
            (&self.temperature, |r| r.temperature_celsius),
            (&self.memory_used, |r| r.memory_used_bytes),
            (&self.memory_total, |r| r.memory_total_bytes),
            (&self.utilization, |r| r.utilization_percent),
            (&self.power, |r| r.power_watts),
        ]
    }
}

/// Sets the series of `current` and removes those of `previous` that are gone: a field that is
/// now `None`, a GPU no longer read, an identity that changed.
fn publish(gauges: &Gauges, previous: &[GpuReading], current: &[GpuReading]) {
    for r in current {
        let gpu = r.index.to_string();
        for (gauge, value) in gauges.values() {
            match value(r) {
                Some(v) => gauge.with_label_values(&[gpu.as_str()]).set(v),
                None => {
                    let _ = gauge.remove_label_values(&[gpu.as_str()]);
                }
            }
        }
        let was = previous.iter().find(|p| p.index == r.index);
        if let Some(old) = was.filter(|p| (&p.name, &p.uuid) != (&r.name, &r.uuid)) {
            let _ = gauges.info.remove_label_values(&[gpu.as_str(), &old.name, &old.uuid]);
        }
        if !r.name.is_empty() && !r.uuid.is_empty() {
            gauges.info.with_label_values(&[gpu.as_str(), &r.name, &r.uuid]).set(1);
        }
    }
    for old in previous.iter().filter(|p| !current.iter().any(|r| r.index == p.index)) {
        let gpu = old.index.to_string();
        for (gauge, _) in gauges.values() {
            let _ = gauge.remove_label_values(&[gpu.as_str()]);
        }
        let _ = gauges.info.remove_label_values(&[gpu.as_str(), &old.name, &old.uuid]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prometheus::{Encoder, Opts, Registry, TextEncoder};

    use super::*;

    /// A writer for a scoped subscriber that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// On a machine without NVML or a GPU (CI, this repo's dev boxes): one warning, no series.
    /// On a GPU machine: readings and series, no warning.
    #[tokio::test]
    async fn start_warns_once_and_sets_no_series_without_a_gpu() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let shutdown = CancellationToken::new();
        let sampler = GpuSampler::start(Duration::from_millis(100), shutdown.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while sampler.inner.state.load(Ordering::Acquire) == STARTING {
            assert!(Instant::now() < deadline, "NVML never finished loading");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Several intervals: a sampler that is off must stay quiet through them.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let text = crate::registry::metrics().encode();
        let logs = logs.text();
        let warnings = logs.matches("GPU metrics are off").count();

        if sampler.available() {
            assert_eq!(warnings, 0, "{logs}");
            let latest = sampler.latest();
            assert!(!latest.is_empty());
            assert!(latest.iter().all(|r| r.memory_total_bytes.is_some_and(|b| b > 0.0)), "{latest:?}");
            assert!(text.contains("vllm_gpu_memory_total_bytes{gpu=\"0\"}"), "{text}");
        } else {
            assert_eq!(warnings, 1, "{logs}");
            assert!(logs.contains("WARN"), "{logs}");
            assert!(sampler.latest().is_empty());
            assert!(!text.contains("vllm_gpu_temperature_celsius{"), "{text}");
            let samples: Vec<&str> = text.lines().filter(|l| l.starts_with("vllm_gpu_")).collect();
            assert!(samples.is_empty(), "{samples:?}");
        }
        shutdown.cancel();
    }

    #[test]
    fn disabled_reads_nothing() {
        let sampler = GpuSampler::disabled();
        assert!(!sampler.available());
        assert!(sampler.latest().is_empty());
        assert!(format!("{sampler:?}").contains("available: false"));
    }

    fn local_gauges() -> (Registry, Gauges) {
        let r = Registry::new();
        let gauge = |name: &str| {
            let g = GaugeVec::new(Opts::new(name, "test"), &["gpu"]).unwrap();
            r.register(Box::new(g.clone())).unwrap();
            g
        };
        let gauges = Gauges {
            temperature: gauge("vllm_gpu_temperature_celsius"),
            memory_used: gauge("vllm_gpu_memory_used_bytes"),
            memory_total: gauge("vllm_gpu_memory_total_bytes"),
            utilization: gauge("vllm_gpu_utilization_percent"),
            power: gauge("vllm_gpu_power_watts"),
            info: IntGaugeVec::new(Opts::new("vllm_gpu_info", "test"), &["gpu", "name", "uuid"]).unwrap(),
        };
        r.register(Box::new(gauges.info.clone())).unwrap();
        (r, gauges)
    }

    fn encode(r: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn reading(index: u32) -> GpuReading {
        GpuReading {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{index}"),
            temperature_celsius: Some(41.0),
            memory_used_bytes: Some(1_048_576.0),
            memory_total_bytes: Some(85_520_809_984.0),
            utilization_percent: Some(97.0),
            power_watts: Some(350.5),
        }
    }

    #[test]
    fn publish_sets_what_was_read_and_removes_what_is_gone() {
        let (registry, gauges) = local_gauges();
        let first = reading(0);
        let second = GpuReading { power_watts: None, ..reading(1) };
        publish(&gauges, &[], &[first.clone(), second.clone()]);
        let text = encode(&registry);
        for line in [
            "vllm_gpu_temperature_celsius{gpu=\"0\"} 41",
            "vllm_gpu_memory_used_bytes{gpu=\"0\"} 1048576",
            "vllm_gpu_memory_total_bytes{gpu=\"1\"} 85520809984",
            "vllm_gpu_utilization_percent{gpu=\"1\"} 97",
            "vllm_gpu_power_watts{gpu=\"0\"} 350.5",
            "vllm_gpu_info{gpu=\"1\",name=\"NVIDIA H100 80GB HBM3\",uuid=\"GPU-1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        // Power unsupported on GPU 1: absent, not zero.
        assert!(!text.contains("vllm_gpu_power_watts{gpu=\"1\"}"), "{text}");

        // GPU 0 loses its temperature, GPU 1 is no longer read.
        let later = GpuReading { temperature_celsius: None, ..first.clone() };
        publish(&gauges, &[first, second], &[later]);
        let text = encode(&registry);
        assert!(!text.contains("gpu=\"1\""), "{text}");
        assert!(!text.contains("vllm_gpu_temperature_celsius{"), "{text}");
        assert!(text.contains("vllm_gpu_power_watts{gpu=\"0\"} 350.5"), "{text}");
        assert!(text.contains("vllm_gpu_info{gpu=\"0\",name=\"NVIDIA H100 80GB HBM3\",uuid=\"GPU-0\"} 1"), "{text}");
    }

    #[test]
    fn readings_serialize_with_nulls_for_unread_fields() {
        let json = serde_json::to_value(GpuReading { power_watts: None, ..reading(0) }).unwrap();
        assert_eq!(json["index"], 0);
        assert_eq!(json["memory_total_bytes"], 85_520_809_984.0);
        assert!(json["power_watts"].is_null());
    }
}
