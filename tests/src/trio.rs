//! The smallest world that shows enforcement both ways: in namespace `app`, a pod `web`
//! serving TCP 7000, a `client` that [`WEB_FROM_CLIENT`] admits to it, and an `other` that
//! nothing admits. The counters, drop log and image tests share it.

use std::time::Duration;

use crate::cni::Pod;
use crate::manifests::role_pods;
use crate::node::Node;
use crate::probe::{self, EchoServer};

/// web takes TCP 7000 from client alone.
pub const WEB_FROM_CLIENT: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: app}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 7000}]}]
";

/// web's port.
pub const PORT: u16 = 7000;

/// Short enough that a denied SYN is not sent again (Linux retransmits after 1 s).
pub const QUICK: Duration = Duration::from_millis(300);

/// The namespace and the three pods' objects (without the policy).
pub fn world() -> String {
    role_pods("app", &["web", "client", "other"])
}

/// The three pods attached to a node, web serving.
pub struct Trio {
    pub web: Pod,
    pub client: Pod,
    pub other: Pod,
    pub server: EchoServer,
}

impl Trio {
    /// Attach the three pods to `node` (their containers named `<prefix>-<role>`); panics
    /// when an ADD fails.
    pub fn attach(node: &Node, prefix: &str) -> Self {
        let [web, client, other] = ["web", "client", "other"]
            .map(|role| Pod::named(&format!("{prefix}-{role}"), "app", role));
        node.add_all(&[&web, &client, &other]);
        let server = EchoServer::start(&web.netns, PORT);
        Trio {
            web,
            client,
            other,
            server,
        }
    }

    /// Whether `from` gets an echo from web within [`QUICK`].
    pub fn reaches_web(&self, from: &Pod) -> bool {
        probe::tcp_connects(&from.netns, self.web.ip4(), self.server.port(), QUICK)
    }

    /// client reaches web and other does not, as [`WEB_FROM_CLIENT`] says.
    pub fn assert_enforced(&self) {
        assert!(self.reaches_web(&self.client), "client → web is allowed");
        assert!(!self.reaches_web(&self.other), "other → web is denied");
    }
}
