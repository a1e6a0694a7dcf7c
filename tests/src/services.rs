//! Starting the real services: the OIDC provider, Redis, the sidecar, Envoy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::env;
use crate::process::{Proc, free_port, wait_until};

/// How long a service may take to become ready (a cold 2-core CI machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A demo/test user at the IdP.
#[derive(Clone, Debug)]
pub struct User {
    /// Login name (= `sub`).
    pub name: String,
    /// Password.
    pub password: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub full_name: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl User {
    /// A user `name` with password `<name>-password` and email `<name>@example.com`.
    pub fn new(name: &str, groups: &[&str]) -> User {
        User {
            name: name.to_owned(),
            password: format!("{name}-password"),
            email: format!("{name}@example.com"),
            full_name: format!("{} Example", capitalize(name)),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }
}

/// `alice` → `Alice` (display names as a person would write them).
fn capitalize(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The real `oidc-provider` (tests/idp/idp.mjs).
pub struct Idp {
    /// The process.
    pub proc: Proc,
    /// Issuer URL (`http://127.0.0.1:<port>`).
    pub issuer: String,
    http: reqwest::Client,
}

impl Idp {
    /// Start it with one confidential client (`portcullis`/`portcullis-secret`) whose
    /// redirect URI is `callback`, and `users`. With `issuer_slash` the issuer is
    /// `http://127.0.0.1:<port>/` (trailing slash, as Auth0 and others publish it), else
    /// `http://127.0.0.1:<port>` (as Azure, Okta, Keycloak do). Either way the config must
    /// name the issuer exactly as [`Idp::issuer`] says.
    pub async fn start(
        dir: &Path,
        port: u16,
        callback: &str,
        users: &[User],
        issuer_slash: bool,
    ) -> Result<Idp> {
        let idp = env::idp_dir()?;
        let mut cmd = Command::new("node");
        cmd.arg(idp.join("idp.mjs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-token-ttl", "60", "--id-token-ttl", "60"])
            .arg("--issuer")
            .arg(format!(
                "http://127.0.0.1:{port}{}",
                if issuer_slash { "/" } else { "" }
            ))
            .arg("--client")
            .arg(format!("portcullis:portcullis-secret:{callback}"))
            .env("IDP_EXIT_ON_STDIN_CLOSE", "1");
        for u in users {
            cmd.arg("--user").arg(format!(
                "{}:{}:{}:{}:{}",
                u.name,
                u.password,
                u.email,
                u.full_name,
                u.groups.join(",")
            ));
        }
        let mut proc = Proc::spawn("idp", cmd, dir)?;
        let issuer = proc
            .wait_log(START_TIMEOUT, |l| {
                l.strip_prefix("READY ").map(|s| s.trim().to_owned())
            })
            .await?;
        Ok(Idp {
            proc,
            issuer,
            http: reqwest::Client::new(),
        })
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let base = self.issuer.trim_end_matches('/');
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("IdP admin {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Remove `user` from `group` at the IdP.
    pub async fn remove_group(&self, user: &str, group: &str) -> Result<()> {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/admin/users/{user}/groups/{group}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Add `user` to `group` at the IdP.
    pub async fn add_group(&self, user: &str, group: &str) -> Result<()> {
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/users/{user}/groups/{group}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Counters (`grants`, `userinfo`, `logins`, …).
    pub async fn stats(&self) -> Result<Value> {
        self.admin(reqwest::Method::GET, "/admin/stats", None).await
    }
}

/// A real `redis-server` (no persistence) on a free port.
pub struct Redis {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Start it.
    pub async fn start(dir: &Path) -> Result<Redis> {
        let port = free_port()?;
        let mut cmd = Command::new(env::redis_server()?);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir);
        let mut proc = Proc::spawn("redis", cmd, dir)?;
        proc.wait_log(START_TIMEOUT, |l| {
            l.contains("Ready to accept connections").then_some(())
        })
        .await?;
        Ok(Redis { proc, port })
    }

    /// Connection string for the config.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// The real sidecar binary.
pub struct Sidecar {
    /// The process.
    pub proc: Proc,
    /// Its listen port.
    pub port: u16,
}

impl Sidecar {
    /// Start `sidecar --config <config>` listening on `port` (`SIDECAR_ADDRESS` overrides
    /// the file, Pomerium-style, so replicas can share one config).
    pub async fn start(name: &str, dir: &Path, config: &Path, port: u16) -> Result<Sidecar> {
        let mut cmd = Command::new(env::bin("sidecar")?);
        cmd.arg("--config")
            .arg(config)
            .env("SIDECAR_ADDRESS", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let mut proc = Proc::spawn(name, cmd, dir)?;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            proc.check_alive()?;
            if std::time::Instant::now() > deadline {
                bail!(
                    "sidecar {name} not healthy within {START_TIMEOUT:?} (log {})",
                    proc.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(Sidecar { proc, port })
    }
}

/// Real Envoy (`--concurrency 2`) running a bootstrap made by `envoy-config`.
pub struct Envoy {
    /// The process.
    pub proc: Proc,
    /// Admin port.
    pub admin_port: u16,
    /// The bootstrap file.
    pub bootstrap: PathBuf,
}

impl Envoy {
    /// Generate the bootstrap for `config` with the real `envoy-config` CLI and start Envoy.
    /// `extra_addresses`: more `ip:port` for the listener; `sidecars`: replica ports.
    /// `hand_written`: remove the app routes' names, as in a hand-written config, so the
    /// filter must match routes itself (its fallback).
    pub async fn start(
        dir: &Path,
        config: &Path,
        extra_addresses: &[String],
        sidecars: &[u16],
        extra_args: &[&str],
        hand_written: bool,
    ) -> Result<Envoy> {
        let admin_port = free_port()?;
        let bootstrap = dir.join("envoy.yaml");
        let mut generate = Command::new(env::bin("envoy-config")?);
        generate
            .arg("bootstrap")
            .arg("--config")
            .arg(config)
            .arg("--wasm")
            .arg(env::wasm()?)
            .arg("-o")
            .arg(&bootstrap)
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(extra_args);
        for a in extra_addresses {
            generate.arg("--additional-address").arg(a);
        }
        for p in sidecars {
            generate
                .arg("--sidecar-endpoint")
                .arg(format!("127.0.0.1:{p}"));
        }
        if hand_written {
            generate.args(["--format", "json"]);
        }
        let out = generate.output().context("running envoy-config")?;
        if !out.status.success() {
            bail!(
                "envoy-config failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if hand_written {
            strip_route_names(&bootstrap)?;
        }
        let mut cmd = Command::new(env::envoy()?);
        cmd.arg("-c")
            .arg(&bootstrap)
            .args([
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ])
            .args(["--component-log-level", "wasm:debug"]);
        let mut proc = Proc::spawn("envoy", cmd, dir)?;
        let ready = format!("http://127.0.0.1:{admin_port}/ready");
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(&ready).send().await
                && r.status().is_success()
            {
                break;
            }
            proc.check_alive()?;
            if std::time::Instant::now() > deadline {
                bail!(
                    "envoy not ready within {START_TIMEOUT:?} (log {})",
                    proc.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(Envoy {
            proc,
            admin_port,
            bootstrap,
        })
    }

    /// Connections accepted so far by each Envoy worker (`listener.*.worker_N.downstream_cx_total`
    /// from the admin interface), indexed by worker.
    pub async fn worker_connections(&self) -> Result<Vec<u64>> {
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=worker_[0-9]+\\.downstream_cx_total",
            self.admin_port
        );
        let text = reqwest::get(&url).await?.text().await?;
        let mut per_worker: Vec<u64> = Vec::new();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            if !name.starts_with("listener.") || name.starts_with("listener.admin") {
                continue;
            }
            let Some(idx) = name
                .split('.')
                .find_map(|part| part.strip_prefix("worker_"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if per_worker.len() <= idx {
                per_worker.resize(idx + 1, 0);
            }
            if let (Some(slot), Ok(v)) = (per_worker.get_mut(idx), value.trim().parse::<u64>()) {
                *slot += v;
            }
        }
        Ok(per_worker)
    }

    /// Wait until `url` (through Envoy) answers `status` on 8 consecutive fresh
    /// connections — e.g. the sign-in redirect once every worker's filter has its bundle
    /// (each worker loads it on its own).
    pub async fn wait_status(url: &str, status: u16, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            // Loopback test servers: Envoy's self-signed fallback certificate.
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()?;
        let streak = std::sync::atomic::AtomicU32::new(0);
        wait_until(
            &format!("{url} to answer {status} on every worker"),
            timeout,
            || {
                let client = client.clone();
                let streak = &streak;
                async move {
                    let r = client.get(url).send().await?;
                    if r.status().as_u16() == status {
                        let n = streak.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        Ok((n >= 8).then_some(()))
                    } else {
                        streak.store(0, std::sync::atomic::Ordering::Relaxed);
                        Ok(None)
                    }
                }
            },
        )
        .await
    }
}

/// Drop the `name` of every route that is not a sidecar route (a hand-written config has
/// no bundle route ids).
fn strip_route_names(bootstrap: &Path) -> Result<()> {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("match")
                    && m.contains_key("route")
                    && m.get("name").and_then(Value::as_str) != Some("portcullis-sidecar")
                {
                    m.remove("name");
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(bootstrap)?)?;
    walk(&mut v);
    std::fs::write(bootstrap, serde_json::to_string_pretty(&v)?)?;
    Ok(())
}
