//! Prometheus metrics: HTTP request counts and latencies by route, and the process's memory and
//! CPU use (read from `/proc` when scraped).
//!
//! Every label value comes from a bounded set, never from the request as sent: the method is
//! one of [`KNOWN_METHODS`] or `other`, the route is the template of a route the server defines
//! (or `unmatched`), the code is a status the server produced. A client sending made-up methods
//! or paths therefore cannot grow the families.

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
    start_time: Gauge,
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
        let start_time = Gauge::default();
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the UNIX epoch",
            start_time.clone(),
        );
        start_time.set(i64::try_from(crate::util::now_ms() / 1000).unwrap_or(0));
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
        let _ = &self.start_time;
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
        // Fields after the parenthesised command name; see proc(5).
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime is field 14, stime 15, vsize 23, rss 24.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let ticks_per_second = 100.0;
        self.cpu_seconds.set((field(14) + field(15)) as f64 / ticks_per_second);
        self.virtual_memory.set(i64::try_from(field(23)).unwrap_or(i64::MAX));
        let page_size = 4096u64;
        self.resident_memory.set(i64::try_from(field(24) * page_size).unwrap_or(i64::MAX));
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(i64::try_from(entries.count()).unwrap_or(0));
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
}
