//! `policy-compiler`: build / check a Pomerium config, and evaluate requests against it.
//!
//! - `build --config config.yaml -o bundle.pb`: compile (exit 1 with every error; the output
//!   file is written atomically, never partially);
//! - `check --config config.yaml`: exit 0, or 1 with every error as `file:line:column: message`
//!   (warnings too, on stderr);
//! - `eval` / `explain`: one JSON line `{"decision", "route", "reasons"}` on stdout; exit 0
//!   whatever the decision, 2 on bad input.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use policy_compiler::eval::{ClientCertificate, Decision, Engine, Explanation, Request, Subject};
use policy_compiler::{compile, config};

#[derive(Parser)]
#[command(
    name = "policy-compiler",
    version,
    about = "Pomerium config + PPL → policy bundle, and a policy evaluator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a config into a bundle.
    Build {
        /// Pomerium config (YAML or JSON).
        #[arg(long)]
        config: PathBuf,
        /// Output bundle file.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Check a config: print every error and warning; exit 1 on errors.
    Check {
        /// Pomerium config (YAML or JSON).
        #[arg(long)]
        config: PathBuf,
    },
    /// Decide one request; prints one JSON line.
    Eval(EvalArgs),
    /// Like `eval --explain`: which rule and criterion decided.
    Explain(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A config (YAML/JSON) or a built bundle (`.pb`).
    #[arg(long)]
    config: PathBuf,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Full request URL, e.g. `https://app.example.com/admin?x=1`.
    #[arg(long)]
    url: String,
    /// Request header `Name: value` (repeatable); `Origin`, `Access-Control-Request-Method`
    /// and `Host` matter to the policy.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Session file `{"user_id": "...", "email": "...", "claims": {...}}`; none = signed out.
    #[arg(long)]
    session: Option<PathBuf>,
    /// Time of the request (RFC 3339); default now.
    #[arg(long)]
    time: Option<String>,
    /// Add the explanation (rules, criteria, reasons) to the output.
    #[arg(long)]
    explain: bool,
    /// The client certificate's SHA-256 fingerprint (hex), as if presented and valid.
    #[arg(long)]
    client_cert_fingerprint: Option<String>,
}

/// Exit code 2: bad input to `eval`.
struct BadInput(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Build { config, output } => build(&config, &output),
        Cmd::Check { config } => check(&config),
        Cmd::Eval(a) => eval_cmd(&a, a.explain),
        Cmd::Explain(a) => eval_cmd(&a, true),
    }
}

fn print_diags(d: &policy_compiler::diag::Diagnostics) {
    let mut err = std::io::stderr().lock();
    for x in d.iter() {
        let _ = writeln!(err, "{x}");
    }
}

/// Loads and compiles; diagnostics (warnings, and errors on failure) are returned for printing.
fn load_and_compile(
    path: &Path,
) -> Result<
    (
        policy_compiler::bundle::Bundle,
        policy_compiler::diag::Diagnostics,
    ),
    policy_compiler::diag::Diagnostics,
> {
    let loaded = config::load_file(path)?;
    let mut diags = loaded.warnings;
    match compile::compile_with_warnings(&loaded.config) {
        Ok((b, w)) => {
            diags.extend(w);
            diags.sort();
            Ok((b, diags))
        }
        Err(e) => {
            diags.extend(e);
            diags.sort();
            Err(diags)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match load_and_compile(path) {
        Ok((_, warnings)) => {
            print_diags(&warnings);
            ExitCode::SUCCESS
        }
        Err(d) => {
            print_diags(&d);
            ExitCode::from(1)
        }
    }
}

fn build(path: &Path, out: &Path) -> ExitCode {
    let (bundle, warnings) = match load_and_compile(path) {
        Ok(x) => x,
        Err(d) => {
            print_diags(&d);
            return ExitCode::from(1);
        }
    };
    print_diags(&warnings);
    match write_atomically(out, &bundle.to_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn write_atomically(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = out
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))
}

fn eval_cmd(a: &EvalArgs, explain: bool) -> ExitCode {
    match eval_json(a, explain) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_engine(path: &Path) -> anyhow::Result<Engine> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_bundle = path
        .extension()
        .is_some_and(|e| e == "pb" || e == "bundle" || e == "bin");
    if is_bundle {
        return Engine::from_bytes(&bytes)
            .with_context(|| format!("{}: not a valid bundle", path.display()));
    }
    match load_and_compile(path) {
        Ok((b, _)) => Engine::from_bundle(b).context("compiled bundle rejected"),
        Err(d) => bail!("invalid config:\n{d}"),
    }
}

fn load_subject(path: &Path) -> anyhow::Result<Subject> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let obj = v.as_object().context("session must be a JSON object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "user_id" | "email" | "claims") {
            bail!("session: unknown field `{k}` (expected `user_id`, `email`, `claims`)");
        }
    }
    let s = |k: &str| -> anyhow::Result<String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("session: `{k}` must be a string"),
        }
    };
    let claims = match obj.get("claims") {
        None | Some(serde_json::Value::Null) => policy_compiler::eval::Claims::default(),
        Some(serde_json::Value::Object(m)) => policy_compiler::eval::Claims::from_json(m),
        Some(_) => bail!("session: `claims` must be an object"),
    };
    Ok(Subject::new(s("user_id")?, s("email")?, claims))
}

fn eval_json(a: &EvalArgs, explain: bool) -> Result<String, BadInput> {
    let bad = BadInput;
    let engine = load_engine(&a.config).map_err(bad)?;
    let url = url::Url::parse(&a.url)
        .with_context(|| format!("invalid --url `{}`", a.url))
        .map_err(bad)?;
    let mut authority = url
        .host_str()
        .context("--url has no host")
        .map_err(bad)?
        .to_string();
    if let Some(p) = url.port() {
        authority = format!("{authority}:{p}");
    }
    let mut origin = None;
    let mut acrm = None;
    for h in &a.headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad(anyhow::anyhow!(
                "invalid --header `{h}` (expected `Name: value`)"
            )));
        };
        let value = value.trim().to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "origin" => origin = Some(value),
            "access-control-request-method" => acrm = Some(value),
            "host" => authority = value,
            _ => {}
        }
    }
    let now = match &a.time {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .with_context(|| format!("invalid --time `{t}` (expected RFC 3339)"))
            .map_err(bad)?
            .timestamp(),
        None => chrono::Utc::now().timestamp(),
    };
    let subject = match &a.session {
        Some(p) => Some(load_subject(p).map_err(bad)?),
        None => None,
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let fp = a
        .client_cert_fingerprint
        .as_deref()
        .map(str::to_ascii_lowercase);
    let req = Request {
        method: &a.method,
        path: &path,
        origin: origin.as_deref(),
        access_control_request_method: acrm.as_deref(),
        client_certificate: match &fp {
            Some(f) => ClientCertificate::Valid(policy_compiler::eval::CertInfo {
                fingerprint_sha256: f,
                ..Default::default()
            }),
            None => ClientCertificate::None,
        },
        now_unix: now,
    };
    let Some(route) = engine.find_route(&authority, &path) else {
        let explain_v = explain.then(
            || serde_json::json!({"decided_by": ["no route matches the request"], "trace": []}),
        );
        return Ok(output_line(
            "deny",
            None,
            &["no-route"],
            Some("no-route"),
            explain_v,
        ));
    };
    let info = engine.route(route);
    let x: Explanation = engine.explain(route, &req, subject.as_ref());
    // The CLI reports the hot path's answer (the explanation must agree; tests check it).
    let decision = engine.evaluate(route, &req, subject.as_ref());
    let reasons: Vec<&str> = match decision {
        // The reasons that ask for sign-in, not the deny side's routine ones.
        Decision::Login => {
            let mut r = x.allow_reasons.clone();
            if x.deny_reasons.contains(&"user-unauthenticated") {
                r.extend(x.deny_reasons.iter().copied());
            }
            r.sort_unstable();
            r.dedup();
            r
        }
        _ => x.reasons.clone(),
    };
    let deny_code = match decision {
        Decision::Deny(r) => Some(r.code()),
        _ => None,
    };
    let mut explain_v = None;
    if explain {
        let trace: Vec<serde_json::Value> = x
            .trace
            .iter()
            .map(|t| {
                serde_json::json!({
                    "action": match t.action { policy_compiler::eval::Action::Allow => "allow", policy_compiler::eval::Action::Deny => "deny" },
                    "origin": t.origin,
                    "depth": t.depth,
                    "criterion": t.label,
                    "pass": t.pass,
                    "reasons": t.reasons,
                })
            })
            .collect();
        explain_v = Some(serde_json::json!({
            "route_id": info.id,
            "allow": x.allow,
            "deny": x.deny,
            "allow_reasons": x.allow_reasons,
            "deny_reasons": x.deny_reasons,
            "decided_by": x.decided_by,
            "trace": trace,
        }));
    }
    Ok(output_line(
        decision.as_str(),
        Some(info.name),
        &reasons,
        deny_code,
        explain_v,
    ))
}

/// `{"decision":…,"route":…,"reasons":[…]}` in this key order, plus `deny_reason` (the
/// stable code) on denials and `explain` when asked.
fn output_line(
    decision: &str,
    route: Option<&str>,
    reasons: &[&str],
    deny_code: Option<&str>,
    explain: Option<serde_json::Value>,
) -> String {
    let j = |v: serde_json::Value| v.to_string();
    let mut s = format!(
        "{{\"decision\":{},\"route\":{},\"reasons\":{}",
        j(decision.into()),
        j(route.map_or(serde_json::Value::Null, Into::into)),
        j(reasons.into()),
    );
    if let Some(c) = deny_code {
        s.push_str(&format!(",\"deny_reason\":{}", j(c.into())));
    }
    if let Some(e) = explain {
        s.push_str(&format!(",\"explain\":{}", j(e)));
    }
    s.push('}');
    s
}
