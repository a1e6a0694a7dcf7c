//! `envoy-config`: Envoy bootstrap or Istio manifests from a Pomerium `config.yaml`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use envoy_config::from_config::{self, Options};
use envoy_config::istio::{self, IstioOptions};
use envoy_config::model::SocketAddress;
use envoy_config::{bootstrap, to_yaml};
use policy_compiler::config::{Config, load_file};
use policy_compiler::eval::Engine;

#[derive(Parser)]
#[command(version, about = "Envoy bootstrap and Istio manifests for Portcullis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a complete Envoy bootstrap (listener, routes, clusters, the wasm filter).
    Bootstrap(BootstrapArgs),
    /// Write Istio manifests (WasmPlugin, sidecar Deployment/Service, VirtualServices).
    Istio(IstioArgs),
}

#[derive(clap::Args)]
struct Common {
    /// Pomerium config file (YAML or JSON); environment variables override it.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// A bundle built by `policy-compiler build` from the same config; by default the
    /// config is compiled here to learn the route ids.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BootstrapArgs {
    #[command(flatten)]
    common: Common,
    /// The filter module (`target/wasm32-wasip1/release/filter.wasm`).
    #[arg(long)]
    wasm: PathBuf,
    /// Output file (`-` for stdout).
    #[arg(long, short = 'o', default_value = "-")]
    output: String,
    /// Envoy admin address (keep it on loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_address: String,
    /// Another address the listener accepts on (repeatable), e.g. `127.0.0.2:8443`.
    #[arg(long = "additional-address")]
    additional_addresses: Vec<String>,
    /// Sidecar replica `host:port` (repeatable); default: `sidecar_address`.
    #[arg(long = "sidecar-endpoint")]
    sidecar_endpoints: Vec<String>,
    /// CA bundle for `https` upstreams without `tls_custom_ca`.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    ca_bundle: String,
    /// Embed the compiled bundle in the plugin configuration (the filter still follows
    /// newer versions from the sidecar).
    #[arg(long)]
    inline_bundle: bool,
    /// Filter `staleness_bound_secs`.
    #[arg(long)]
    staleness_bound_secs: Option<u64>,
    /// Filter `tick_period_ms`.
    #[arg(long)]
    tick_period_ms: Option<u64>,
    /// Output format (`yaml`, or `json` for tools; Envoy reads both).
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(clap::Args)]
struct IstioArgs {
    #[command(flatten)]
    common: Common,
    /// The filter: `oci://registry/image:tag`, `https://…/filter.wasm` or `file://…`.
    #[arg(long)]
    image: String,
    /// Output directory (created).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Namespace of everything generated.
    #[arg(long, default_value = "portcullis")]
    namespace: String,
    /// Sidecar container image.
    #[arg(long, default_value = "ghcr.io/portcullis/sidecar:latest")]
    sidecar_image: String,
    /// Sidecar replicas (more than one needs `databroker_storage_type: redis`).
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// WasmPlugin workload selector `key=value` (repeatable).
    #[arg(long = "selector", default_value = "istio=ingressgateway")]
    selector: Vec<String>,
    /// Gateway the VirtualServices bind to, `namespace/name` (repeatable).
    #[arg(long = "gateway", default_value = "istio-system/ingressgateway")]
    gateways: Vec<String>,
    /// The sidecar runs outside the mesh at `host:port` (emits a ServiceEntry instead of
    /// a Deployment/Service).
    #[arg(long)]
    external_sidecar: Option<String>,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("envoy-config: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bootstrap(a) => run_bootstrap(a),
        Command::Istio(a) => run_istio(a),
    }
}

fn socket_address(s: &str) -> Result<SocketAddress> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("`{s}` is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("`{s}`: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("`{s}`: missing host");
    }
    Ok(SocketAddress::new(host, port))
}

/// Load the config (printing its warnings) and the bundle's route ids, in config order.
fn load(common: &Common) -> Result<(Config, Vec<String>, Vec<u8>)> {
    let loaded = load_file(&common.config).map_err(|d| {
        anyhow::anyhow!(
            "invalid config:\n{}",
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    for w in loaded.warnings.iter() {
        eprintln!("{w}");
    }
    let bytes = match &common.bundle {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => compile(&loaded.config)?,
    };
    let engine = Engine::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("bad bundle: {e}"))?;
    let ids: Vec<String> = engine.routes().map(|r| r.id.to_owned()).collect();
    if ids.len() != loaded.config.routes.len() {
        bail!(
            "the bundle has {} routes but the config {}: rebuild the bundle from this config",
            ids.len(),
            loaded.config.routes.len()
        );
    }
    Ok((loaded.config, ids, bytes))
}

fn compile(config: &Config) -> Result<Vec<u8>> {
    let bundle = policy_compiler::compile::compile(config).map_err(|d| {
        anyhow::anyhow!(
            "policy does not compile:\n{}",
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    Ok(bundle.to_bytes())
}

fn absolute(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.display().to_string())
}

/// Write `text` to `path` readable by the owner only: it holds `shared_secret` and
/// `cookie_secret`.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn run_bootstrap(a: BootstrapArgs) -> Result<()> {
    let (config, ids, bundle) = load(&a.common)?;
    let opts = Options {
        wasm: absolute(&a.wasm)?,
        admin: socket_address(&a.admin_address)?,
        additional_addresses: a
            .additional_addresses
            .iter()
            .map(|s| socket_address(s))
            .collect::<Result<_>>()?,
        sidecar_endpoints: a
            .sidecar_endpoints
            .iter()
            .map(|s| socket_address(s))
            .collect::<Result<_>>()?,
        ca_bundle: a.ca_bundle,
        inline_bundle: a.inline_bundle.then(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&bundle)
        }),
        staleness_bound_secs: a.staleness_bound_secs,
        tick_period_ms: a.tick_period_ms,
    };
    let d = from_config::deployment(&config, &ids, &opts)?;
    let rendered = bootstrap::render(&d);
    let yaml = match a.format {
        Format::Yaml => to_yaml(&rendered)?,
        Format::Json => serde_json::to_string_pretty(&rendered)? + "\n",
    };
    if a.output == "-" {
        std::io::stdout().write_all(yaml.as_bytes())?;
    } else {
        write_private(Path::new(&a.output), &yaml)?;
    }
    Ok(())
}

fn run_istio(a: IstioArgs) -> Result<()> {
    let (config, ids, _) = load(&a.common)?;
    let config_yaml = std::fs::read_to_string(&a.common.config)
        .with_context(|| format!("reading {}", a.common.config.display()))?;
    // The WasmPlugin's cluster and authority are Istio's; the rest is as for Envoy.
    let d = from_config::deployment(&config, &ids, &Options::default())?;
    let selector = a
        .selector
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--selector `{s}` is not key=value"))
        })
        .collect::<Result<_>>()?;
    let o = IstioOptions {
        namespace: a.namespace,
        wasm_url: a.image,
        sidecar_image: a.sidecar_image,
        replicas: a.replicas,
        selector,
        gateways: a.gateways,
        external_sidecar: a
            .external_sidecar
            .as_deref()
            .map(socket_address)
            .transpose()?,
        config_yaml,
        plugin_config: d.wasm.configuration.clone(),
    };
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    for (name, v) in istio::render(&d, &o)? {
        let path = a.output.join(&name);
        write_private(&path, &to_yaml(&v)?)?;
        println!("{}", path.display());
    }
    Ok(())
}
