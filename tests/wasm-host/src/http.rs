//! A tiny blocking HTTP/1.1 server and client (std only) for the Envoy tests: enough for
//! GET requests with keep-alive, a long poll, and a server that can be stopped hard.

use anyhow::{Context as _, Result, anyhow, bail};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One received request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Request target (path + query).
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response to send or a response received.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-cased when received).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Add a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A running server; stopped (listener and every connection closed) on [`Server::stop`] or drop.
pub struct Server {
    addr: SocketAddr,
    stopped: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Server {
    /// Serve `handler` on `addr` (port 0 = any free port), one thread per connection.
    pub fn start(addr: SocketAddr, handler: Arc<Handler>) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, c) = (stopped.clone(), conns.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                if let (Ok(clone), Ok(mut list)) = (stream.try_clone(), c.lock()) {
                    list.push(clone);
                }
                let h = handler.clone();
                let s2 = s.clone();
                thread::spawn(move || serve(stream, h, s2));
            }
        });
        Ok(Server {
            addr,
            stopped,
            conns,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close the listener and every open connection (a crashed server, as seen by clients).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Ok(list) = self.conns.lock() {
            for c in list.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, handler: Arc<Handler>, stopped: Arc<AtomicBool>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut out = write_half;
    while let Ok(Some(req)) = read_request(&mut reader) {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        let resp = handler(&req);
        if stopped.load(Ordering::SeqCst) || write_response(&mut out, &resp).is_err() {
            return;
        }
        if req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// A request or status line and the headers after it.
type Head = (String, Vec<(String, String)>);

fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let first = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            bail!("connection closed in headers");
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok(Some((first, headers)))
}

fn body_len(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let Some((first, headers)) = read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut body = vec![0; body_len(&headers)];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        headers,
    }))
}

fn write_response(out: &mut TcpStream, r: &Response) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
        r.status,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // One write: a separate body write would wait on the peer's delayed ACK (Nagle).
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&r.body);
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

/// One GET on a fresh connection (`connection: close`), so Envoy may hand each request
/// to a different worker. `headers` must not include `host`; `host` is the `Host` header.
pub fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(s);
    let (first, headers) = read_head(&mut reader)?.ok_or_else(|| anyhow!("no response"))?;
    let status = first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {first:?}"))?;
    let mut body = Vec::new();
    if headers.iter().any(|(k, _)| k == "content-length") {
        body.resize(body_len(&headers), 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A keep-alive client connection (for latency measurements).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connect.
    pub fn open(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// One GET on this connection; the status.
    pub fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<u16> {
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.writer.write_all(req.as_bytes())?;
        let (first, headers) = read_head(&mut self.reader)?.ok_or_else(|| anyhow!("closed"))?;
        let mut body = vec![0; body_len(&headers)];
        self.reader.read_exact(&mut body)?;
        first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {first:?}"))
    }
}

/// Send raw request bytes on a fresh connection; the response status (0 if the server
/// closed without answering). For hostile inputs the typed client cannot express.
pub fn raw_status(addr: SocketAddr, request: &[u8]) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// An upstream that answers every request with its request headers, one `name: value` per line.
pub fn echo_server() -> Result<Server> {
    Server::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|req: &Request| {
            let mut body = String::new();
            for (k, v) in &req.headers {
                body.push_str(&format!("{k}: {v}\n"));
            }
            Response::new(200, body).with_header("content-type", "text/plain")
        }),
    )
}

/// Parse an echo body back into headers.
pub fn echoed(resp: &Response) -> Vec<(String, String)> {
    resp.text()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
