//! The loader: file + environment + defaults → [`Config`].

use super::names::{IGNORED_TOP, MTLS_TOP, REMOVED, REMOVED_TOP};
use super::read::{Reader, split_list};
use super::route::{Outcome, check_header_names, parse_route, unknown_field};
use super::{
    BindAddress, CertificatePair, ClaimHeader, Config, IdpProvider, KeySetting, Loaded, LogLevel,
    PemSource, SameSite, SecretString, StorageType, defaults,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::value::{self, Span, Spanned, Value};
use portcullis_common::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How an environment variable's text becomes a value (env values are strings).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Read as a string (bools, numbers, durations parse from it).
    Scalar,
    /// `a,b,c` or a JSON list.
    List,
    /// `k=v,k2=v2` or a JSON object.
    Map,
    /// `claim1,claim2` (list) or `header=claim,...` / JSON object (map).
    ListOrMap,
    /// JSON/YAML text.
    Structured,
    /// Base64 of YAML (Pomerium's `POLICY`), or YAML/JSON text.
    Routes,
}

/// Top-level options Portcullis implements, and how their env var is read.
const TOP: &[(&str, Kind)] = &[
    ("policy", Kind::Routes),
    ("routes", Kind::Routes),
    ("authenticate_service_url", Kind::Scalar),
    ("authenticate_callback_path", Kind::Scalar),
    ("signout_redirect_url", Kind::Scalar),
    ("idp_provider", Kind::Scalar),
    ("idp_provider_url", Kind::Scalar),
    ("idp_client_id", Kind::Scalar),
    ("idp_client_secret", Kind::Scalar),
    ("idp_client_secret_file", Kind::Scalar),
    ("idp_scopes", Kind::List),
    ("idp_request_params", Kind::Map),
    ("cookie_name", Kind::Scalar),
    ("cookie_secret", Kind::Scalar),
    ("cookie_secret_file", Kind::Scalar),
    ("cookie_domain", Kind::Scalar),
    ("cookie_expire", Kind::Scalar),
    ("cookie_secure", Kind::Scalar),
    ("cookie_http_only", Kind::Scalar),
    ("cookie_same_site", Kind::Scalar),
    ("shared_secret", Kind::Scalar),
    ("shared_secret_file", Kind::Scalar),
    ("signing_key", Kind::Scalar),
    ("signing_key_file", Kind::Scalar),
    ("address", Kind::Scalar),
    ("insecure_server", Kind::Scalar),
    ("certificate", Kind::Scalar),
    ("certificate_key", Kind::Scalar),
    ("certificate_file", Kind::Scalar),
    ("certificate_key_file", Kind::Scalar),
    ("certificates", Kind::Structured),
    ("jwt_claims_headers", Kind::ListOrMap),
    ("pass_identity_headers", Kind::Scalar),
    ("set_response_headers", Kind::Map),
    ("default_upstream_timeout", Kind::Scalar),
    ("programmatic_redirect_domain_whitelist", Kind::List),
    ("databroker_storage_type", Kind::Scalar),
    ("databroker_storage_connection_string", Kind::Scalar),
    ("databroker_storage_connection_string_file", Kind::Scalar),
    ("log_level", Kind::Scalar),
    ("metrics_address", Kind::Scalar),
    ("identity_user_info_refresh_interval", Kind::Scalar),
    ("sidecar_address", Kind::Scalar),
    ("policy_bundle_file", Kind::Scalar),
    ("ext_authz_address", Kind::Scalar),
];

/// Load a config file, with the process environment overriding it. Relative `*_file`
/// paths are resolved against the config file's directory.
pub fn load_file(path: &Path) -> Result<Loaded, Diagnostics> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(Diagnostic::error(
                &name,
                Span::NONE,
                format!("cannot read config file: {}", io_reason(&e)),
            )
            .into());
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    load_str_in(&name, &text, &env, path.parent())
}

/// Load config text named `file_name` (used in diagnostics; its extension picks the
/// format: `.yaml`/`.yml`/`.json`, anything else is read as YAML). `env` looks up
/// environment variables (pass `&|_| None` for none). Relative `*_file` paths are
/// resolved against the working directory.
pub fn load_str(
    file_name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Diagnostics> {
    load_str_in(file_name, text, env, None)
}

/// [`load_str`] with relative `*_file` paths resolved against `base_dir`.
pub fn load_str_in(
    file_name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Loaded, Diagnostics> {
    if file_name.ends_with(".toml") {
        return Err(Diagnostic::error(
            file_name,
            Span::NONE,
            "toml configuration files are not supported; use yaml or json",
        )
        .into());
    }
    let root = value::parse(file_name, text)?;
    let mut l = Loader {
        file: file_name.to_owned(),
        diags: Diagnostics::new(),
        values: HashMap::new(),
        base_dir: base_dir.filter(|d| !d.as_os_str().is_empty()),
    };
    l.collect(file_name, &root, env);
    let config = l.build(file_name);
    let mut diags = l.diags;
    diags.sort();
    let (errors, warnings) = diags.split();
    if errors.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(errors)
    }
}

struct Loader<'a> {
    /// The config file's name (for diagnostics about the file as a whole).
    file: String,
    diags: Diagnostics,
    /// Option name → (source name, value): the file's value, replaced by the env's.
    values: HashMap<&'static str, (String, Spanned<Value>)>,
    base_dir: Option<&'a Path>,
}

impl Loader<'_> {
    fn collect(&mut self, file: &str, root: &Spanned<Value>, env: &dyn Fn(&str) -> Option<String>) {
        match &root.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let key = k.value.as_str();
                    if let Some((name, _)) = TOP.iter().find(|(n, _)| *n == key) {
                        self.values.insert(name, (file.to_owned(), v.clone()));
                    } else if let Some((_, why)) = REMOVED_TOP.iter().find(|(n, _)| *n == key) {
                        let msg = if *why == REMOVED || *why == MTLS_TOP {
                            format!("option `{key}` {why}")
                        } else {
                            (*why).to_owned()
                        };
                        self.diags.error(file, k.span, msg);
                    } else if IGNORED_TOP.contains(&key) {
                        self.diags.warning(
                            file,
                            k.span,
                            format!("option `{key}` is not implemented by portcullis; ignored"),
                        );
                    } else {
                        let known: Vec<&str> = TOP.iter().map(|(n, _)| *n).collect();
                        let msg = unknown_field(key, "configuration", &known)
                            .replacen("unknown field", "unknown option", 1)
                            .replacen(" in configuration", "", 1);
                        self.diags.error(file, k.span, msg);
                    }
                }
            }
            Value::Null => {}
            other => self.diags.error(
                file,
                root.span,
                format!(
                    "configuration must be a map of options, found {}",
                    other.kind()
                ),
            ),
        }
        for (name, kind) in TOP {
            let var = name.to_ascii_uppercase();
            let Some(raw) = env(&var) else { continue };
            // viper ignores empty environment variables.
            if raw.is_empty() {
                continue;
            }
            let src = format!("env {var}");
            if let Some(v) = env_value(&src, &raw, *kind, &mut self.diags) {
                self.values.insert(name, (src, v));
            }
        }
    }

    /// Run `f` on option `name` if it is set (null = unset), collecting its diagnostics.
    fn opt<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Reader, &Spanned<Value>, Option<&Path>) -> Option<T>,
    ) -> Option<T> {
        let (src, v) = self.values.get(name)?;
        if matches!(v.value, Value::Null) {
            return None;
        }
        let mut r = Reader::new(src.clone());
        let out = f(&mut r, v, self.base_dir);
        self.diags.extend(r.diags);
        out
    }

    fn span_of(&self, name: &str) -> (String, Span) {
        self.values
            .get(name)
            .map_or((String::new(), Span::NONE), |(s, v)| (s.clone(), v.span))
    }

    fn is_set(&self, name: &str) -> bool {
        self.values
            .get(name)
            .is_some_and(|(_, v)| !matches!(v.value, Value::Null))
    }

    fn build(&mut self, file: &str) -> Config {
        let routes = self.routes();

        let authenticate_service_url = self.opt("authenticate_service_url", |r, v, _| {
            let u = r.url("authenticate_service_url", v)?;
            if !matches!(u.scheme(), "http" | "https") {
                r.err(
                    v.span,
                    "`authenticate_service_url` must use `http` or `https`",
                );
                return None;
            }
            Some(u)
        });
        let authenticate_callback_path = self
            .opt("authenticate_callback_path", |r, v, _| {
                let s = r.non_empty("authenticate_callback_path", v)?;
                if !s.starts_with('/') {
                    r.err(
                        v.span,
                        format!("`authenticate_callback_path` `{s}` must start with `/`"),
                    );
                    return None;
                }
                Some(s)
            })
            .unwrap_or_else(|| defaults::AUTHENTICATE_CALLBACK_PATH.to_owned());
        let signout_redirect_url = self.opt("signout_redirect_url", |r, v, _| {
            r.url("signout_redirect_url", v)
        });

        let idp_provider = self.opt("idp_provider", |r, v, _| {
            let s = r.string("idp_provider", v)?;
            if s.is_empty() {
                return None;
            }
            match IdpProvider::ALL.iter().find(|(n, _)| *n == s) {
                Some((_, p)) => Some(*p),
                None => {
                    let names: Vec<String> = IdpProvider::ALL
                        .iter()
                        .map(|(n, _)| format!("`{n}`"))
                        .collect();
                    r.err(
                        v.span,
                        format!(
                            "unknown `idp_provider` `{s}`; expected one of {}",
                            names.join(", ")
                        ),
                    );
                    None
                }
            }
        });
        let idp_provider_url = self.opt("idp_provider_url", |r, v, _| r.url("idp_provider_url", v));
        let idp_client_id = self.opt("idp_client_id", |r, v, _| r.non_empty("idp_client_id", v));
        let idp_client_secret = self
            .secret_text("idp_client_secret", "idp_client_secret_file")
            .map(SecretString::new);
        let idp_scopes = self
            .opt("idp_scopes", |r, v, _| r.string_list("idp_scopes", v))
            .map(|l| l.into_iter().map(|s| s.value).collect::<Vec<_>>())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| {
                defaults::IDP_SCOPES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
        let idp_request_params = self
            .opt("idp_request_params", |r, v, _| {
                r.string_map("idp_request_params", v)
            })
            .unwrap_or_default();

        let cookie_name = self
            .opt("cookie_name", |r, v, _| {
                let s = r.non_empty("cookie_name", v)?;
                if !super::route::is_token(&s) {
                    r.err(
                        v.span,
                        format!("invalid `cookie_name` `{s}`: not a valid cookie name"),
                    );
                    return None;
                }
                Some(s)
            })
            .unwrap_or_else(|| defaults::COOKIE_NAME.to_owned());
        let cookie_secret = self.key_setting("cookie_secret", "cookie_secret_file");
        let cookie_domain = self
            .opt("cookie_domain", |r, v, _| r.string("cookie_domain", v))
            .filter(|s| !s.is_empty());
        let cookie_expire = self
            .opt("cookie_expire", |r, v, _| r.duration("cookie_expire", v))
            .unwrap_or(defaults::COOKIE_EXPIRE);
        let cookie_secure = self
            .opt("cookie_secure", |r, v, _| r.bool("cookie_secure", v))
            .unwrap_or(true);
        let cookie_http_only = self
            .opt("cookie_http_only", |r, v, _| r.bool("cookie_http_only", v))
            .unwrap_or(true);
        let cookie_same_site = self.opt("cookie_same_site", |r, v, _| {
            let s = r.string("cookie_same_site", v)?;
            match s.to_ascii_lowercase().as_str() {
                "" => None,
                "strict" => Some(SameSite::Strict),
                "lax" => Some(SameSite::Lax),
                "none" => Some(SameSite::None),
                _ => {
                    r.err(
                        v.span,
                        format!(
                            "invalid `cookie_same_site` `{s}`; expected `strict`, `lax` or `none`"
                        ),
                    );
                    None
                }
            }
        });

        let shared_secret = self.key_setting("shared_secret", "shared_secret_file");
        let signing_key = self.signing_key();

        let address = self
            .opt("address", |r, v, _| bind_address(r, "address", v))
            .unwrap_or(BindAddress {
                host: None,
                port: 443,
            });
        let insecure_server = self
            .opt("insecure_server", |r, v, _| r.bool("insecure_server", v))
            .unwrap_or(false);
        let certificates = self.certificates();

        let jwt_claims_headers = self
            .opt("jwt_claims_headers", |r, v, _| claim_headers(r, v))
            .unwrap_or_default();
        let pass_identity_headers = self.opt("pass_identity_headers", |r, v, _| {
            r.bool("pass_identity_headers", v)
        });
        let set_response_headers = self.opt("set_response_headers", |r, v, _| {
            let m = r.string_map("set_response_headers", v)?;
            check_header_names(r, "set_response_headers", v, &m);
            Some(m)
        });
        let default_upstream_timeout = self
            .opt("default_upstream_timeout", |r, v, _| {
                r.duration("default_upstream_timeout", v)
            })
            .unwrap_or(defaults::DEFAULT_UPSTREAM_TIMEOUT);
        let programmatic_redirect_domain_whitelist = self
            .opt("programmatic_redirect_domain_whitelist", |r, v, _| {
                r.string_list("programmatic_redirect_domain_whitelist", v)
            })
            .map(|l| l.into_iter().map(|s| s.value).collect())
            .unwrap_or_else(|| {
                defaults::PROGRAMMATIC_REDIRECT_DOMAIN_WHITELIST
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });

        let databroker_storage_type = self
            .opt("databroker_storage_type", |r, v, _| {
                let s = r.string("databroker_storage_type", v)?;
                match s.as_str() {
                    "" | "memory" | "inmemory" => Some(StorageType::Memory),
                    "redis" => Some(StorageType::Redis),
                    "postgres" => {
                        r.err(
                            v.span,
                            "`databroker_storage_type` `postgres` is not supported by portcullis; use `memory` or `redis`",
                        );
                        None
                    }
                    _ => {
                        r.err(
                            v.span,
                            format!("unknown `databroker_storage_type` `{s}`; expected `memory` or `redis`"),
                        );
                        None
                    }
                }
            })
            .unwrap_or_default();
        let databroker_storage_connection_string = self
            .secret_text(
                "databroker_storage_connection_string",
                "databroker_storage_connection_string_file",
            )
            .map(SecretString::new);
        if let Some(cs) = &databroker_storage_connection_string {
            let ok = url::Url::parse(cs.expose().trim())
                .ok()
                .is_some_and(|u| matches!(u.scheme(), "redis" | "rediss" | "unix"));
            if !ok {
                let name = if self.is_set("databroker_storage_connection_string_file") {
                    "databroker_storage_connection_string_file"
                } else {
                    "databroker_storage_connection_string"
                };
                let (src, span) = self.span_of(name);
                // Never echo the value: it usually carries a password.
                self.diags.error(
                    &src,
                    span,
                    format!(
                        "invalid `{name}`: expected a `redis://`, `rediss://` or `unix://` URL"
                    ),
                );
            }
        }
        if databroker_storage_type == StorageType::Redis
            && databroker_storage_connection_string.is_none()
        {
            let (src, span) = self.span_of("databroker_storage_type");
            self.diags.error(
                &src,
                span,
                "`databroker_storage_type` `redis` requires `databroker_storage_connection_string`",
            );
        }

        let log_level = self
            .opt("log_level", |r, v, _| {
                let s = r.string("log_level", v)?;
                match s.to_ascii_lowercase().as_str() {
                    "trace" => Some(LogLevel::Trace),
                    "debug" => Some(LogLevel::Debug),
                    "" | "info" => Some(LogLevel::Info),
                    "warn" | "warning" => Some(LogLevel::Warn),
                    "error" | "fatal" | "panic" => Some(LogLevel::Error),
                    _ => {
                        r.err(
                            v.span,
                            format!("invalid `log_level` `{s}`; expected `debug`, `info`, `warn` or `error`"),
                        );
                        None
                    }
                }
            })
            .unwrap_or_default();
        let metrics_address = self.opt("metrics_address", |r, v, _| {
            bind_address(r, "metrics_address", v)
        });

        let identity_user_info_refresh_interval = self
            .opt("identity_user_info_refresh_interval", |r, v, _| {
                let d = r.duration("identity_user_info_refresh_interval", v)?;
                if d.is_zero() {
                    r.err(
                        v.span,
                        "`identity_user_info_refresh_interval` must be greater than zero",
                    );
                    return None;
                }
                Some(d)
            })
            .unwrap_or(defaults::IDENTITY_USER_INFO_REFRESH_INTERVAL);
        let sidecar_address = self
            .opt("sidecar_address", |r, v, _| {
                bind_address(r, "sidecar_address", v)
            })
            .unwrap_or(BindAddress {
                host: Some("127.0.0.1".to_owned()),
                port: 5080,
            });
        let policy_bundle_file = self.opt("policy_bundle_file", |r, v, base| {
            readable_file(r, "policy_bundle_file", v, base).map(|(p, _)| p)
        });
        let ext_authz_address = self.opt("ext_authz_address", |r, v, _| {
            bind_address(r, "ext_authz_address", v)
        });

        Config {
            file: file.to_owned(),
            routes,
            authenticate_service_url,
            authenticate_callback_path,
            signout_redirect_url,
            idp_provider,
            idp_provider_url,
            idp_client_id,
            idp_client_secret,
            idp_scopes,
            idp_request_params,
            cookie_name,
            cookie_secret,
            cookie_domain,
            cookie_expire,
            cookie_secure,
            cookie_http_only,
            cookie_same_site,
            shared_secret,
            signing_key,
            address,
            insecure_server,
            certificates,
            jwt_claims_headers,
            pass_identity_headers,
            set_response_headers,
            default_upstream_timeout,
            programmatic_redirect_domain_whitelist,
            databroker_storage_type,
            databroker_storage_connection_string,
            log_level,
            metrics_address,
            identity_user_info_refresh_interval,
            sidecar_address,
            policy_bundle_file,
            ext_authz_address,
        }
    }

    fn routes(&mut self) -> Vec<super::Route> {
        let mut routes = Vec::new();
        // Pomerium: `policy` routes first, then `routes`.
        for name in ["policy", "routes"] {
            let base = self.base_dir;
            let start = routes.len();
            let found = self.opt(name, |r, v, _| {
                let items = r.seq(name, v)?;
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if let Outcome::Route(route) = parse_route(r, item, start + i, base) {
                        out.push(*route);
                    }
                }
                Some(out)
            });
            routes.extend(found.unwrap_or_default());
        }
        // Indexes are positions among the routes actually loaded.
        for (i, route) in routes.iter_mut().enumerate() {
            route.index = i;
        }
        self.duplicate_ids();
        routes
    }

    /// Route ids must be unique. Checked on the raw entries, so a duplicate is reported
    /// even when one of the routes has other errors.
    fn duplicate_ids(&mut self) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut dups = Vec::new();
        for name in ["policy", "routes"] {
            let Some((src, v)) = self.values.get(name) else {
                continue;
            };
            for item in v.value.as_seq().unwrap_or_default() {
                let Some(id) = item.value.get("id") else {
                    continue;
                };
                let Some(text) = id.value.scalar_text() else {
                    continue;
                };
                match seen.get(&text) {
                    Some(first) => dups.push((
                        src.clone(),
                        id.span,
                        format!(
                            "duplicate route id `{text}` (first used at line {})",
                            first.line
                        ),
                    )),
                    None => {
                        seen.insert(text, id.span);
                    }
                }
            }
        }
        for (src, span, msg) in dups {
            self.diags.error(&src, span, msg);
        }
    }

    /// A secret string option with a `*_file` variant (the file wins, as Pomerium).
    fn secret_text(&mut self, name: &str, file_name: &str) -> Option<String> {
        if self.is_set(file_name) {
            if self.is_set(name) {
                let (src, span) = self.span_of(name);
                self.diags.warning(
                    &src,
                    span,
                    format!("both `{name}` and `{file_name}` are set; `{file_name}` is used"),
                );
            }
            return self.opt(file_name, |r, v, base| {
                readable_file(r, file_name, v, base).and_then(|(path, bytes)| {
                    match String::from_utf8(bytes) {
                        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                        Ok(_) => {
                            r.err(
                                v.span,
                                format!("`{file_name}` `{}` is empty", path.display()),
                            );
                            None
                        }
                        Err(_) => {
                            r.err(
                                v.span,
                                format!("`{file_name}` `{}` is not text", path.display()),
                            );
                            None
                        }
                    }
                })
            });
        }
        self.opt(name, |r, v, _| r.string(name, v))
            .filter(|s| !s.is_empty())
    }

    /// `cookie_secret` / `shared_secret`: base64 of 32 bytes; random (with a warning)
    /// when absent.
    fn key_setting(&mut self, name: &str, file_name: &str) -> KeySetting {
        let from_file = self.is_set(file_name);
        if let Some(text) = self.secret_text(name, file_name) {
            let which = if from_file { file_name } else { name };
            match Secret::from_base64(&text) {
                Ok(secret) => {
                    return KeySetting {
                        secret,
                        generated: false,
                    };
                }
                Err(e) => {
                    let (src, span) = self.span_of(which);
                    self.diags
                        .error(&src, span, format!("invalid `{which}`: {e}"));
                }
            }
        } else if !self.is_set(name) && !from_file {
            self.diags.warning(
                &self.file,
                Span::NONE,
                format!(
                    "`{name}` is not set; a random one was generated: every portcullis process (sidecar, filter) must use the same value, so set it explicitly outside of tests"
                ),
            );
        }
        let mut bytes = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut bytes) {
            self.diags.error(
                &self.file,
                Span::NONE,
                format!("cannot generate a random `{name}`: {e}"),
            );
        }
        KeySetting {
            secret: Secret::from_bytes(bytes),
            generated: true,
        }
    }

    /// `signing_key` (base64 of a PEM private key) or `signing_key_file` (a PEM file).
    fn signing_key(&mut self) -> Option<SecretString> {
        if self.is_set("signing_key_file") {
            if self.is_set("signing_key") {
                let (src, span) = self.span_of("signing_key");
                self.diags.warning(
                    &src,
                    span,
                    "both `signing_key` and `signing_key_file` are set; `signing_key_file` is used",
                );
            }
            return self.opt("signing_key_file", |r, v, base| {
                let (path, bytes) = readable_file(r, "signing_key_file", v, base)?;
                match String::from_utf8(bytes) {
                    Ok(pem) if is_private_key_pem(&pem) => Some(SecretString::new(pem)),
                    _ => {
                        r.err(
                            v.span,
                            format!(
                                "`signing_key_file` `{}` is not a PEM private key",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            });
        }
        self.opt("signing_key", |r, v, _| {
            let pem = inline_pem(r, "signing_key", v)?;
            if !is_private_key_pem(pem.expose()) {
                r.err(
                    v.span,
                    "`signing_key` is not a base64-encoded PEM private key",
                );
                return None;
            }
            Some(pem)
        })
    }

    fn certificates(&mut self) -> Vec<CertificatePair> {
        let mut out = Vec::new();
        // certificate + certificate_key (base64 PEM)
        if self.is_set("certificate") || self.is_set("certificate_key") {
            let cert = self.opt("certificate", |r, v, _| inline_pem(r, "certificate", v));
            let key = self.opt("certificate_key", |r, v, _| {
                inline_pem(r, "certificate_key", v)
            });
            match (cert, key) {
                (Some(cert), Some(key)) => out.push(CertificatePair {
                    cert: PemSource::Inline(cert),
                    key: PemSource::Inline(key),
                }),
                (c, k) => {
                    self.pair_error("certificate", "certificate_key", c.is_some(), k.is_some())
                }
            }
        }
        if self.is_set("certificate_file") || self.is_set("certificate_key_file") {
            let cert = self.opt("certificate_file", |r, v, b| {
                readable_file(r, "certificate_file", v, b).map(|(p, _)| p)
            });
            let key = self.opt("certificate_key_file", |r, v, b| {
                readable_file(r, "certificate_key_file", v, b).map(|(p, _)| p)
            });
            match (cert, key) {
                (Some(cert), Some(key)) => out.push(CertificatePair {
                    cert: PemSource::File(cert),
                    key: PemSource::File(key),
                }),
                (c, k) => self.pair_error(
                    "certificate_file",
                    "certificate_key_file",
                    c.is_some(),
                    k.is_some(),
                ),
            }
        }
        let list = self.opt("certificates", |r, v, base| {
            let items = r.seq("certificates", v)?;
            let mut pairs = Vec::new();
            for item in items {
                let Some(entries) = r.map("certificates", item) else {
                    continue;
                };
                let (mut cert, mut key) = (None, None);
                for (k, v) in entries {
                    match k.value.as_str() {
                        "cert" => cert = pem_file_or_inline(r, "cert", v, base),
                        "key" => key = pem_file_or_inline(r, "key", v, base),
                        other => r.err(
                            k.span,
                            unknown_field(other, "`certificates` entry", &["cert", "key"]),
                        ),
                    }
                }
                match (cert, key) {
                    (Some(cert), Some(key)) => pairs.push(CertificatePair { cert, key }),
                    (None, _) if !entries.iter().any(|(k, _)| k.value == "cert") => {
                        r.err(item.span, "`certificates` entry is missing `cert`");
                    }
                    (_, None) if !entries.iter().any(|(k, _)| k.value == "key") => {
                        r.err(item.span, "`certificates` entry is missing `key`");
                    }
                    _ => {}
                }
            }
            Some(pairs)
        });
        out.extend(list.unwrap_or_default());
        out
    }

    /// One of two options that go together is missing (errors on the missing side are
    /// only reported when the present side itself was valid and the other is absent).
    fn pair_error(&mut self, a: &str, b: &str, a_ok: bool, b_ok: bool) {
        for (present, missing, ok) in [(a, b, a_ok), (b, a, b_ok)] {
            if ok && !self.is_set(missing) {
                let (src, span) = self.span_of(present);
                self.diags
                    .error(&src, span, format!("`{present}` requires `{missing}`"));
            }
        }
    }
}

/// An environment variable's text → a value of the option's shape.
fn env_value(src: &str, raw: &str, kind: Kind, diags: &mut Diagnostics) -> Option<Spanned<Value>> {
    let string = |s: &str| Spanned::new(Span::NONE, Value::String(s.to_owned()));
    let structured = |text: &str, diags: &mut Diagnostics| match value::parse(src, text) {
        Ok(v) => Some(v),
        Err(d) => {
            diags.extend(d);
            None
        }
    };
    let trimmed = raw.trim_start();
    match kind {
        Kind::Scalar => Some(string(raw)),
        Kind::List => {
            if trimmed.starts_with('[') {
                structured(raw, diags)
            } else {
                Some(Spanned::new(
                    Span::NONE,
                    Value::Seq(split_list(raw).iter().map(|s| string(s)).collect()),
                ))
            }
        }
        Kind::Map => env_map(src, raw, diags),
        Kind::ListOrMap => {
            if trimmed.starts_with('[') {
                structured(raw, diags)
            } else if trimmed.starts_with('{') || raw.contains('=') {
                env_map(src, raw, diags)
            } else {
                Some(Spanned::new(
                    Span::NONE,
                    Value::Seq(split_list(raw).iter().map(|s| string(s)).collect()),
                ))
            }
        }
        Kind::Structured => structured(raw, diags),
        Kind::Routes => {
            // Pomerium's POLICY env var is base64 of the YAML route list.
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            structured(decoded.as_deref().unwrap_or(raw), diags)
        }
    }
}

/// `{"k":"v"}` (JSON/YAML) or `k=v,k2=v2` (viper's string-to-map form; `k:v` also works).
fn env_map(src: &str, raw: &str, diags: &mut Diagnostics) -> Option<Spanned<Value>> {
    if raw.trim_start().starts_with('{') {
        return match value::parse(src, raw) {
            Ok(v) => Some(v),
            Err(d) => {
                diags.extend(d);
                None
            }
        };
    }
    let mut entries = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=').or_else(|| part.split_once(':')) else {
            diags.error(
                src,
                Span::NONE,
                format!("invalid map entry `{part}`: expected `key=value` (or a json object)"),
            );
            return None;
        };
        entries.push((
            Spanned::new(Span::NONE, k.trim().to_owned()),
            Spanned::new(Span::NONE, Value::String(v.trim().to_owned())),
        ));
    }
    Some(Spanned::new(Span::NONE, Value::Map(entries)))
}

fn bind_address(r: &mut Reader, name: &str, v: &Spanned<Value>) -> Option<BindAddress> {
    let s = r.non_empty(name, v)?;
    let s = s.trim();
    let parsed = s.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.contains(|c: char| c.is_whitespace() || c == '/') {
            return None;
        }
        Some(BindAddress {
            host: (!host.is_empty()).then(|| host.to_owned()),
            port,
        })
    });
    if parsed.is_none() {
        r.err(
            v.span,
            format!("invalid `{name}` `{s}`: expected `host:port` or `:port`"),
        );
    }
    parsed
}

fn claim_headers(r: &mut Reader, v: &Spanned<Value>) -> Option<Vec<ClaimHeader>> {
    match &v.value {
        // header → claim
        Value::Map(_) => {
            let m = r.string_map("jwt_claims_headers", v)?;
            check_header_names(r, "jwt_claims_headers", v, &m);
            Some(
                m.into_iter()
                    .map(|(header, claim)| ClaimHeader { header, claim })
                    .collect(),
            )
        }
        // a list of claims: header `x-pomerium-claim-<claim>`
        _ => {
            let list = r.string_list("jwt_claims_headers", v)?;
            Some(
                list.into_iter()
                    .map(|c| ClaimHeader {
                        header: format!("x-pomerium-claim-{}", c.value),
                        claim: c.value,
                    })
                    .collect(),
            )
        }
    }
}

fn resolve(path: &str, base: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(path);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string().to_lowercase(),
    }
}

/// Read a file named by option `name` (relative paths against `base`).
pub(crate) fn readable_file(
    r: &mut Reader,
    name: &str,
    v: &Spanned<Value>,
    base: Option<&Path>,
) -> Option<(PathBuf, Vec<u8>)> {
    let s = r.non_empty(name, v)?;
    let path = resolve(s.trim(), base);
    match std::fs::read(&path) {
        Ok(bytes) => Some((path, bytes)),
        Err(e) => {
            r.err(
                v.span,
                format!(
                    "cannot read `{name}` `{}`: {}",
                    path.display(),
                    io_reason(&e)
                ),
            );
            None
        }
    }
}

/// A PEM file option: must be readable and look like PEM.
pub(crate) fn pem_file(
    r: &mut Reader,
    name: &str,
    v: &Spanned<Value>,
    base: Option<&Path>,
) -> Option<PathBuf> {
    let (path, bytes) = readable_file(r, name, v, base)?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        r.err(
            v.span,
            format!("`{name}` `{}` is not a PEM file", path.display()),
        );
        return None;
    }
    Some(path)
}

/// A base64-encoded PEM option (Pomerium's `certificate`, `signing_key`, …), decoded.
pub(crate) fn inline_pem(r: &mut Reader, name: &str, v: &Spanned<Value>) -> Option<SecretString> {
    let s = r.non_empty(name, v)?;
    match decode_base64_pem(&s) {
        Some(pem) => Some(SecretString::new(pem)),
        None => {
            // Never echo the value: it may be a private key.
            r.err(v.span, format!("`{name}` must be base64-encoded PEM"));
            None
        }
    }
}

fn decode_base64_pem(s: &str) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD
        .decode(&compact)
        .or_else(|_| STANDARD_NO_PAD.decode(&compact))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.contains("-----BEGIN ").then_some(text)
}

/// `certificates` entries: a file path, or base64 PEM.
fn pem_file_or_inline(
    r: &mut Reader,
    name: &str,
    v: &Spanned<Value>,
    base: Option<&Path>,
) -> Option<PemSource> {
    let s = r.non_empty(name, v)?;
    if let Some(pem) = decode_base64_pem(&s) {
        return Some(PemSource::Inline(SecretString::new(pem)));
    }
    pem_file(r, name, v, base).map(PemSource::File)
}

fn is_private_key_pem(pem: &str) -> bool {
    pem.contains("-----BEGIN ") && pem.contains("PRIVATE KEY-----")
}
