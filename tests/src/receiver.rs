//! A webhook receiver on 127.0.0.1 for the tests: a minimal HTTP/1.1 server that records every request
//! (headers and the raw body bytes, before any JSON parsing) and answers from a script — a status,
//! a redirect, a hang, a huge or endless body — so delivery behaviour can be observed exactly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with extra response headers (e.g. `Retry-After`).
    StatusWith(u16, Vec<(String, String)>),
    /// A 3xx with a `Location`.
    Redirect(u16, String),
    /// Accept the request, never answer (until the connection is dropped).
    Hang,
    /// 200 with a body of this many bytes.
    Huge(usize),
    /// 200 with a chunked body that never ends.
    Endless,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct State {
    script: Vec<Reply>,
    received: Vec<Received>,
    connections: usize,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver; request n gets `script[n]`, and the last entry repeats (200 when empty).
    pub async fn start(script: Vec<Reply>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            script,
            ..Default::default()
        }));
        let notify = Arc::new(Notify::new());
        let (s, n) = (state.clone(), notify.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.lock().expect("lock").connections += 1;
                tokio::spawn(serve(stream, s.clone(), n.clone()));
            }
        });
        Receiver {
            port,
            state,
            notify,
            task,
        }
    }

    /// The webhook URL of this receiver (plain http on loopback: tests allow both by configuration).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().expect("lock").connections
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "receiver got {} of {n} requests within {limit:?}",
                got.len()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, notify: Arc<Notify>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = {
        let mut s = state.lock().expect("lock");
        let n = s.received.len();
        s.received.push(Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        s.script
            .get(n)
            .or(s.script.last())
            .cloned()
            .unwrap_or(Reply::Status(200))
    };
    notify.notify_waiters();
    let status_line = |code: u16| format!("HTTP/1.1 {code} X\r\n");
    let result =
        match reply {
            Reply::Status(code) => {
                stream
                    .write_all(
                        format!(
                            "{}content-length: 2\r\nconnection: close\r\n\r\nok",
                            status_line(code)
                        )
                        .as_bytes(),
                    )
                    .await
            }
            Reply::StatusWith(code, extra) => {
                let mut r = status_line(code);
                for (k, v) in extra {
                    r.push_str(&format!("{k}: {v}\r\n"));
                }
                r.push_str("content-length: 0\r\nconnection: close\r\n\r\n");
                stream.write_all(r.as_bytes()).await
            }
            Reply::Redirect(code, location) => stream
                .write_all(
                    format!(
                        "{}location: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        status_line(code)
                    )
                    .as_bytes(),
                )
                .await,
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            Reply::Huge(size) => {
                let head = format!("{}content-length: {size}\r\n\r\n", status_line(200));
                let mut r = stream.write_all(head.as_bytes()).await;
                let block = vec![b'x'; 64 * 1024];
                let mut left = size;
                while r.is_ok() && left > 0 {
                    let n = left.min(block.len());
                    r = stream.write_all(&block[..n]).await;
                    left -= n;
                }
                r
            }
            Reply::Endless => {
                let head = format!("{}transfer-encoding: chunked\r\n\r\n", status_line(200));
                let mut r = stream.write_all(head.as_bytes()).await;
                let block = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
                while r.is_ok() {
                    r = stream.write_all(block.as_bytes()).await;
                }
                r
            }
        };
    let _ = result;
    let _ = stream.shutdown().await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
