//! Prometheus metrics (text exposition format 0.0.4), served on `metrics_address`.
//!
//! A handful of counters and gauges do not justify a metrics framework: each is an
//! atomic, rendered by [`Metrics::render`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// All sidecar metrics. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<MetricsInner>);

/// The metrics themselves.
#[derive(Debug, Default)]
pub struct MetricsInner {
    /// Successful logins (sessions created). Incremented by the login flow.
    pub logins: Counter,
    /// Failed logins (bad state, IdP error...). Incremented by the login flow.
    pub login_failures: Counter,
    /// Sign-outs.
    pub sign_outs: Counter,
    /// Successful OAuth token refreshes.
    pub token_refreshes: Counter,
    /// Failed token refreshes (any reason).
    pub token_refresh_failures: Counter,
    /// Successful user-info refreshes.
    pub user_info_refreshes: Counter,
    /// Failed user-info refreshes (any reason).
    pub user_info_refresh_failures: Counter,
    /// Sessions terminated by the identity manager (invalid_grant, disabled user).
    pub sessions_terminated: Counter,
    /// Live sessions (sampled).
    pub sessions: Gauge,
    /// Newest databroker version this process has seen.
    pub databroker_version: Gauge,
    /// Milliseconds between a change being committed and this process noticing it.
    pub change_stream_lag_ms: Gauge,
    /// Identity JWTs signed (cache misses).
    pub jwt_signatures: Counter,
    /// Internal API session lookups.
    pub session_lookups: Counter,
    /// Policy bundle reloads that failed (the old bundle stays).
    pub bundle_reload_failures: Counter,
}

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;
    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

impl Metrics {
    /// Render all metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let m = &self.0;
        let mut out = String::with_capacity(2048);
        let counters: [(&str, &str, &Counter); 11] = [
            ("portcullis_logins_total", "Successful logins.", &m.logins),
            (
                "portcullis_login_failures_total",
                "Failed logins.",
                &m.login_failures,
            ),
            ("portcullis_sign_outs_total", "Sign-outs.", &m.sign_outs),
            (
                "portcullis_token_refreshes_total",
                "Successful OAuth token refreshes.",
                &m.token_refreshes,
            ),
            (
                "portcullis_token_refresh_failures_total",
                "Failed OAuth token refreshes.",
                &m.token_refresh_failures,
            ),
            (
                "portcullis_user_info_refreshes_total",
                "Successful user-info refreshes.",
                &m.user_info_refreshes,
            ),
            (
                "portcullis_user_info_refresh_failures_total",
                "Failed user-info refreshes.",
                &m.user_info_refresh_failures,
            ),
            (
                "portcullis_sessions_terminated_total",
                "Sessions terminated by the identity manager.",
                &m.sessions_terminated,
            ),
            (
                "portcullis_identity_jwt_signatures_total",
                "Identity JWTs signed (cache misses).",
                &m.jwt_signatures,
            ),
            (
                "portcullis_session_lookups_total",
                "Internal API session lookups.",
                &m.session_lookups,
            ),
            (
                "portcullis_bundle_reload_failures_total",
                "Failed policy bundle reloads.",
                &m.bundle_reload_failures,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        let gauges: [(&str, &str, &Gauge); 3] = [
            (
                "portcullis_sessions",
                "Live sessions in the databroker.",
                &m.sessions,
            ),
            (
                "portcullis_databroker_version",
                "Newest databroker version seen.",
                &m.databroker_version,
            ),
            (
                "portcullis_change_stream_lag_milliseconds",
                "Delay between a databroker change and this process seeing it.",
                &m.change_stream_lag_ms,
            ),
        ];
        for (name, help, g) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.logins.inc();
        m.logins.inc();
        m.sessions.set(5);
        let text = m.render();
        assert!(
            text.contains("# TYPE portcullis_logins_total counter\nportcullis_logins_total 2\n")
        );
        assert!(text.contains("portcullis_sessions 5\n"));
        assert!(text.contains("portcullis_token_refresh_failures_total 0\n"));
    }
}
