//! A Kubernetes API server for tests: the real list/watch protocol over HTTP/1.1, so the
//! daemon runs with a kubeconfig pointing here (or, in a pod of the rig's kubelet, with the
//! in-cluster config) and takes the same code path as in a cluster (kube-rs client, watcher,
//! reflector), and `kubectl` installs podwall on it as on a cluster.
//!
//! Served: Pods, Namespaces, NetworkPolicies (`networking.k8s.io/v1`), Nodes, the kinds an
//! install applies (ServiceAccounts, Secrets, ConfigMaps, ResourceQuotas, DaemonSets,
//! ClusterRoles and ClusterRoleBindings), CustomResourceDefinitions, and
//! ClusterNetworkPolicies while their CRD is installed, at the versions it serves (`crd.rs`),
//! with list (`resourceVersion`, `resourceVersionMatch`, `limit`/`continue` from a frozen
//! snapshot, `labelSelector`,
//! `fieldSelector`), get, and watch (chunked newline-delimited JSON with
//! ADDED/MODIFIED/DELETED replayed from a bounded history, BOOKMARK events, and an ERROR event
//! carrying a 410 `Expired` Status for a version older than the history); writes
//! (create, update, JSON merge and strategic merge patch, delete: `write.rs`; the protobuf
//! body `kubectl create secret` sends: `protobuf.rs`), with the DaemonSet defaults `kubectl
//! rollout status` needs; Events (`core/v1` and `events.k8s.io/v1`) can be created and
//! patched and are recorded; discovery (`/api`, `/apis`, `/version`) and an OpenAPI v2
//! document without definitions (kubectl will not apply without one). Every request must
//! carry the kubeconfig's bearer token. Plain HTTP, or HTTPS with a CA of its own
//! ([`ApiServerBuilder::tls`]).
//!
//! Tests change the world through the Rust control interface (`control.rs`:
//! [`ApiServer::create`], [`ApiServer::apply_yaml`], [`ApiServer::set_status`], …), which
//! assigns versions and uids like etcd, and break it on purpose: [`ApiServer::compact`],
//! [`ApiServer::drop_watches`], [`ApiServer::stop`] / [`ApiServer::restart`],
//! [`ApiServer::deny`].
//! [`ApiServer::requests`] logs every call as the authorizer sees it, for checking a
//! ClusterRole.
//!
//! The server runs on its own thread with a current-thread tokio runtime, so it works the same
//! from plain and from async tests. It needs no root, except [`ApiServer::start_in`], which
//! listens inside a test network namespace.
//!
//! Not modelled: admission (a Pod may name a namespace that does not exist), deleting a
//! Namespace does not delete what is in it, graceful deletion, status subresources over HTTP,
//! server-side apply, protobuf responses (and requests but for Secrets), HTTP/2, RBAC from
//! the stored roles (the test's denials stand in for it), CRD schemas and custom kinds other
//! than ClusterNetworkPolicy (another CRD is stored and serves nothing).

mod builder;
mod control;
mod crd;
mod discovery;
mod events;
mod http;
mod kind;
mod protobuf;
mod route;
mod selector;
mod status;
mod store;
mod tls;
mod write;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use builder::ApiServerBuilder;
pub use control::TypedObject;
pub use events::{EventSubject, PostedEvent};
pub use kind::Kind;
pub use route::ApiRequest;
pub use status::ApiError;

use crate::netns::TestNetns;
use http::{lock, Shared};
use store::Store;

/// The service account the 403 messages name, the one install/ gives the daemon.
pub const DEFAULT_USER: &str = "system:serviceaccount:kube-system:podwall";

/// The bearer token written into the kubeconfig and required on every request.
pub const DEFAULT_TOKEN: &str = "pwt-apiserver-token";

/// One permission a request needed, in ClusterRole terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// API group, "" for core.
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub verb: String,
}

/// The currently open listener and its connections.
struct Running {
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// A test API server; stops and frees its port on drop.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    netns: Option<File>,
    runtime: tokio::runtime::Handle,
    running: Mutex<Option<Running>>,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
    /// The certificates and the acceptor, when serving HTTPS.
    tls: Option<(tempfile::TempDir, tls::Tls)>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Settings other than the defaults.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// On 127.0.0.1, a free port, default settings.
    pub fn start() -> ApiServer {
        Self::builder().start()
    }

    /// Inside `netns`, on its 127.0.0.1. Needs root.
    pub fn start_in(netns: &TestNetns) -> ApiServer {
        Self::builder().start_in(netns)
    }

    fn launch(opts: ApiServerBuilder, netns: Option<File>) -> ApiServer {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.history_limit)),
            requests: Mutex::new(Vec::new()),
            denied: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            token: opts.token.clone(),
            user: opts.user.clone(),
        });
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (bookmarks, interval, stop) =
            (shared.clone(), opts.bookmark_interval, shutdown.clone());
        let thread = std::thread::Builder::new()
            .name("test-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the test API server's runtime");
                tx.send(rt.handle().clone())
                    .expect("the starter waits for the handle");
                rt.block_on(async move {
                    let mut tick = tokio::time::interval(interval);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => lock(&bookmarks.store).bookmark_all(),
                        }
                    }
                });
            })
            .expect("spawning the test API server thread");
        let runtime = rx
            .recv()
            .expect("the server thread sends its runtime handle");
        let mut server = ApiServer {
            shared,
            addr: opts.addr,
            netns,
            runtime,
            running: Mutex::new(None),
            shutdown,
            thread: Some(thread),
            tls: opts.tls.then(|| {
                let dir = tempfile::tempdir().expect("a temp dir for the certificates");
                let tls = tls::make(dir.path(), opts.addr.ip());
                (dir, tls)
            }),
        };
        let listener = server.bind(opts.addr);
        server.addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        server.serve(listener);
        server
    }

    /// Bind `addr` here or, for `start_in`, on a thread that entered the test's namespace.
    fn bind(&self, addr: SocketAddr) -> TcpListener {
        let bind = move || {
            let l = TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("test API server: binding {addr}: {e}"));
            l.set_nonblocking(true)
                .expect("making the listener non-blocking");
            l
        };
        match &self.netns {
            None => bind(),
            Some(file) => {
                let file = file.try_clone().expect("duplicating the netns handle");
                std::thread::spawn(move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("test API server: entering netns: {e}"));
                    bind()
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }
        }
    }

    fn serve(&self, listener: TcpListener) {
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let (shared, s, t) = (self.shared.clone(), stop.clone(), tracker.clone());
        let acceptor = self.tls.as_ref().map(|(_, tls)| tls.acceptor.clone());
        // The accept loop is tracked too, so `stop` returns only after the listener is gone.
        tracker.spawn_on(
            async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("registering the listener with the runtime");
                http::serve(listener, shared, s, t, acceptor).await;
            },
            &self.runtime,
        );
        *lock(&self.running) = Some(Running { stop, tracker });
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), the kubeconfig's cluster server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate clients verify the server with, when it serves HTTPS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, tls)| tls.ca.as_path())
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Write `dir/kubeconfig` (cluster `server: http://…`, a token user, one context that is
    /// current) and return its path, for `--kubeconfig` or `KUBECONFIG`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: pwt-apiserver\n  cluster:\n    server: {url}\n{ca}\
             users:\n\
             - name: podwall\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: pwt-apiserver\n  context:\n    cluster: pwt-apiserver\n    user: podwall\n    namespace: default\n\
             current-context: pwt-apiserver\n",
            url = self.url(),
            ca = self
                .ca()
                .map(|ca| format!("    certificate-authority: {}\n", ca.display()))
                .unwrap_or_default(),
            token = self.shared.token,
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    // ----- breaking things -----

    /// Forget the change history: every resourceVersion handed out so far becomes too old, so
    /// the next watch from one of them gets a 410 `Expired` ERROR event (the client must
    /// relist), and continue tokens expire. Open watches keep running.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Cut every open watch connection abruptly (no final chunk), as a network failure or an
    /// API server restart does. Clients re-watch from the last version they saw.
    pub fn drop_watches(&self) {
        lock(&self.shared.store).cut_watches();
    }

    /// Watches with a client still connected; poll this to know a watcher is established.
    pub fn open_watches(&self) -> usize {
        lock(&self.shared.store).open_watches()
    }

    /// Send a BOOKMARK to every watch that allows them, now.
    pub fn bookmark(&self) {
        lock(&self.shared.store).bookmark_all();
    }

    /// Close the port and every connection: clients get "connection refused" until
    /// [`restart`](Self::restart). The objects stay. Returns once the port is closed.
    pub fn stop(&self) {
        let Some(running) = lock(&self.running).take() else {
            return;
        };
        running.stop.cancel();
        running.tracker.close();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            running.tracker.wait().await;
            let _ = tx.send(());
        });
        // A blocking wait is fine even from an async test: the server has its own thread.
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the test API server closes its connections within 5 s");
    }

    /// Listen again on the same address after [`stop`](Self::stop); a no-op when running.
    pub fn restart(&self) {
        if lock(&self.running).is_some() {
            return;
        }
        let listener = self.bind(self.addr);
        self.serve(listener);
    }

    /// Whether the port is open (false between `stop` and `restart`).
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Answer `verb` on `resource` with 403 Forbidden, like RBAC without that rule. `resource`
    /// is the plural name (`pods`, `pods/status`), optionally with its group
    /// (`events.events.k8s.io` denies only the new Events API); `*` matches any verb or
    /// resource.
    pub fn deny(&self, verb: &str, resource: &str) {
        lock(&self.shared.denied).push((verb.to_string(), resource.to_string()));
    }

    /// Take back a [`deny`](Self::deny) with the same arguments.
    pub fn allow(&self, verb: &str, resource: &str) {
        lock(&self.shared.denied).retain(|(v, r)| !(v == verb && r == resource));
    }

    /// Take back every denial.
    pub fn allow_all(&self) {
        lock(&self.shared.denied).clear();
    }

    // ----- what the client did -----

    /// Every request so far, in the order they were answered (a watch when it started).
    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The distinct (group, resource, verb) the resource requests so far needed, denied ones
    /// included: what the daemon's ClusterRole must grant.
    pub fn permissions(&self) -> BTreeSet<Permission> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.is_resource())
            .map(|r| Permission {
                group: r.group.clone(),
                resource: r.rbac_resource(),
                verb: r.verb.clone(),
            })
            .collect()
    }

    /// Every Event created or patched so far, in order.
    pub fn events(&self) -> Vec<PostedEvent> {
        lock(&self.shared.events).clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            running.stop.cancel();
        }
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            // Dropping the runtime at the end of the thread drops every connection.
            let _ = thread.join();
        }
    }
}
