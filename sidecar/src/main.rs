//! `sidecar --config config.yaml`: the Portcullis sidecar.

use anyhow::{Context, Result, anyhow, bail};
use sidecar::settings::{LogFormat, Settings};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: sidecar --config config.yaml [--print-ext-authz-token]";

/// The command line: the config file, and whether to only print the ext_authz caller token.
fn args() -> Result<(PathBuf, bool)> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut print_token = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => path = args.next().map(PathBuf::from),
            s if s.starts_with("--config=") => {
                path = s.strip_prefix("--config=").map(PathBuf::from)
            }
            "--print-ext-authz-token" => print_token = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` ({USAGE})"),
        }
    }
    Ok((
        path.with_context(|| format!("missing --config <file> ({USAGE})"))?,
        print_token,
    ))
}

/// Load the config with the shared loader (Pomerium options, environment overrides).
fn load_config(path: &Path) -> Result<policy_compiler::config::Loaded> {
    policy_compiler::config::load_file(path).map_err(|d| {
        anyhow!(
            "invalid configuration:\n{}",
            sidecar::bundle::diagnostics(&d)
        )
    })
}

/// `LOG_FORMAT=json|text` (Pomerium has no such option; text by default).
fn log_format() -> Result<LogFormat> {
    match std::env::var("LOG_FORMAT").ok().as_deref() {
        None | Some("") | Some("text") | Some("console") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => bail!("LOG_FORMAT must be `json` or `text`, not `{other}`"),
    }
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never in log files or collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (path, print_token) = args()?;
    let loaded = load_config(&path)?;
    let mut settings = Settings::from_config(&loaded.config, Some(path.clone()))?;
    if print_token {
        // The value proxies send in `x-portcullis-ext-authz-token` (see docs/ext_authz.md).
        println!("{}", settings.api_token());
        return Ok(());
    }
    settings.log_format = log_format()?;
    init_logging(&settings);
    for w in loaded.warnings.iter() {
        tracing::warn!("{w}");
    }
    run(settings, &loaded.config).await
}

async fn run(settings: Settings, config: &policy_compiler::config::Config) -> Result<()> {
    use sidecar::bundle::{self, Bundle, BundleHolder, BundleSource};
    let store = sidecar::databroker::open(&settings.storage)
        .await
        .context("opening the databroker")?;
    tracing::info!(backend = store.backend(), "databroker ready");
    if store.backend() == "memory" {
        tracing::info!(
            "sessions are kept in memory: a restart signs everyone out (use databroker_storage_type: redis to keep them)"
        );
    }
    let (source, initial) = match (&settings.policy_bundle_file, &settings.config_file) {
        (Some(f), _) => {
            let source = BundleSource::File(f.clone());
            let b = bundle::load(&source).context("loading policy_bundle_file")?;
            (source, b)
        }
        (None, Some(c)) => (
            BundleSource::Config(c.clone()),
            Bundle::from_config(config).context("compiling the routes' policy")?,
        ),
        (None, None) => bail!("no policy source: set `policy_bundle_file` or pass --config"),
    };
    tracing::info!(bundle_version = %initial.version, "policy bundle loaded");
    let setup = sidecar::auth::setup(&settings)
        .await
        .context("setting up the login flow")?;
    let address = settings.address;
    let metrics_address = settings.metrics_address;
    let ext_authz_address = settings.ext_authz_address;
    let state = sidecar::AppState::new(sidecar::AppParts {
        settings,
        store,
        idps: setup.idps,
        signer: setup.signer,
        bundle: BundleHolder::new(initial),
        login: Some(setup.login),
    });
    let _tasks = sidecar::spawn_background(&state, source);
    if let Some(addr) = metrics_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics_address {addr}"))?;
        let app = sidecar::metrics_router(state.clone());
        tracing::info!(%addr, "metrics listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    if let Some(addr) = ext_authz_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding ext_authz_address {addr}"))?;
        let listener = nodelay(listener);
        let app = sidecar::ext_authz::router(state.clone());
        tracing::info!(%addr, "ext_authz listening (Envoy HTTP + gRPC, nginx auth_request)");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "ext_authz listener failed");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, "sidecar listening");
    axum::serve(nodelay(listener), sidecar::router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

/// `TCP_NODELAY` on every accepted connection. Answers are written in several small
/// pieces (HTTP/2 headers, data and trailers of a gRPC check; an HTTP/1.1 head and body):
/// with Nagle's algorithm the last piece waits for the proxy's delayed ACK, ~40 ms per
/// check on Linux (measured with Envoy's gRPC ext_authz in `make bench`).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    })
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
