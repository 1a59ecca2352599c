//! The API server's settings: address, history, bookmarks, user, TLS.

use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ApiServer, DEFAULT_TOKEN, DEFAULT_USER};
use crate::netns::TestNetns;

/// Settings for [`ApiServer`]; [`ApiServer::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    pub(super) addr: SocketAddr,
    pub(super) history_limit: usize,
    pub(super) bookmark_interval: Duration,
    pub(super) token: String,
    pub(super) user: String,
    pub(super) tls: bool,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        ApiServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(1),
            token: DEFAULT_TOKEN.to_string(),
            user: DEFAULT_USER.to_string(),
            tls: false,
        }
    }
}

impl ApiServerBuilder {
    /// Where to listen; port 0 picks a free one (kept across `restart`).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// How many changes watches can replay; a watch from before them gets 410.
    pub fn history_limit(mut self, changes: usize) -> Self {
        self.history_limit = changes;
        self
    }

    /// How often watches that allow bookmarks get one (the real server: about a minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// The user that 403 messages name.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// Serve HTTPS with a CA of its own ([`ApiServer::ca`]), as a real API server does.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Listen on this process's network namespace.
    pub fn start(self) -> ApiServer {
        ApiServer::launch(self, None)
    }

    /// Listen inside `netns` (default address: that namespace's 127.0.0.1), for a daemon that
    /// runs there. Needs root, like every netns test.
    pub fn start_in(self, netns: &TestNetns) -> ApiServer {
        let file = File::open(netns.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", netns.path().display()));
        ApiServer::launch(self, Some(file))
    }
}
