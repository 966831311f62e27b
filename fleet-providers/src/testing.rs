//! A fault-injecting HTTP proxy for tests, enabled by the `testing` feature.
//!
//! It sits between an AWS SDK client and a real API emulator (moto) on 127.0.0.1 and
//! forwards every request, except those a rule matches: it answers them with an error in
//! EC2's documented error shape (throttling, capacity errors, 5xx), or forwards them and
//! then holds the answer back, the way a process dies after the cloud acted but before it
//! heard back. Faults happen on the wire, so the SDK's own retry and error parsing run for
//! real.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What a matching request gets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An error response with EC2's `<Response><Errors><Error>` body.
    Error {
        /// HTTP status (503 for `RequestLimitExceeded`, 500 for capacity errors).
        status: u16,
        /// The AWS error code.
        code: String,
    },
    /// Forward the request (the cloud acts), then hold the answer until released.
    HoldAnswer,
}

/// Which requests a fault applies to, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Every one of these must occur in the request body (EC2 sends form-encoded
    /// parameters, e.g. `Action=RunInstances`, `MarketType=spot`).
    pub body_contains: Vec<String>,
    /// How many matching requests get the fault (`u32::MAX`: all of them).
    pub times: u32,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// An EC2 error for requests whose body contains every one of `needles`.
    pub fn error(needles: &[&str], status: u16, code: &str, times: u32) -> Rule {
        Rule {
            body_contains: needles.iter().map(|s| s.to_string()).collect(),
            times,
            fault: Fault::Error {
                status,
                code: code.to_string(),
            },
        }
    }

    /// Forward, then withhold the answer, for the first request containing all `needles`.
    pub fn hold(needles: &[&str]) -> Rule {
        Rule {
            body_contains: needles.iter().map(|s| s.to_string()).collect(),
            times: 1,
            fault: Fault::HoldAnswer,
        }
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
    held: AtomicU64,
    forwarded: AtomicU64,
    held_signal: Notify,
    release: Notify,
    released: std::sync::atomic::AtomicBool,
    /// Every request body seen, in order (EC2's form-encoded parameters).
    bodies: Mutex<Vec<String>>,
}

/// A running proxy; it stops when the runtime it was started on stops.
#[derive(Clone)]
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let upstream = upstream
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| std::io::Error::other("the upstream must be an http:// URL"))?
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                let up = upstream.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, &up, &s).await;
                });
            }
        });
        Ok(FaultProxy { url, shared })
    }

    /// The URL to point `AWS_ENDPOINT_URL` at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a rule; rules are tried in the order they were added.
    pub fn add(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    /// The bodies of the requests seen so far that contain every one of `needles`
    /// (`Action=RunInstances`): what the SDK sent, for parameters an emulator ignores.
    pub fn requests_containing(&self, needles: &[&str]) -> Vec<String> {
        self.shared
            .bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|b| needles.iter().all(|n| b.contains(n)))
            .cloned()
            .collect()
    }

    /// Error responses sent so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Waits until a held request has reached the upstream (the cloud acted).
    pub async fn wait_held(&self) {
        loop {
            let notified = self.shared.held_signal.notified();
            if self.shared.held.load(Ordering::SeqCst) > 0 {
                return;
            }
            notified.await;
        }
    }

    /// Lets held answers through.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
        self.shared.release.notify_waiters();
    }
}

/// Takes the first rule matching `body` and counts one use of it.
fn take_fault(s: &Shared, body: &[u8]) -> Option<Fault> {
    let text = String::from_utf8_lossy(body);
    let mut rules = s.rules.lock().unwrap_or_else(|e| e.into_inner());
    let i = rules
        .iter()
        .position(|r| r.times > 0 && r.body_contains.iter().all(|n| text.contains(n.as_str())))?;
    let rule = &mut rules[i];
    if rule.times != u32::MAX {
        rule.times -= 1;
    }
    Some(rule.fault.clone())
}

async fn serve(conn: TcpStream, upstream: &str, s: &Shared) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    loop {
        let Some((head, body)) = read_message(&mut r).await? else {
            return Ok(());
        };
        s.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(String::from_utf8_lossy(&body).into_owned());
        let answer = match take_fault(s, &body) {
            Some(Fault::Error { status, code }) => {
                s.injected.fetch_add(1, Ordering::SeqCst);
                ec2_error(status, &code)
            }
            Some(Fault::HoldAnswer) => {
                let answer = forward(upstream, &head, &body).await?;
                s.forwarded.fetch_add(1, Ordering::SeqCst);
                s.held.fetch_add(1, Ordering::SeqCst);
                s.held_signal.notify_waiters();
                loop {
                    let released = s.release.notified();
                    if s.released.load(Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
                answer
            }
            None => {
                let answer = forward(upstream, &head, &body).await?;
                s.forwarded.fetch_add(1, Ordering::SeqCst);
                answer
            }
        };
        w.write_all(&answer).await?;
        w.flush().await?;
    }
}

/// Sends one request upstream on a fresh connection and returns the answer, re-framed
/// with a Content-Length for the client's kept-alive connection.
async fn forward(upstream: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut out = format!("{request_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if name != "connection" && name != "transfer-encoding" && name != "content-length" {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    up.write_all(out.as_bytes()).await?;
    up.write_all(body).await?;
    up.flush().await?;
    let mut r = BufReader::new(up);
    let (head, body) = read_message(&mut r)
        .await?
        .ok_or_else(|| std::io::Error::other("the upstream closed without answering"))?;
    Ok(reframe(&head, &body))
}

fn reframe(head: &str, body: &[u8]) -> Vec<u8> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut out = format!("{status_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if name != "connection" && name != "transfer-encoding" && name != "content-length" {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn ec2_error(status: u16, code: &str) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(1);
    let id = N.fetch_add(1, Ordering::SeqCst);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error></Errors>\
         <RequestID>00000000-0000-0000-0000-{id:012}</RequestID></Response>"
    );
    let reason = match status {
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/xml;charset=UTF-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 message: the head (without the blank line) and the decoded body.
/// `None` when the peer closed before sending anything.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    use tokio::io::AsyncBufReadExt;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other(
                    "connection closed inside a message head",
                ))
            };
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(line.trim_end_matches(['\r', '\n']));
        head.push_str("\r\n");
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).await?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    } else if head.starts_with("HTTP/") {
        // An answer without length: it ends when the upstream closes.
        r.read_to_end(&mut body).await?;
    }
    Ok(Some((head, body)))
}

/// Creates what the `s3` state backend needs, as a user would beforehand: a bucket for the
/// state object and a DynamoDB lock table whose hash key is `LockID`.
pub async fn create_state_store(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    table: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await?;
    aws_sdk_dynamodb::Client::new(sdk)
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("LockID")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("LockID")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    Ok(())
}
