//! The `sidecar` binary itself: config loading, listeners, health, metrics, policy
//! reload on file change and SIGHUP, refusal of bad configs.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &std::path::Path) -> Sidecar {
    Sidecar(
        Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(config)
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready");
}

fn with_addresses(yaml: String, main: u16, metrics: u16) -> String {
    format!("sidecar_address: 127.0.0.1:{main}\nmetrics_address: 127.0.0.1:{metrics}\n{yaml}")
}

async fn bundle_version(client: &reqwest::Client, main: u16) -> String {
    let token = portcullis_common::api::api_token(&portcullis_common::Secret::from_bytes(SHARED));
    let r = client
        .get(format!("http://127.0.0.1:{main}/.portcullis/v1/bundle"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()[portcullis_common::api::HEADER_BUNDLE_VERSION]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn binary_serves_reloads_and_reports() {
    let dir = TempDir::new("bin");
    let cfg = dir.0.join("config.yaml");
    let (main, metrics) = (port(), port());
    std::fs::write(&cfg, with_addresses(config_yaml("admins"), main, metrics)).unwrap();
    let sidecar = start(&cfg);
    wait_ok(&format!("http://127.0.0.1:{main}/healthz")).await;
    wait_ok(&format!("http://127.0.0.1:{main}/readyz")).await;
    let client = reqwest::Client::new();

    // The internal API wants the token.
    let r = client
        .get(format!("http://127.0.0.1:{main}/.portcullis/v1/bundle"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v1 = bundle_version(&client, main).await;

    // Metrics on their own listener only.
    let text = client
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("portcullis_sessions 0"), "{text}");
    let r = client
        .get(format!("http://127.0.0.1:{main}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Editing the config recompiles the policy within a couple of seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &cfg,
        with_addresses(config_yaml("operators"), main, metrics),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut v2 = v1.clone();
    while v2 == v1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        v2 = bundle_version(&client, main).await;
    }
    assert_ne!(v2, v1, "config change not picked up");

    // SIGHUP reloads even when the file's mtime did not move.
    let mtime = std::fs::metadata(&cfg).unwrap().modified().unwrap();
    let since_epoch = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    let stamp = format!(
        "@{}.{:09}",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    );
    // New content with the old mtime, swapped in atomically (the poller never sees a
    // moved mtime).
    let tmp = dir.0.join("config.yaml.new");
    std::fs::write(&tmp, with_addresses(config_yaml("auditors"), main, metrics)).unwrap();
    let touched = Command::new("touch")
        .arg("-d")
        .arg(&stamp)
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(touched.success());
    std::fs::rename(&tmp, &cfg).unwrap();
    assert_eq!(std::fs::metadata(&cfg).unwrap().modified().unwrap(), mtime);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        bundle_version(&client, main).await,
        v2,
        "reloaded without a reason"
    );
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(sidecar.0.id().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut v3 = v2.clone();
    while v3 == v2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        v3 = bundle_version(&client, main).await;
    }
    assert_ne!(v3, v2, "SIGHUP did not reload the policy");
    let v2 = v3;

    // A broken edit keeps the running policy (and the process).
    std::fs::write(&cfg, "routes: [").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(bundle_version(&client, main).await, v2);
    let text = client
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("portcullis_bundle_reload_failures_total 0"),
        "{text}"
    );
}

#[test]
fn binary_refuses_bad_configs_with_a_clear_error() {
    let dir = TempDir::new("binbad");
    let cases = [
        ("routes: [", "invalid configuration"),
        // Without shared secrets the filters could never talk to this sidecar.
        (
            "authenticate_service_url: https://auth.example.com\nroutes: []\n",
            "shared_secret",
        ),
    ];
    for (i, (yaml, expect)) in cases.iter().enumerate() {
        let cfg = dir.0.join(format!("bad{i}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{yaml:?} → {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

async fn fetch_session(
    client: &reqwest::Client,
    main: u16,
    id: &str,
) -> Option<portcullis_common::api::SessionResponse> {
    use prost::Message;
    let token = portcullis_common::api::api_token(&portcullis_common::Secret::from_bytes(SHARED));
    let r = client
        .get(format!(
            "http://127.0.0.1:{main}/.portcullis/v1/session?id={id}&aud=app.example.com"
        ))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    portcullis_common::api::SessionResponse::decode(r.bytes().await.ok()?).ok()
}

#[tokio::test]
async fn binary_with_redis_loses_no_session_across_restarts() {
    let mut redis = RedisServer::start_persistent();
    // A session made by "another replica" (same shared secret, same Redis).
    let idp = FakeIdp::new();
    idp.add_user("user-bin", "bin@example.com", &["g1"]);
    let mut st = settings();
    st.storage = sidecar::settings::StorageSettings::Redis {
        connection_string: redis.url(),
        key_prefix: "portcullis:".into(),
    };
    let other = app(redis_store(&redis).await, idp.clone(), st);
    let s = login(&other, &idp, "user-bin", Default::default()).await;

    let dir = TempDir::new("binredis");
    let cfg = dir.0.join("config.yaml");
    let (main, metrics) = (port(), port());
    let yaml = format!(
        "databroker_storage_type: redis\ndatabroker_storage_connection_string: {}\n{}",
        redis.url(),
        with_addresses(config_yaml("g1"), main, metrics)
    );
    std::fs::write(&cfg, yaml).unwrap();
    let client = reqwest::Client::new();
    for round in 0..2 {
        let sidecar = start(&cfg);
        wait_ok(&format!("http://127.0.0.1:{main}/readyz")).await;
        let r = fetch_session(&client, main, &s.id).await.unwrap();
        assert!(r.found, "round {round}: session lost");
        let view = r.view.unwrap();
        assert_eq!(view.user_id, "user-bin");
        assert_eq!(view_strings(&view, "groups").unwrap(), vec!["g1"]);
        assert_eq!(r.identity_jwt.split('.').count(), 3, "a real signed JWT");
        if round == 0 {
            // Redis restarts under the running sidecar.
            redis.restart();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut found = false;
            while !found && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                found = fetch_session(&client, main, &s.id)
                    .await
                    .is_some_and(|r| r.found);
            }
            assert!(found, "session lost across a Redis restart");
        }
        drop(sidecar); // the sidecar process restarts next round
    }
    // And Redis down → not ready, not crashed.
    let _sidecar = start(&cfg);
    wait_ok(&format!("http://127.0.0.1:{main}/readyz")).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client
        .get(format!("http://127.0.0.1:{main}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = client
        .get(format!("http://127.0.0.1:{main}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
