//! A browser-like HTTP session: its own cookie jar, `Accept: text/html` navigations,
//! redirects followed by hand (so tests see every hop), and the IdP's login form.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use reqwest::cookie::{CookieStore as _, Jar};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::services::User;

/// One answer.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Final URL of this hop.
    pub url: Url,
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// The body as JSON (the upstream echo), or an error quoting it.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "{} {}: body is not JSON: {}",
                self.status, self.url, self.body
            )
        })
    }

    /// `Location`, resolved against the URL.
    pub fn location(&self) -> Option<Url> {
        let l = self.headers.get("location")?.to_str().ok()?;
        self.url.join(l).ok()
    }
}

/// One browser profile.
pub struct Session {
    client: reqwest::Client,
    jar: Arc<Jar>,
    /// Every URL visited by [`Session::navigate`], in order (for failure messages).
    pub trace: Vec<String>,
    /// `(url, Set-Cookie value)` of every answer [`Session::navigate`] saw.
    pub set_cookies: Vec<(String, String)>,
}

impl Session {
    /// A fresh profile (empty cookie jar).
    pub fn new() -> Result<Session> {
        let jar = Arc::new(Jar::default());
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept",
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        let client = reqwest::Client::builder()
            // Loopback test servers: Envoy's self-signed fallback certificate.
            .danger_accept_invalid_certs(true)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Session {
            client,
            jar,
            trace: Vec::new(),
            set_cookies: Vec::new(),
        })
    }

    /// The `Cookie` header this profile sends to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        Url::parse(url)
            .ok()
            .and_then(|u| self.jar.cookies(&u))
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Add a cookie as a browser would store it (e.g. a stolen or forged one).
    pub fn set_cookie(&self, url: &str, cookie: &str) -> Result<()> {
        self.jar.add_cookie_str(cookie, &Url::parse(url)?);
        Ok(())
    }

    /// One request, no redirect following.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Result<Resp> {
        let mut req = self.client.request(method.clone(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let url = r.url().clone();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Ok(Resp {
            url,
            status,
            headers,
            body,
        })
    }

    /// `GET url` (no following).
    pub async fn get(&self, url: &str) -> Result<Resp> {
        self.request(Method::GET, url, &[], None).await
    }

    /// Navigate to `url` like a browser: follow redirects; when the IdP shows its login
    /// form and `user` is given, submit it. Returns the last answer (not a redirect).
    pub async fn navigate(&mut self, url: &str, user: Option<&User>) -> Result<Resp> {
        let mut url = url.to_owned();
        let mut method = Method::GET;
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..30 {
            self.trace.push(format!("{method} {url}"));
            let f: Option<Vec<(&str, &str)>> = form
                .as_ref()
                .map(|f| f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect());
            let r = self
                .request(method.clone(), &url, &[], f.as_deref())
                .await?;
            for v in r.headers.get_all("set-cookie") {
                let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                self.set_cookies.push((r.url.to_string(), text));
            }
            if (300..400).contains(&r.status) {
                let next = r
                    .location()
                    .with_context(|| format!("{} from {} without Location", r.status, r.url))?;
                url = next.to_string();
                method = Method::GET;
                form = None;
                continue;
            }
            if r.status == 200
                && r.url.path().starts_with("/interaction/")
                && r.body.contains("name=\"password\"")
            {
                let Some(u) = user else {
                    return Ok(r);
                };
                let action = form_action(&r.body)
                    .and_then(|a| r.url.join(&a).ok())
                    .unwrap_or_else(|| {
                        let mut u = r.url.clone();
                        u.set_path(&format!("{}/login", r.url.path().trim_end_matches('/')));
                        u
                    });
                url = action.to_string();
                method = Method::POST;
                form = Some(vec![
                    ("username".into(), u.name.clone()),
                    ("password".into(), u.password.clone()),
                ]);
                continue;
            }
            return Ok(r);
        }
        bail!("too many redirects: {:#?}", self.trace)
    }

    /// Sign out from a route host: read the CSRF token from its user info page and post
    /// the sign-out form. Returns the sign-out answer (a redirect, not followed).
    pub async fn sign_out(&mut self, origin: &str) -> Result<Resp> {
        let page = self.get(&format!("{origin}/.pomerium/")).await?;
        if page.status != 200 {
            bail!("user info page: {} {}", page.status, page.body);
        }
        let token = hidden_input(&page.body, "pomerium_csrf")
            .context("no pomerium_csrf field on the user info page")?;
        self.request(
            Method::POST,
            &format!("{origin}/.pomerium/sign_out"),
            &[],
            Some(&[("pomerium_csrf", token.as_str())]),
        )
        .await
    }
}

/// The `action` of the first form in `html`.
fn form_action(html: &str) -> Option<String> {
    let i = html.find("<form")?;
    let rest = html.get(i..)?;
    let a = rest.find("action=\"")? + "action=\"".len();
    let rest = rest.get(a..)?;
    let end = rest.find('"')?;
    Some(html_unescape(rest.get(..end)?))
}

/// The value of the hidden input named `name`.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let i = html.find(&format!("name=\"{name}\""))?;
    let rest = html.get(i..)?;
    let v = rest.find("value=\"")? + "value=\"".len();
    let rest = rest.get(v..)?;
    let end = rest.find('"')?;
    Some(html_unescape(rest.get(..end)?))
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}
