//! The server's counters, rendered as Prometheus text (exposition format 0.0.4) at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    /// Answered requests by (endpoint, HTTP status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens not evaluated: the start of the prompt was in its slot's cache.
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Jobs the engine is running.
    pub running: AtomicUsize,
    /// Sequence slots (KV caches of n_ctx positions each) the engine has made; they stay
    /// made between requests, for the prompts that share their start.
    pub slots: AtomicUsize,
    /// Sequence slots held by running jobs (0 when idle).
    pub slots_in_use: AtomicUsize,
    /// KV cache positions held by running jobs: their prompt and generated tokens (0 when
    /// idle).
    pub kv_positions_in_use: AtomicUsize,
    /// Jobs stopped before their end (client gone, or the server stopping).
    pub cancelled: AtomicU64,
    ttft: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound of `TTFT_BUCKETS` (not cumulative).
    counts: [u64; TTFT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn count_request(&self, endpoint: &'static str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *r.entry((endpoint, status)).or_default() += 1;
    }

    /// Requests answered so far at `endpoint` with `status`.
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        let r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        r.iter()
            .filter(|((e, s), _)| *e == endpoint && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn observe_first_token(&self, t: Duration) {
        let t = t.as_secs_f64();
        let mut h = self.ttft.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = TTFT_BUCKETS.iter().position(|&b| t <= b) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum += t;
    }

    /// The Prometheus text of every metric; `queued` is the number of waiting jobs.
    pub fn render(&self, queued: usize) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP rocmforge_{name} {help}");
            let _ = writeln!(out, "# TYPE rocmforge_{name} {kind}");
        };
        head(
            &mut out,
            "requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status.",
        );
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "rocmforge_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "prompt_tokens_total",
                "counter",
                "Prompt tokens of the requests the engine started.",
                load(&self.prompt_tokens),
            ),
            (
                "prompt_tokens_cached_total",
                "counter",
                "Prompt tokens taken from a sequence slot's cache instead of evaluated (a shared start).",
                load(&self.prompt_tokens_cached),
            ),
            (
                "generated_tokens_total",
                "counter",
                "Tokens generated.",
                load(&self.generated_tokens),
            ),
            (
                "requests_cancelled_total",
                "counter",
                "Requests stopped before their end (client disconnected, or the server stopping).",
                load(&self.cancelled),
            ),
            (
                "queue_length",
                "gauge",
                "Requests waiting for the engine.",
                queued as u64,
            ),
            (
                "requests_running",
                "gauge",
                "Requests the engine is running.",
                self.running.load(Ordering::Relaxed) as u64,
            ),
            (
                "sequence_slots",
                "gauge",
                "Sequence slots made (each a KV cache of n_ctx positions, kept between requests).",
                self.slots.load(Ordering::Relaxed) as u64,
            ),
            (
                "sequence_slots_in_use",
                "gauge",
                "Sequence slots held by running requests.",
                self.slots_in_use.load(Ordering::Relaxed) as u64,
            ),
            (
                "kv_positions_in_use",
                "gauge",
                "KV cache positions held by running requests (their prompt and generated tokens).",
                self.kv_positions_in_use.load(Ordering::Relaxed) as u64,
            ),
        ] {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "rocmforge_{name} {value}");
        }
        head(
            &mut out,
            "time_to_first_token_seconds",
            "histogram",
            "From a request's arrival to its first generated token.",
        );
        let h = self.ttft.lock().unwrap_or_else(|p| p.into_inner());
        let mut cumulative = 0;
        for (bound, n) in TTFT_BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "rocmforge_time_to_first_token_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "rocmforge_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "rocmforge_time_to_first_token_seconds_sum {}", h.sum);
        let _ = writeln!(
            out,
            "rocmforge_time_to_first_token_seconds_count {}",
            h.count
        );
        // The standard name of Prometheus' process collector, so that host memory can be
        // watched (a soak's "flat RSS") without access to the server's process.
        if let Some(bytes) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
        }
        out
    }
}

/// This process's resident memory (Linux: `VmRSS` of /proc/self/status), None where unknown.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.count_request("/v1/completions", 200);
        m.count_request("/v1/completions", 200);
        m.count_request("/v1/completions", 400);
        m.observe_first_token(Duration::from_millis(3));
        m.observe_first_token(Duration::from_millis(70));
        m.observe_first_token(Duration::from_secs(100));
        m.generated_tokens.store(7, Ordering::Relaxed);
        m.slots.store(3, Ordering::Relaxed);
        m.slots_in_use.store(1, Ordering::Relaxed);
        m.kv_positions_in_use.store(40, Ordering::Relaxed);
        let text = m.render(2);
        for line in [
            "rocmforge_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
            "rocmforge_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1",
            "rocmforge_generated_tokens_total 7",
            "rocmforge_queue_length 2",
            "rocmforge_sequence_slots 3",
            "rocmforge_sequence_slots_in_use 1",
            "rocmforge_kv_positions_in_use 40",
            "rocmforge_time_to_first_token_seconds_bucket{le=\"0.005\"} 1",
            "rocmforge_time_to_first_token_seconds_bucket{le=\"0.05\"} 1",
            "rocmforge_time_to_first_token_seconds_bucket{le=\"0.1\"} 2",
            "rocmforge_time_to_first_token_seconds_bucket{le=\"30\"} 2",
            "rocmforge_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3",
            "rocmforge_time_to_first_token_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert_eq!(m.requests("/v1/completions", 200), 2);
        if cfg!(target_os = "linux") {
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .and_then(|v| v.parse::<u64>().ok());
            assert!(rss.is_some_and(|b| b > 1 << 20), "{text}");
        }
    }
}
