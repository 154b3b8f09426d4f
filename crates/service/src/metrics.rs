//! Prometheus metrics: HTTP request counts and latencies by route, and the process's memory,
//! CPU use, open files and start time (read from `/proc` through `procfs` when scraped).
//!
//! Every label value comes from a bounded set, never from the request as sent: the method is
//! one of [`KNOWN_METHODS`] or `other`, the route is the template of a route the server defines
//! (or `unmatched`), the code is a status the server produced. A client sending made-up methods
//! or paths therefore cannot grow the families.

use procfs::WithCurrentSystemInfo as _;
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The methods HTTP defines, used as they are in the `method` label.
pub const KNOWN_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"];

/// The `method` label of a request method: the method itself if HTTP defines it, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().copied().find(|known| *known == method).unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// From [`method_label`].
    pub method: &'static str,
    /// A route template (`/_matrix/client/v3/rooms/{room_id}/send/...`) or `unmatched`.
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// From [`method_label`].
    pub method: &'static str,
    /// A route template or `unmatched`.
    pub route: String,
}

/// The metric families Myelin exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram>,
    /// Events stored without push actions because evaluating push rules for them failed.
    pub push_evaluation_failures: Counter,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "myelin_http_requests",
            "HTTP requests served, by route and status",
            http_requests.clone(),
        );
        let http_request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "myelin_http_request_duration_seconds",
            "Time to produce the response, by route",
            http_request_duration.clone(),
        );
        let push_evaluation_failures = Counter::default();
        registry.register(
            "myelin_push_evaluation_failures",
            "Events stored without push actions because push rule evaluation failed",
            push_evaluation_failures.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_memory.clone(),
        );
        let virtual_memory = Gauge::default();
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            virtual_memory.clone(),
        );
        let cpu_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "process_cpu_seconds_total",
            "Total user and system CPU time in seconds",
            cpu_seconds.clone(),
        );
        let open_fds = Gauge::default();
        registry.register("process_open_fds", "Number of open file descriptors", open_fds.clone());
        let start_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the UNIX epoch in seconds",
            start_time.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_request_duration,
            push_evaluation_failures,
            resident_memory,
            virtual_memory,
            cpu_seconds,
            open_fds,
            start_time,
        }
    }

    /// The text exposition format, with the process figures freshly read.
    pub fn render(&self) -> String {
        self.refresh_process();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn refresh_process(&self) {
        // `procfs` reads the clock rate and page size from the system (sysconf), not assumed.
        let Ok(process) = procfs::process::Process::myself() else { return };
        if let Ok(stat) = process.stat() {
            let ticks_per_second = procfs::ticks_per_second() as f64;
            self.cpu_seconds.set((stat.utime + stat.stime) as f64 / ticks_per_second);
            self.virtual_memory.set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
            self.resident_memory.set(i64::try_from(stat.rss_bytes().get()).unwrap_or(i64::MAX));
            if let Ok(boot_time) = procfs::boot_time_secs() {
                let started = boot_time as f64 + stat.starttime as f64 / ticks_per_second;
                self.start_time.set(started);
            }
        }
        if let Ok(count) = process.fd_count() {
            self.open_fds.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_the_known_methods_or_other() {
        for method in KNOWN_METHODS {
            assert_eq!(method_label(method), *method);
        }
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label("PROPFIND"), "other");
        assert_eq!(method_label(&"X".repeat(200_000)), "other");
    }

    /// The value of an unlabelled sample in the text exposition format.
    fn sample(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    }

    #[test]
    fn process_figures_are_plausible() {
        // Touch 16 MiB so the resident size has something to count.
        let ballast = vec![1u8; 16 << 20];
        let text = Metrics::new().render();
        let rss = sample(&text, "process_resident_memory_bytes");
        let virt = sample(&text, "process_virtual_memory_bytes");
        assert!(rss >= 16.0 * 1024.0 * 1024.0, "RSS counts the touched ballast: {rss}");
        assert!(rss < 64.0 * 1024.0 * 1024.0 * 1024.0, "RSS is bytes, not something larger: {rss}");
        assert!(virt >= rss, "virtual {virt} >= resident {rss}");
        assert!(sample(&text, "process_open_fds") >= 3.0, "at least the standard streams");
        assert!(sample(&text, "process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = sample(&text, "process_start_time_seconds");
        assert!(started > now - 86_400.0 * 365.0 && started <= now + 1.0, "start {started}, now {now}");
        assert_eq!(ballast.iter().map(|b| *b as usize).sum::<usize>(), 16 << 20);
    }
}
