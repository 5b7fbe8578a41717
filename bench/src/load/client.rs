//! The load generator: closed-loop workers over hyper's client connections,
//! every answer checked, and one measured round of one server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubevirt_reboot_webhook_bench::payloads::{self, Payload};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::options::{Opts, Proto, Which};
use crate::servers::{cpu_ticks, machine_busy_ticks, peak_rss_kib, Server};

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

async fn connect(addr: SocketAddr, tls: &TlsConnector, proto: Proto) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(proto.alpn()) {
        bail!("ALPN negotiated {alpn:?}, wanted {:?}", proto.alpn());
    }
    let io = TokioIo::new(stream);
    Ok(match proto {
        Proto::H1 => {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        }
        Proto::H2 => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        }
    })
}

#[derive(Default)]
struct WorkerOut {
    /// Latencies (ns) of the right answers completed inside the window.
    latencies: Vec<u64>,
    total: u64,
    non_200: u64,
    errors: u64,
    /// 200 answers that were not the expected answer.
    wrong: u64,
    /// Answers compared with the expected one (every 200).
    checked: u64,
    failures: Vec<String>,
}

struct Job {
    proto: Proto,
    uri: String,
    body: Bytes,
    uid: String,
    payload: Arc<Payload>,
    which: Which,
    warm_end: Instant,
    end: Instant,
}

/// Checks one answer in full. Ours: exactly the payload's expected
/// response (verdict, causes, patch) with the uid echoed. The floor, which
/// decides nothing: an allowed AdmissionReview with the uid echoed.
fn check_answer(job: &Job, body: &[u8]) -> Result<(), String> {
    match job.which {
        Which::Ours => payloads::check_answer(&job.payload, &job.uid, body),
        Which::Floor => {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
            let r = &v["response"];
            if r["uid"].as_str() != Some(job.uid.as_str()) || r["allowed"] != Value::Bool(true) {
                return Err(format!("floor: unexpected answer {v}"));
            }
            Ok(())
        }
    }
}

async fn worker(mut sender: Sender, job: Arc<Job>) -> WorkerOut {
    let mut out = WorkerOut {
        latencies: Vec::with_capacity(1 << 14),
        ..WorkerOut::default()
    };
    // A worker always sends the same request, so every right answer is the
    // same bytes: the first one is checked in full, every later one is
    // compared with it byte for byte (cheap enough to do for all of them).
    let mut verified: Option<Bytes> = None;
    loop {
        let begin = Instant::now();
        if begin >= job.end {
            break;
        }
        let mut req = Request::post(job.uri.as_str()).header(CONTENT_TYPE, "application/json");
        if job.proto == Proto::H1 {
            req = req.header(HOST, "localhost");
        }
        let req = req
            .body(Full::new(job.body.clone()))
            .expect("valid request");
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            let resp = sender.send(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let done = Instant::now();
        out.total += 1;
        match result {
            Ok(Ok((status, body))) => {
                if status != 200 {
                    out.non_200 += 1;
                    if out.failures.len() < 3 {
                        out.failures.push(format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ));
                    }
                    continue;
                }
                out.checked += 1;
                let right = match &verified {
                    Some(v) if *v == body => Ok(()),
                    _ => check_answer(&job, &body),
                };
                if let Err(e) = right {
                    out.wrong += 1;
                    if out.failures.len() < 3 {
                        out.failures.push(e);
                    }
                    continue;
                }
                if verified.is_none() {
                    verified = Some(body);
                }
                // Only right answers count towards req/s, latency and CPU
                // per review: those completed inside the window.
                if done >= job.warm_end && done <= job.end {
                    out.latencies.push((done - begin).as_nanos() as u64);
                }
            }
            Ok(Err(e)) => {
                out.errors += 1;
                if out.failures.len() < 3 {
                    out.failures.push(format!("request failed: {e}"));
                }
                break;
            }
            Err(_) => {
                out.errors += 1;
                out.failures.push("request timed out after 10 s".into());
                break;
            }
        }
    }
    out
}

/// One server's measured round.
#[derive(Clone, Debug)]
pub struct Run {
    /// Right answers completed inside the window, per second.
    pub rps: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub rss_kib: u64,
    /// The measured window, in seconds.
    pub window_s: f64,
    /// Server CPU seconds (utime + stime) inside the window.
    pub cpu_s: f64,
    /// Server CPU per right answer completed inside the window, in µs: the
    /// primary measure (a shared machine's other load slows a server down
    /// but barely changes what each review costs it).
    pub cpu_us: f64,
    /// CPU used by the load generator during the window, in cores (both
    /// servers' loads: a pair is measured at once).
    pub client_cores: f64,
    /// CPU used by every other process on the machine during the window, in
    /// cores (the pair's other server included).
    pub other_cores: f64,
    pub requests: u64,
    pub non_200: u64,
    pub errors: u64,
    pub wrong: u64,
    pub checked: u64,
    pub failures: Vec<String>,
}

/// One case: a protocol, a number of concurrent workers and a payload.
pub struct Case<'a> {
    pub proto: Proto,
    pub concurrency: usize,
    pub payload: &'a Payload,
}

pub async fn measure(
    server: &Server,
    case: &Case<'_>,
    o: &Opts,
    tls: &TlsConnector,
    tck: f64,
) -> anyhow::Result<Run> {
    let pid = server.child.id();
    let c = case.concurrency;
    let senders: Vec<Sender> = match case.proto {
        Proto::H1 => {
            let mut v = Vec::with_capacity(c);
            for _ in 0..c {
                v.push(connect(server.addr, tls, Proto::H1).await?);
            }
            v
        }
        Proto::H2 => {
            let conns = o.h2_conns.unwrap_or(c.div_ceil(32)).min(c);
            let mut shared = Vec::with_capacity(conns);
            for _ in 0..conns {
                match connect(server.addr, tls, Proto::H2).await? {
                    Sender::H2(s) => shared.push(s),
                    Sender::H1(_) => unreachable!(),
                }
            }
            (0..c)
                .map(|i| Sender::H2(shared[i % conns].clone()))
                .collect()
        }
    };
    let path = format!("{}?timeout=10s", case.payload.path);
    let payload = Arc::new(case.payload.clone());
    let uri = match case.proto {
        Proto::H1 => path,
        Proto::H2 => format!("https://localhost:{}{path}", server.addr.port()),
    };
    // Large bodies queue for the body budget: at C=64 a review waits a few
    // hundred ms, so the warm-up must outlast that and the window must hold
    // many of them, or the window catches the queue filling, not its flow.
    let (warmup, duration) = if case.payload.body.len() > 100_000 {
        (o.warmup.max(Duration::from_secs(1)), o.duration * 2)
    } else {
        (o.warmup, o.duration)
    };
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    let mut tasks = Vec::with_capacity(c);
    for (i, sender) in senders.into_iter().enumerate() {
        let uid = format!("00000000-0000-4000-8000-{:012}", i + 1);
        let job = Arc::new(Job {
            proto: case.proto,
            uri: uri.clone(),
            body: Bytes::from(payloads::with_uid(&case.payload.body, &uid)),
            uid,
            payload: payload.clone(),
            which: server.which,
            warm_end,
            end,
        });
        tasks.push(tokio::spawn(worker(sender, job)));
    }
    tokio::time::sleep_until(warm_end.into()).await;
    let me = std::process::id();
    let (cpu0, client0, busy0) = (cpu_ticks(pid), cpu_ticks(me), machine_busy_ticks());
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, client1, busy1) = (cpu_ticks(pid), cpu_ticks(me), machine_busy_ticks());
    let mut all = WorkerOut::default();
    for t in tasks {
        let w = t.await?;
        all.latencies.extend(w.latencies);
        all.total += w.total;
        all.non_200 += w.non_200;
        all.errors += w.errors;
        all.wrong += w.wrong;
        all.checked += w.checked;
        all.failures.extend(w.failures);
    }
    let rss_kib = peak_rss_kib(pid);
    let mut lat = all.latencies;
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i]
    };
    let n = lat.len() as u64;
    let cpu_s = (cpu1.saturating_sub(cpu0)) as f64 / tck;
    let client_s = (client1.saturating_sub(client0)) as f64 / tck;
    let busy_s = (busy1.saturating_sub(busy0)) as f64 / tck;
    let window = duration.as_secs_f64();
    all.failures.truncate(5);
    Ok(Run {
        rps: n as f64 / window,
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
        rss_kib,
        window_s: window,
        cpu_s,
        cpu_us: if n > 0 {
            cpu_s * 1e6 / n as f64
        } else {
            f64::NAN
        },
        client_cores: client_s / window,
        other_cores: (busy_s - cpu_s - client_s).max(0.0) / window,
        requests: n,
        non_200: all.non_200,
        errors: all.errors,
        wrong: all.wrong,
        checked: all.checked,
        failures: all.failures,
    })
}
