//! The policy bundle the sidecar serves to filters (`GET /.portcullis/v1/bundle`).
//!
//! Source: `policy_bundle_file` if set (a precompiled bundle), otherwise the config
//! file's routes compiled with `policy_compiler`. The source is re-read when its mtime
//! changes (polled every second) and on SIGHUP; a new bundle that fails to load keeps
//! the old one in service and logs why. Filters learn of a new version through the
//! change stream's `bundle_version`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// One loaded bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The protobuf bytes, as served.
    pub bytes: Arc<[u8]>,
    /// The bundle's content version (its own `version` field, as the filter's engine
    /// reports it).
    pub version: String,
}

impl Bundle {
    /// Validate bundle bytes by decoding them with the evaluator the filter runs, and
    /// take the bundle's own content version (what the filter's engine reports).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let engine = policy_compiler::eval::Engine::from_bytes(&bytes)
            .map_err(|e| BundleError::Invalid(format!("not a valid policy bundle: {e}")))?;
        Ok(Bundle {
            version: engine.version().to_owned(),
            bytes: bytes.into(),
        })
    }

    /// Compile a checked configuration's routes into a bundle.
    pub fn from_config(config: &policy_compiler::config::Config) -> Result<Bundle, BundleError> {
        let bundle = policy_compiler::compile::compile(config)
            .map_err(|d| BundleError::Invalid(diagnostics(&d)))?;
        Bundle::from_bytes(bundle.to_bytes())
    }

    /// Unvalidated bytes, versioned by their SHA-256 (first 8 bytes, hex). For tests and
    /// embedding; loaders use [`Bundle::from_bytes`].
    pub fn new(bytes: Vec<u8>) -> Self {
        use sha2::{Digest, Sha256};
        let version: String = Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Bundle::unchecked(bytes, version)
    }

    /// Serve bytes as they are, under a given version (tests of the serving path,
    /// embedding). Nothing checks them.
    pub fn unchecked(bytes: Vec<u8>, version: impl Into<String>) -> Self {
        Bundle {
            bytes: bytes.into(),
            version: version.into(),
        }
    }
}

/// All diagnostics, one per line (file:line:col: message).
pub fn diagnostics(d: &policy_compiler::diag::Diagnostics) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a bundle could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the file failed.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid bundle, or the config does not compile.
    #[error("{0}")]
    Invalid(String),
}

/// Where bundles come from.
#[derive(Debug, Clone)]
pub enum BundleSource {
    /// A precompiled bundle file (`policy_bundle_file`).
    File(PathBuf),
    /// Compile the routes of this config file.
    Config(PathBuf),
    /// Fixed bytes (tests, embedding); never reloaded.
    Fixed,
}

impl BundleSource {
    fn path(&self) -> Option<&Path> {
        match self {
            BundleSource::File(p) | BundleSource::Config(p) => Some(p),
            BundleSource::Fixed => None,
        }
    }
}

/// The current bundle, shared by the internal API and the reloader.
#[derive(Clone)]
pub struct BundleHolder {
    tx: Arc<watch::Sender<Arc<Bundle>>>,
}

impl BundleHolder {
    /// A holder serving `initial`.
    pub fn new(initial: Bundle) -> Self {
        BundleHolder {
            tx: Arc::new(watch::Sender::new(Arc::new(initial))),
        }
    }

    /// The bundle in service.
    pub fn current(&self) -> Arc<Bundle> {
        self.tx.borrow().clone()
    }

    /// Notified whenever the bundle changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Bundle>> {
        self.tx.subscribe()
    }

    /// Put a new bundle in service (no-op if the version is unchanged).
    pub fn replace(&self, bundle: Bundle) -> bool {
        self.tx.send_if_modified(|cur| {
            if cur.version == bundle.version {
                false
            } else {
                *cur = Arc::new(bundle);
                true
            }
        })
    }
}

/// Load a bundle from its source.
pub fn load(source: &BundleSource) -> Result<Bundle, BundleError> {
    match source {
        BundleSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| BundleError::Io {
                path: path.clone(),
                source: e,
            })?;
            Bundle::from_bytes(bytes)
        }
        BundleSource::Config(path) => {
            let loaded = policy_compiler::config::load_file(path)
                .map_err(|d| BundleError::Invalid(diagnostics(&d)))?;
            for w in loaded.warnings.iter() {
                tracing::warn!("{w}");
            }
            Bundle::from_config(&loaded.config)
        }
        BundleSource::Fixed => Err(BundleError::Invalid(
            "a fixed bundle has no source".to_owned(),
        )),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload the bundle when its source changes (mtime polled every `poll`) or on SIGHUP.
/// Runs until the process ends.
pub async fn watch_source(
    holder: BundleHolder,
    source: BundleSource,
    metrics: crate::metrics::Metrics,
    poll: Duration,
) {
    let Some(path) = source.path().map(Path::to_path_buf) else {
        return;
    };
    let mut last = mtime(&path);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let by_signal = {
            let sleep = tokio::time::sleep(poll);
            match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = sleep => false,
                    _ = h.recv() => true,
                },
                None => {
                    sleep.await;
                    false
                }
            }
        };
        #[cfg(not(unix))]
        let by_signal = {
            tokio::time::sleep(poll).await;
            false
        };
        let now = mtime(&path);
        if !by_signal && now == last {
            continue;
        }
        last = now;
        reload(&holder, &source, &metrics);
    }
}

/// Reload once; on failure keep the bundle in service. Returns whether a new bundle
/// went into service.
pub fn reload(
    holder: &BundleHolder,
    source: &BundleSource,
    metrics: &crate::metrics::Metrics,
) -> bool {
    match load(source) {
        Ok(b) => {
            let version = b.version.clone();
            let changed = holder.replace(b);
            if changed {
                tracing::info!(bundle_version = %version, "policy bundle reloaded");
            }
            changed
        }
        Err(e) => {
            metrics.bundle_reload_failures.inc();
            tracing::error!(error = %e, kept = %holder.current().version, "policy bundle reload failed; keeping the current bundle");
            false
        }
    }
}
