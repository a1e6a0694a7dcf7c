//! `make demo`: the OIDC provider, the sidecar, Envoy with the filter, and an upstream app
//! that shows what it received — one supervising process; Ctrl-C stops everything.
//!
//! Usage: `portcullis-demo [--config examples/demo/config.yaml]`. The config's ports are
//! the demo's: Envoy 127.0.0.1-4:8000, sidecar 5080, IdP 8900, upstream 8100, Envoy admin
//! 9901 (`--redis` also starts redis-server on 6379 for examples/redis/config.yaml).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use portcullis_tests::env;
use portcullis_tests::process::wait_http;
use portcullis_tests::services::{Envoy, Idp, Sidecar, User};
use portcullis_tests::upstream::Upstream;

const ENVOY_PORT: u16 = 8000;
const SIDECAR_PORT: u16 = 5080;
const IDP_PORT: u16 = 8900;
const UPSTREAM_PORT: u16 = 8100;

#[tokio::main]
async fn main() -> Result<()> {
    let mut config = env::root().join("examples/demo/config.yaml");
    let mut redis = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = PathBuf::from(args.next().context("--config needs a file")?),
            "--redis" => redis = true,
            "-h" | "--help" => {
                println!("usage: portcullis-demo [--config examples/demo/config.yaml] [--redis]");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`"),
        }
    }
    let config =
        std::fs::canonicalize(&config).with_context(|| format!("config {}", config.display()))?;
    let dir = env::output_dir("demo")?;
    println!("Starting the Portcullis demo (logs in {}) …", dir.display());

    let users = [
        User::new("alice", &["admins", "staff"]),
        User::new("bob", &["staff"]),
    ];
    let callback = format!("http://127.0.0.1:{ENVOY_PORT}/oauth2/callback");
    // The demo config names the issuer `http://127.0.0.1:8900/` (with the slash).
    let idp = Idp::start(&dir, IDP_PORT, &callback, &users, true)
        .await
        .context("starting the OIDC provider (tests/idp)")?;
    let _redis = if redis {
        let mut cmd = std::process::Command::new(env::redis_server()?);
        cmd.args([
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let mut p = portcullis_tests::process::Proc::spawn("redis", cmd, &dir)?;
        p.wait_log(Duration::from_secs(30), |l| {
            l.contains("Ready to accept connections").then_some(())
        })
        .await?;
        Some(p)
    } else {
        None
    };
    let upstream = Upstream::start(
        UPSTREAM_PORT,
        format!("http://127.0.0.2:{ENVOY_PORT}/.well-known/pomerium/jwks.json"),
    )
    .await
    .context("starting the upstream app on 127.0.0.1:8100")?;
    let sidecar = Sidecar::start("sidecar", &dir, &config, SIDECAR_PORT)
        .await
        .context("starting the sidecar")?;
    let extra: Vec<String> = (2..=4)
        .map(|i| format!("127.0.0.{i}:{ENVOY_PORT}"))
        .collect();
    let envoy = Envoy::start(&dir, &config, &extra, &[SIDECAR_PORT], &[], false)
        .await
        .context("starting Envoy")?;
    // Ready = every worker's filter has its bundle: a protected route answers with a
    // sign-in redirect on consecutive fresh connections.
    wait_http(
        &format!("http://127.0.0.2:{ENVOY_PORT}/"),
        Duration::from_secs(30),
    )
    .await?;
    Envoy::wait_status(
        &format!("http://127.0.0.2:{ENVOY_PORT}/"),
        302,
        Duration::from_secs(30),
    )
    .await
    .context("waiting for the filter to load the policy bundle")?;

    println!(
        "\nPortcullis demo is running (IdP {}, sidecar :{}, Envoy :{ENVOY_PORT}, app {}).\n\n\
         Open  http://127.0.0.2:{ENVOY_PORT}/          any signed-in user (shows headers + the verified identity JWT)\n\
         \x20     http://127.0.0.3:{ENVOY_PORT}/admin     needs group `admins` (alice yes, bob 403)\n\
         \x20     http://127.0.0.4:{ENVOY_PORT}/          public\n\
         \x20     http://127.0.0.2:{ENVOY_PORT}/.pomerium/ user info page + sign out\n\n\
         Log in as  alice / alice-password  (groups admins, staff)\n\
         \x20      or  bob / bob-password      (group staff)\n\n\
         Change a user at the IdP, e.g. remove alice from admins:\n\
         \x20 curl -X DELETE {}/admin/users/alice/groups/admins\n\
         (policy follows after the next user-info refresh).\n\nCtrl-C stops everything.",
        idp.issuer,
        sidecar.port,
        upstream.addr,
        idp.issuer.trim_end_matches('/')
    );
    let mut procs = vec![idp.proc, sidecar.proc, envoy.proc];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Ctrl-C (SIGINT) or SIGTERM: drop every child (each is killed on drop).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for p in &mut procs {
                    if let Err(e) = p.check_alive() {
                        eprintln!("{e:#}");
                        return Err(e);
                    }
                }
            }
        }
    }
    println!("\nstopping …");
    drop(procs);
    drop(upstream);
    Ok(())
}
