//! An in-process fake Kubernetes API server for what cluster mode reads:
//! `kubevirt.io/v1` VirtualMachines and KubeVirts, over plain HTTP/1.1.
//!
//! It serves exactly the requests kube-runtime 5's `watcher` (ListWatch
//! strategy, `watcher::Config::default()`) and `Api::get_opt` send:
//!
//! - list: `GET /apis/kubevirt.io/v1[/namespaces/{ns}]/{plural}?limit=500[&continue=T]`
//!   — pages come from one snapshot (consistent like etcd), with
//!   `metadata.continue`, `metadata.resourceVersion` and `remainingItemCount`;
//!   an unknown or expired continue token is a 410 `Status`.
//! - watch: `...?watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=N`
//!   — newline-delimited JSON events, chunked, kept open: the recorded
//!   changes after N, then live ones, periodic BOOKMARKs when allowed, closed
//!   after `timeoutSeconds`. A watch from before the last compaction (silent
//!   changes, bulk loads) or after [`FakeApi::force_gone_next_watch`] gets an
//!   `ERROR` event with a 410 `Status`, as the real API server sends.
//!   `resourceVersion=0`/empty sends the current objects as ADDED first;
//!   `sendInitialEvents=true` (a streaming list) ends those with the
//!   `k8s.io/initial-events-end` bookmark. A streaming list counts as a
//!   list ([`Verb::List`]), and the list faults below apply to it.
//! - get: `GET /apis/kubevirt.io/v1/namespaces/{ns}/{plural}/{name}` — 200 or
//!   a 404 `Status`.
//!
//! Objects are kept as pre-serialized JSON bytes (with their
//! `metadata.resourceVersion` filled in), so a page of 500 VMs is a
//! concatenation, and 100,000 VMs are served at memory speed.
//!
//! Faults: [`FakeApi::set_down`] (503 for everything, or connections dropped),
//! [`FakeApi::hold_lists`] (lists wait), [`FakeApi::fail_lists`] (lists get an
//! error status), [`FakeApi::fail_gets`] (GETs get one),
//! [`FakeApi::expire_watches`] (410 on open watches), [`FakeApi::hold_events`]
//! (changes are stored and read by GET, but watchers see them only later),
//! [`FakeApi::streaming_lists`] (refused as by an API server without the
//! WatchList feature, or ended before their end marker).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use super::LockUnpoisoned as _;

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Res {
    /// `virtualmachines`
    Vm,
    /// `kubevirts`
    KubeVirt,
}

impl Res {
    pub const ALL: [Res; 2] = [Res::Vm, Res::KubeVirt];

    pub fn plural(self) -> &'static str {
        match self {
            Res::Vm => "virtualmachines",
            Res::KubeVirt => "kubevirts",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Res::Vm => "VirtualMachine",
            Res::KubeVirt => "KubeVirt",
        }
    }
    fn from_plural(s: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.plural() == s)
    }
    fn index(self) -> usize {
        match self {
            Res::Vm => 0,
            Res::KubeVirt => 1,
        }
    }
}

/// What a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// A list, or a streaming list (a watch with `sendInitialEvents=true`).
    List,
    Watch,
    Get,
    /// Anything else (other methods or paths).
    Other,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub verb: Verb,
    pub res: Option<Res>,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// When it arrived: the gaps between a client's retries are at least
    /// its delays, however loaded the machine.
    pub at: std::time::Instant,
}

/// How the fake answers while it is "down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// Serving normally.
    Up,
    /// Every request gets a 503 `Status`; open watches are closed.
    Unavailable,
    /// Every connection is closed (reset) at once, open ones included:
    /// like an API server that went away.
    Refuse,
}

/// How the fake answers streaming lists (`watch=true&sendInitialEvents=true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streaming {
    /// Served: the objects, then the `k8s.io/initial-events-end` bookmark.
    Served,
    /// 422 Invalid, as kube-apiserver answers with the WatchList feature
    /// off (1.27-1.31, and 1.33 by default).
    Refused,
    /// The objects, then the stream ends without the end bookmark.
    Unfinished,
}

/// An event line for watchers, in resourceVersion order.
struct Ev {
    rv: u64,
    what: EvKind,
    /// The full line, newline included.
    line: Bytes,
}

enum EvKind {
    /// ADDED/MODIFIED/DELETED of an object in this namespace.
    Object {
        ns: String,
    },
    Bookmark,
    /// Send a 410 ERROR event, then end the stream.
    Gone,
    /// End the stream (connection kept).
    Close,
}

/// A stored object: its resourceVersion and its JSON bytes.
#[derive(Clone)]
struct Stored {
    rv: u64,
    bytes: Bytes,
}

/// A consistent list result that continue tokens page through.
struct Snapshot {
    rv: u64,
    items: Vec<Bytes>,
}

struct Collection {
    res: Res,
    /// Keyed by (namespace, name): listing order is stable.
    objects: BTreeMap<(String, String), Stored>,
    /// Reachable by GET only: never listed, never watched.
    hidden: BTreeMap<(String, String), Stored>,
    /// Every recorded change (watch replay), oldest first.
    history: VecDeque<Arc<Ev>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    tx: broadcast::Sender<Arc<Ev>>,
    gone_next: usize,
    snapshots: HashMap<u64, Arc<Snapshot>>,
    snapshot_order: VecDeque<u64>,
    /// While events are held: the object events not sent yet, oldest first.
    held: Option<Vec<Ev>>,
}

impl Collection {
    fn new(res: Res) -> Self {
        Collection {
            res,
            objects: BTreeMap::new(),
            hidden: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            tx: broadcast::channel(16 * 1024).0,
            gone_next: 0,
            snapshots: HashMap::new(),
            snapshot_order: VecDeque::new(),
            held: None,
        }
    }

    fn push(&mut self, ev: Ev) {
        if let (Some(held), EvKind::Object { .. }) = (&mut self.held, &ev.what) {
            held.push(ev);
            return;
        }
        let ev = Arc::new(ev);
        if matches!(ev.what, EvKind::Object { .. }) {
            self.history.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }
}

struct Store {
    rv: u64,
    next_snapshot: u64,
    cols: [Collection; 2],
}

impl Store {
    fn col(&mut self, r: Res) -> &mut Collection {
        &mut self.cols[r.index()]
    }

    /// The next resourceVersion, stamped into `obj`, and `obj` serialised.
    fn stamp(&mut self, mut obj: Value) -> Stored {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let bytes = Bytes::from(serde_json::to_vec(&obj).expect("serialize"));
        Stored { rv: self.rv, bytes }
    }
}

struct Control {
    hold: watch::Sender<bool>,
    fail: Mutex<Option<u16>>,
    streaming: Mutex<Streaming>,
    fail_gets: Mutex<Option<u16>>,
    open_watches: AtomicUsize,
}

struct Inner {
    store: Mutex<Store>,
    seen: Mutex<Vec<Seen>>,
    down: watch::Sender<Down>,
    refused: AtomicUsize,
    controls: [Control; 2],
    page_cap: usize,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock_unpoisoned()
    }
    fn control(&self, r: Res) -> &Control {
        &self.controls[r.index()]
    }
}

/// The fake API server; stops (drops every connection) when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: tokio::task::JoinHandle<()>,
    bookmarks: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.accept.abort();
        self.bookmarks.abort();
        self.inner.down.send_replace(Down::Refuse);
    }
}

/// Options for [`FakeApi::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// How often open watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Largest page served whatever `limit` asks (the real API caps too).
    pub page_cap: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(2),
            page_cap: 10_000,
        }
    }
}

impl FakeApi {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> FakeApi {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API");
        let addr = listener.local_addr().expect("addr");
        let control = || Control {
            hold: watch::channel(false).0,
            fail: Mutex::new(None),
            streaming: Mutex::new(Streaming::Served),
            fail_gets: Mutex::new(None),
            open_watches: AtomicUsize::new(0),
        };
        let inner = Arc::new(Inner {
            store: Mutex::new(Store {
                rv: 1000,
                next_snapshot: 1,
                cols: [Collection::new(Res::Vm), Collection::new(Res::KubeVirt)],
            }),
            seen: Mutex::new(Vec::new()),
            down: watch::channel(Down::Up).0,
            refused: AtomicUsize::new(0),
            controls: [control(), control()],
            page_cap: opts.page_cap,
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let accept = tokio::spawn(accept_loop(listener, router, inner.clone()));
        let bookmarks = tokio::spawn(bookmark_loop(inner.clone(), opts.bookmark_interval));
        FakeApi {
            addr,
            inner,
            accept,
            bookmarks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server without authentication.
    pub fn kubeconfig(&self) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .prefix("fake-kubeconfig-")
            .suffix(".yaml")
            .tempfile()
            .expect("kubeconfig tempfile");
        write!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
        .expect("write kubeconfig");
        f.flush().expect("flush kubeconfig");
        f
    }

    // ---- objects ----

    /// The KubeVirt resource `kubevirt/kubevirt` with RecreateVMIOnReboot
    /// listed in its featureGates: the gate on.
    pub fn enable_gate(&self) {
        self.apply(
            Res::KubeVirt,
            kubevirt_cr("kubevirt", &["RecreateVMIOnReboot"], &[], None),
        );
    }

    /// Creates or replaces an object (ADDED or MODIFIED event); returns its
    /// new resourceVersion.
    pub fn apply(&self, r: Res, obj: Value) -> u64 {
        self.change(r, obj, true)
    }

    /// Like [`apply`](Self::apply) but no watch event is ever sent for it (as
    /// if compacted away): watchers only learn of it by relisting.
    pub fn apply_silently(&self, r: Res, obj: Value) -> u64 {
        self.change(r, obj, false)
    }

    fn change(&self, r: Res, obj: Value, event: bool) -> u64 {
        let (ns, name) = key_of(&obj);
        let mut store = self.inner.store();
        let Stored { rv, bytes } = store.stamp(obj);
        let col = store.col(r);
        let key = (ns.clone(), name);
        let existed = col
            .objects
            .insert(
                key,
                Stored {
                    rv,
                    bytes: bytes.clone(),
                },
            )
            .is_some();
        if event {
            let kind = if existed { "MODIFIED" } else { "ADDED" };
            col.push(Ev {
                rv,
                what: EvKind::Object { ns },
                line: event_line(kind, &bytes),
            });
        } else {
            col.compacted = rv;
        }
        rv
    }

    /// Deletes an object (DELETED event); false if there was none.
    pub fn delete(&self, r: Res, ns: &str, name: &str) -> bool {
        self.remove(r, ns, name, true)
    }

    /// Deletes without a watch event (see [`apply_silently`](Self::apply_silently)).
    pub fn delete_silently(&self, r: Res, ns: &str, name: &str) -> bool {
        self.remove(r, ns, name, false)
    }

    fn remove(&self, r: Res, ns: &str, name: &str, event: bool) -> bool {
        let mut store = self.inner.store();
        store.rv += 1;
        let rv = store.rv;
        let col = store.col(r);
        let Some(old) = col.objects.remove(&(ns.to_owned(), name.to_owned())) else {
            return false;
        };
        if event {
            let mut obj: Value = serde_json::from_slice(&old.bytes).expect("stored JSON");
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let bytes = serde_json::to_vec(&obj).expect("serialize");
            col.push(Ev {
                rv,
                what: EvKind::Object { ns: ns.to_owned() },
                line: event_line("DELETED", &bytes),
            });
        } else {
            col.compacted = rv;
        }
        true
    }

    /// Loads many objects at once without events (a fresh cluster: watches
    /// from before this relist). Returns how many are stored now.
    pub fn load(&self, r: Res, objs: impl IntoIterator<Item = Value>) -> usize {
        let mut store = self.inner.store();
        store.rv += 1;
        let rv = store.rv;
        let col = store.col(r);
        for mut obj in objs {
            let (ns, name) = key_of(&obj);
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let bytes = Bytes::from(serde_json::to_vec(&obj).expect("serialize"));
            col.objects.insert((ns, name), Stored { rv, bytes });
        }
        col.compacted = rv;
        col.objects.len()
    }

    /// Stores an object that only GET returns: never listed or watched (a VM
    /// created a moment ago that the watch has not delivered yet).
    pub fn put_hidden(&self, r: Res, obj: Value) {
        let (ns, name) = key_of(&obj);
        let mut store = self.inner.store();
        let stored = store.stamp(obj);
        store.col(r).hidden.insert((ns, name), stored);
    }

    /// How many objects are listed (hidden ones excluded).
    pub fn len(&self, r: Res) -> usize {
        self.inner.store().col(r).objects.len()
    }

    /// The current object, as stored.
    pub fn object(&self, r: Res, ns: &str, name: &str) -> Option<Value> {
        let mut store = self.inner.store();
        let s = store
            .col(r)
            .objects
            .get(&(ns.to_owned(), name.to_owned()))?
            .clone();
        Some(serde_json::from_slice(&s.bytes).expect("stored JSON"))
    }

    // ---- requests ----

    /// Every request seen so far (refused connections are not requests).
    pub fn requests(&self) -> Vec<Seen> {
        self.inner.seen.lock_unpoisoned().clone()
    }

    /// Requests matching `verb` and `res` (`None` = any).
    pub fn count(&self, verb: Option<Verb>, res: Option<Res>) -> usize {
        let seen = self.inner.seen.lock_unpoisoned();
        seen.iter()
            .filter(|s| verb.is_none_or(|v| s.verb == v) && res.is_none_or(|r| s.res == Some(r)))
            .count()
    }

    /// Total requests seen.
    pub fn total(&self) -> usize {
        self.count(None, None)
    }

    /// Requests for exactly this path (query excluded).
    pub fn count_path(&self, path: &str) -> usize {
        let seen = self.inner.seen.lock_unpoisoned();
        seen.iter().filter(|s| s.path == path).count()
    }

    /// Counts per (verb, resource).
    pub fn counts(&self) -> HashMap<(Verb, Option<Res>), usize> {
        let mut m = HashMap::new();
        for s in self.requests() {
            *m.entry((s.verb, s.res)).or_default() += 1;
        }
        m
    }

    /// Forgets the requests seen so far.
    pub fn reset_requests(&self) {
        self.inner.seen.lock_unpoisoned().clear();
    }

    /// Connections dropped while [`Down::Refuse`].
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Watch streams open right now on `r`.
    pub fn open_watches(&self, r: Res) -> usize {
        self.inner.control(r).open_watches.load(Ordering::SeqCst)
    }

    /// Waits until `r` has at least `n` open watches; panics after `timeout`.
    pub async fn wait_watches(&self, r: Res, n: usize, timeout: Duration) {
        let what = format!("{n} open {r:?} watches");
        super::wait_until(&what, timeout, || async { self.open_watches(r) >= n }).await;
    }

    // ---- faults ----

    /// Takes the server down (503s, or dropped connections) or brings it up.
    pub fn set_down(&self, mode: Down) {
        self.inner.down.send_replace(mode);
        if mode == Down::Unavailable {
            for r in Res::ALL {
                self.close_watches(r);
            }
        }
    }

    /// While on, list requests for `r` wait (they are counted on arrival).
    pub fn hold_lists(&self, r: Res, on: bool) {
        self.inner.control(r).hold.send_replace(on);
    }

    /// While set, list requests for `r` get this status code (use a code the
    /// client does not retry by itself, like 500, for fast failures).
    pub fn fail_lists(&self, r: Res, code: Option<u16>) {
        *self.inner.control(r).fail.lock_unpoisoned() = code;
    }

    /// How streaming lists of `r` are answered from now on.
    pub fn streaming_lists(&self, r: Res, how: Streaming) {
        *self.inner.control(r).streaming.lock_unpoisoned() = how;
    }

    /// While set, GETs of single objects of `r` get this status code.
    pub fn fail_gets(&self, r: Res, code: Option<u16>) {
        *self.inner.control(r).fail_gets.lock_unpoisoned() = code;
    }

    /// While on, changes of `r` are stored (GET returns them at once) but
    /// their watch events wait, and so do bookmarks; turning it off sends
    /// them in order. As a watch that is behind: another client (KubeVirt's
    /// controller) may act on a change before this watcher sees it.
    pub fn hold_events(&self, r: Res, on: bool) {
        let mut store = self.inner.store();
        let col = store.col(r);
        match (on, col.held.take()) {
            (true, held) => col.held = Some(held.unwrap_or_default()),
            (false, held) => {
                for ev in held.unwrap_or_default() {
                    col.push(ev);
                }
            }
        }
    }

    /// The next watch request on `r` gets a 410 ERROR event ("too old
    /// resource version"), so the client relists.
    pub fn force_gone_next_watch(&self, r: Res) {
        self.inner.store().col(r).gone_next += 1;
    }

    /// Open watches on `r` get a 410 ERROR event and end; if none is open,
    /// the next watch gets it instead.
    pub fn expire_watches(&self, r: Res) {
        let open = self.open_watches(r);
        let mut store = self.inner.store();
        let rv = store.rv;
        let col = store.col(r);
        if open == 0 {
            col.gone_next += 1;
        } else {
            col.push(Ev {
                rv,
                what: EvKind::Gone,
                line: gone_line(rv, rv),
            });
        }
    }

    /// Open watches on `r` end cleanly (the client rewatches from its last
    /// resourceVersion).
    pub fn close_watches(&self, r: Res) {
        let mut store = self.inner.store();
        let rv = store.rv;
        store.col(r).push(Ev {
            rv,
            what: EvKind::Close,
            line: Bytes::new(),
        });
    }
}

fn key_of(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("default").to_owned();
    let name = meta["name"]
        .as_str()
        .expect("object has metadata.name")
        .to_owned();
    (ns, name)
}

fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 40);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line.into()
}

fn gone_line(asked: u64, current: u64) -> Bytes {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({current})"),
        "reason": "Expired", "code": 410,
    });
    event_line("ERROR", status.to_string().as_bytes())
}

fn bookmark_line(r: Res, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": r.kind(), "apiVersion": "kubevirt.io/v1", "metadata": meta});
    event_line("BOOKMARK", obj.to_string().as_bytes())
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn accept_loop(listener: TcpListener, router: Router, inner: Arc<Inner>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut down = inner.down.subscribe();
        if *down.borrow() == Down::Refuse {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection closes the socket, open watches included.
                _ = down.wait_for(|d| *d == Down::Refuse) => {}
            }
        });
    }
}

async fn bookmark_loop(inner: Arc<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut store = inner.store();
        let rv = store.rv;
        for r in Res::ALL {
            let col = store.col(r);
            // A bookmark past a held event would tell watchers they have it.
            if col.held.is_none() {
                col.push(Ev {
                    rv,
                    what: EvKind::Bookmark,
                    line: bookmark_line(r, rv, false),
                });
            }
        }
    }
}

/// The parsed request path.
enum Target {
    Collection { res: Res, ns: Option<String> },
    Object { res: Res, ns: String, name: String },
}

fn parse_path(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/apis/kubevirt.io/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [plural] => Some(Target::Collection {
            res: Res::from_plural(plural)?,
            ns: None,
        }),
        ["namespaces", ns, plural] => Some(Target::Collection {
            res: Res::from_plural(plural)?,
            ns: Some((*ns).to_owned()),
        }),
        ["namespaces", ns, plural, name] => Some(Target::Object {
            res: Res::from_plural(plural)?,
            ns: (*ns).to_owned(),
            name: (*name).to_owned(),
        }),
        _ => None,
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let target = if method == Method::GET {
        parse_path(&path)
    } else {
        None
    };
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let streaming = watch && q.get("sendInitialEvents").is_some_and(|s| s == "true");
    let (verb, res) = match &target {
        Some(Target::Collection { res, .. }) if watch && !streaming => (Verb::Watch, Some(*res)),
        Some(Target::Collection { res, .. }) => (Verb::List, Some(*res)),
        Some(Target::Object { res, .. }) => (Verb::Get, Some(*res)),
        None => (Verb::Other, None),
    };
    let response = if *inner.down.borrow() != Down::Up {
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
        )
    } else {
        match target {
            None => status(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ),
            Some(Target::Object { res, ns, name }) => {
                let fail = *inner.control(res).fail_gets.lock_unpoisoned();
                match fail {
                    Some(code) => status(
                        code,
                        "InternalError",
                        "get failed (injected by the test)".into(),
                    ),
                    None => get_object(&inner, res, &ns, &name),
                }
            }
            Some(Target::Collection { res, ns }) if streaming => {
                record(&inner, verb, Some(res), &path, &query, 0);
                return streaming_list(&inner, res, ns, &q).await;
            }
            Some(Target::Collection { res, ns }) if watch => start_watch(&inner, res, ns, &q),
            Some(Target::Collection { res, ns }) => {
                // Counted on arrival, so held lists show up in the counters.
                record(&inner, verb, Some(res), &path, &query, 0);
                return list(&inner, res, ns, &q).await;
            }
        }
    };
    record(&inner, verb, res, &path, &query, response.status().as_u16());
    response
}

fn record(inner: &Inner, verb: Verb, res: Option<Res>, path: &str, query: &str, status: u16) {
    inner.seen.lock_unpoisoned().push(Seen {
        verb,
        res,
        path: path.to_owned(),
        query: query.to_owned(),
        status,
        at: std::time::Instant::now(),
    });
}

fn get_object(inner: &Inner, res: Res, ns: &str, name: &str) -> Response {
    let mut store = inner.store();
    let col = store.col(res);
    let key = (ns.to_owned(), name.to_owned());
    match col.objects.get(&key).or_else(|| col.hidden.get(&key)) {
        Some(s) => json_response(s.bytes.clone()),
        None => status(
            404,
            "NotFound",
            format!("{}.kubevirt.io \"{name}\" not found", res.plural()),
        ),
    }
}

/// The list faults ([`FakeApi::hold_lists`], [`FakeApi::fail_lists`]):
/// waits while lists are held, then the injected failure, if any.
async fn list_faults(inner: &Inner, res: Res) -> Option<Response> {
    let mut hold = inner.control(res).hold.subscribe();
    let _ = hold.wait_for(|h| !*h).await;
    let fail = *inner.control(res).fail.lock_unpoisoned();
    fail.map(|code| {
        status(
            code,
            "InternalError",
            "list failed (injected by the test)".into(),
        )
    })
}

/// A watch with `sendInitialEvents=true`, as [`FakeApi::streaming_lists`] says.
async fn streaming_list(
    inner: &Arc<Inner>,
    res: Res,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    if let Some(failed) = list_faults(inner, res).await {
        return failed;
    }
    let how = *inner.control(res).streaming.lock_unpoisoned();
    match how {
        Streaming::Served => start_watch(inner, res, ns, q),
        Streaming::Refused => status(
            422,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled".into(),
        ),
        Streaming::Unfinished => {
            let mut store = inner.store();
            let col = store.col(res);
            let lines: Vec<Result<Bytes, Infallible>> = col
                .objects
                .iter()
                .filter(|((n, _), _)| ns.as_deref().is_none_or(|want| want == n))
                .map(|(_, s)| Ok(event_line("ADDED", &s.bytes)))
                .collect();
            let body = Body::from_stream(futures::stream::iter(lines));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

async fn list(
    inner: &Inner,
    res: Res,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    if let Some(failed) = list_faults(inner, res).await {
        return failed;
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .map_or(inner.page_cap, |l| l.min(inner.page_cap));
    let (snapshot, id, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            let mut store = inner.store();
            let found = parsed.and_then(|(id, off)| {
                let snap = store.col(res).snapshots.get(&id)?.clone();
                Some((snap, id, off))
            });
            match found {
                Some(f) => f,
                None => {
                    return status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    )
                }
            }
        }
        None => {
            let mut store = inner.store();
            store.next_snapshot += 1;
            let id = store.next_snapshot;
            let rv = store.rv;
            let col = store.col(res);
            let items: Vec<Bytes> = match &ns {
                None => col.objects.values().map(|s| s.bytes.clone()).collect(),
                Some(ns) => col
                    .objects
                    .range((ns.clone(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, s)| s.bytes.clone())
                    .collect(),
            };
            let snap = Arc::new(Snapshot { rv, items });
            if snap.items.len() > limit {
                col.snapshots.insert(id, snap.clone());
                col.snapshot_order.push_back(id);
                while col.snapshot_order.len() > 16 {
                    let old = col.snapshot_order.pop_front().expect("non-empty");
                    col.snapshots.remove(&old);
                }
            }
            (snap, id, 0)
        }
    };
    let end = (offset + limit).min(snapshot.items.len());
    let page = &snapshot.items[offset.min(end)..end];
    let more = end < snapshot.items.len();
    let size: usize = page.iter().map(Bytes::len).sum::<usize>() + page.len() + 256;
    let mut out = Vec::with_capacity(size);
    write!(
        out,
        "{{\"apiVersion\":\"kubevirt.io/v1\",\"kind\":\"{}List\",\"metadata\":{{\"resourceVersion\":\"{}\"",
        res.kind(),
        snapshot.rv
    )
    .expect("write");
    if more {
        write!(
            out,
            ",\"continue\":\"{id}-{end}\",\"remainingItemCount\":{}",
            snapshot.items.len() - end
        )
        .expect("write");
    }
    out.extend_from_slice(b"},\"items\":[");
    for (i, item) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    json_response(out.into())
}

/// Decrements the open-watch count when the stream is dropped.
struct OpenGuard(Arc<Inner>, Res);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .control(self.1)
            .open_watches
            .fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchStream {
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<Ev>>,
    ns: Option<String>,
    bookmarks: bool,
    last_rv: u64,
    deadline: tokio::time::Instant,
    done: bool,
    _open: OpenGuard,
}

impl WatchStream {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        loop {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return None,
                r = self.rx.recv() => r,
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: the real API server drops it with 410.
                    self.done = true;
                    return Some(gone_line(self.last_rv, self.last_rv));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            match &ev.what {
                EvKind::Object { ns } => {
                    if ev.rv <= self.last_rv || self.ns.as_ref().is_some_and(|want| want != ns) {
                        continue;
                    }
                    self.last_rv = ev.rv;
                    return Some(ev.line.clone());
                }
                EvKind::Bookmark => {
                    if self.bookmarks && ev.rv >= self.last_rv {
                        self.last_rv = ev.rv;
                        return Some(ev.line.clone());
                    }
                }
                EvKind::Gone => {
                    self.done = true;
                    return Some(ev.line.clone());
                }
                EvKind::Close => return None,
            }
        }
    }
}

fn start_watch(
    inner: &Arc<Inner>,
    res: Res,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let initial_events = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let in_ns = |n: &str| ns.as_deref().is_none_or(|want| want == n);

    let mut store = inner.store();
    let latest = store.rv;
    let col = store.col(res);
    // A watch opened while events are held starts before them.
    let current = (col.held.as_ref())
        .and_then(|h| h.first())
        .map_or(latest, |ev| ev.rv - 1);
    let mut pending = VecDeque::new();
    match from {
        Some(rv) if col.gone_next > 0 || rv < col.compacted => {
            col.gone_next = col.gone_next.saturating_sub(1);
            // Only the ERROR event, then the end: the client must relist.
            let line = gone_line(rv, current);
            let body = Body::from_stream(futures::stream::iter([Ok::<Bytes, Infallible>(line)]));
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Some(rv) => {
            for ev in col.history.iter().filter(|e| e.rv > rv) {
                if let EvKind::Object { ns } = &ev.what {
                    if in_ns(ns) {
                        pending.push_back(ev.line.clone());
                    }
                }
            }
        }
        None => {
            for ((n, _), s) in &col.objects {
                if in_ns(n) {
                    pending.push_back(event_line("ADDED", &s.bytes));
                }
            }
            if initial_events {
                pending.push_back(bookmark_line(res, current, true));
            }
        }
    }
    let rx = col.tx.subscribe();
    drop(store);
    inner
        .control(res)
        .open_watches
        .fetch_add(1, Ordering::SeqCst);
    let stream = WatchStream {
        pending,
        rx,
        ns,
        bookmarks,
        last_rv: current,
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        done: false,
        _open: OpenGuard(inner.clone(), res),
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|b| (Ok::<Bytes, Infallible>(b), s))
    }));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---- realistic objects ----

/// A deterministic uid for VM number `i`.
pub fn uid(i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (i.wrapping_mul(2_654_435_761)) & 0xffff_ffff,
        (i >> 3) & 0xffff,
        i & 0xfff,
        (i >> 7) & 0xfff,
        i.wrapping_mul(11_400_714_819_323_198_485) & 0xffff_ffff_ffff
    )
}

/// The `metadata.generation` of [`realistic_vm`]s.
pub const REALISTIC_VM_GENERATION: i64 = 3;

/// The AdmissionReview virt-controller sends when it creates the VMI of VM
/// `owner` (controlled by it, about 1 KB), built from the VM at
/// [`REALISTIC_VM_GENERATION`] (`kubevirt.io/vm-generation`; see
/// [`built_from`]); `n` makes the review's uid unique.
pub fn realistic_vmi_create(ns: &str, owner: &str, owner_uid: &str, n: u64) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("eeeeeeee-0000-0000-0000-{n:012}"),
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachineInstance"},
            "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachineinstances"},
            "name": owner, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": super::CONTROLLER,
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": {
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": owner, "namespace": ns, "labels": {"kubevirt.io/vm": owner},
                    "annotations": {"kubevirt.io/vm-generation": REALISTIC_VM_GENERATION.to_string()},
                    "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "name": owner, "uid": owner_uid, "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                                    "resources": {"requests": {"memory": "1Gi"}}},
                         "volumes": [{"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}]}
            }
        }
    })
}

/// `review` (a VMI CREATE) as built from the VM at `generation`
/// (`kubevirt.io/vm-generation`), or, with `None`, without the annotation,
/// as from a KubeVirt that does not set it.
pub fn built_from(mut review: Value, generation: Option<i64>) -> Value {
    let meta = &mut review["request"]["object"]["metadata"];
    match generation {
        Some(g) => meta["annotations"]["kubevirt.io/vm-generation"] = json!(g.to_string()),
        None => {
            if let Some(a) = meta["annotations"].as_object_mut() {
                a.remove("kubevirt.io/vm-generation");
            }
        }
    }
    review
}

/// `vm` (from [`realistic_vm`]) at `generation`, as the API server counts
/// spec changes.
pub fn at_generation(mut vm: Value, generation: i64) -> Value {
    vm["metadata"]["generation"] = json!(generation);
    vm["status"]["observedGeneration"] = json!(generation);
    vm["status"]["desiredGeneration"] = json!(generation);
    vm
}

/// A VirtualMachine as a real cluster returns it (~3 KB of JSON): labels,
/// annotations with kubectl's last-applied configuration, managedFields, a
/// template with disks, interfaces, networks and volumes including cloud-init
/// userData, a DataVolume template, and a status with conditions.
pub fn realistic_vm(ns: &str, name: &str, uid: &str, run_strategy: &str) -> Value {
    let user_data = format!(
        "#cloud-config\nhostname: {name}\nuser: fedora\npassword: changeme\nchpasswd: {{ expire: False }}\n\
         ssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2b3Zxd1pTa0l4bUZ4R2ZkV3Y0 ops@example.com\n\
         packages:\n  - qemu-guest-agent\n  - cloud-utils-growpart\nruncmd:\n  - [ systemctl, enable, --now, qemu-guest-agent ]\n"
    );
    let template_spec = json!({
        "domain": {
            "cpu": {"cores": 2, "sockets": 1, "threads": 1},
            "memory": {"guest": "4Gi"},
            "machine": {"type": "q35"},
            "features": {"acpi": {}, "smm": {"enabled": true}},
            "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
            "devices": {
                "disks": [
                    {"name": "rootdisk", "disk": {"bus": "virtio"}, "bootOrder": 1},
                    {"name": "datadisk", "disk": {"bus": "virtio"}},
                    {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}
                ],
                "interfaces": [{"name": "default", "masquerade": {}, "model": "virtio"}],
                "rng": {}
            },
            "resources": {"requests": {"memory": "4Gi", "cpu": "500m"}, "limits": {"memory": "4Gi"}}
        },
        "networks": [{"name": "default", "pod": {}}],
        "terminationGracePeriodSeconds": 180,
        "evictionStrategy": "LiveMigrate",
        "volumes": [
            {"name": "rootdisk", "dataVolume": {"name": format!("{name}-root")}},
            {"name": "datadisk", "persistentVolumeClaim": {"claimName": format!("{name}-data")}},
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}}
        ]
    });
    let labels = json!({
        "app": name, "app.kubernetes.io/part-of": "fleet", "tier": "backend",
        "team": "platform", "kubevirt.io/os": "fedora"
    });
    let applied = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"runStrategy": run_strategy, "template": {"spec": {"domain": {"cpu": {"cores": 2}, "memory": {"guest": "4Gi"}}}}}
    });
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "resourceVersion": "1",
            "generation": REALISTIC_VM_GENERATION,
            "creationTimestamp": "2025-03-14T09:26:53Z",
            "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": applied.to_string(),
                "kubevirt.io/latest-observed-api-version": "v1",
                "kubevirt.io/storage-observed-api-version": "v1",
                "description": "fleet worker"
            },
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "kubevirt.io/v1",
                 "time": "2025-03-14T09:26:53Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}, "f:labels": {".": {}, "f:app": {}}},
                              "f:spec": {".": {}, "f:runStrategy": {}, "f:template": {".": {}, "f:spec": {".": {}, "f:domain": {}}}}}},
                {"manager": "virt-controller", "operation": "Update", "apiVersion": "kubevirt.io/v1",
                 "time": "2025-03-14T09:27:41Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {".": {}, "f:conditions": {}, "f:created": {}, "f:printableStatus": {}, "f:ready": {}}}}
            ]
        },
        "spec": {
            "runStrategy": run_strategy,
            "dataVolumeTemplates": [{
                "metadata": {"name": format!("{name}-root")},
                "spec": {"sourceRef": {"kind": "DataSource", "name": "fedora", "namespace": "kubevirt-os-images"},
                         "storage": {"resources": {"requests": {"storage": "30Gi"}}}}
            }],
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name, "kubevirt.io/domain": name},
                             "annotations": {"vm.kubevirt.io/flavor": "small", "vm.kubevirt.io/os": "fedora"}},
                "spec": template_spec
            }
        },
        "status": {
            "created": true,
            "ready": true,
            "printableStatus": "Running",
            "desiredGeneration": 3,
            "observedGeneration": 3,
            "runStrategy": run_strategy,
            "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:27:41Z"},
                {"type": "LiveMigratable", "status": "True", "lastProbeTime": null, "lastTransitionTime": null},
                {"type": "AgentConnected", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-03-14T09:28:10Z"}
            ],
            "volumeSnapshotStatuses": [
                {"name": "rootdisk", "enabled": true},
                {"name": "datadisk", "enabled": true},
                {"name": "cloudinitdisk", "enabled": false, "reason": "Snapshot is not supported for this volumeSource type [cloudinitdisk]"}
            ]
        }
    })
}

/// A `KubeVirt` resource with these feature gate lists and observed version.
pub fn kubevirt_cr(
    ns: &str,
    enabled: &[&str],
    disabled: &[&str],
    observed_version: Option<&str>,
) -> Value {
    let mut status = json!({"phase": "Deployed"});
    if let Some(v) = observed_version {
        status["observedKubeVirtVersion"] = json!(v);
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": ns, "uid": "5f0e8a2c-0000-4000-8000-00000000c0de"},
        "spec": {
            "certificateRotateStrategy": {},
            "configuration": {"developerConfiguration": {
                "featureGates": enabled, "disabledFeatureGates": disabled}},
            "imagePullPolicy": "IfNotPresent",
            "workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]}
        },
        "status": status
    })
}
