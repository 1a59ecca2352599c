//! Why the core could not do what a request or a source update asked. The socket server
//! maps it to the plugin's wire errors; the sync loops log it.

use podwall::wire::AttachmentId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The request is malformed (an attachment without an id, addresses or pod).
    #[error("attachment {0}")]
    BadAttachment(&'static str),
    #[error("no attachment {0}")]
    NotAttached(AttachmentId),
    /// CHECK found the pod's rules missing from the kernel.
    #[error("{0}")]
    RulesMissing(String),
    /// The kernel refused a change (it stays pending) or could not be read.
    #[error("{0}")]
    Kernel(String),
    #[error("{0}")]
    Store(String),
    /// The daemon is stopping; the next one serves the request.
    #[error("podwalld is stopping; try again")]
    Stopping,
}

impl CoreError {
    /// The `kind` label of `podwall_errors_total`.
    pub fn metric_kind(&self) -> &'static str {
        match self {
            CoreError::Kernel(_) => "kernel",
            CoreError::Store(_) => "store",
            _ => "request",
        }
    }
}

impl From<crate::store::StoreError> for CoreError {
    fn from(err: crate::store::StoreError) -> Self {
        CoreError::Store(format!("{:#}", anyhow::Error::from(err)))
    }
}

impl From<crate::dataplane::DataplaneError> for CoreError {
    fn from(err: crate::dataplane::DataplaneError) -> Self {
        CoreError::Kernel(format!("{:#}", anyhow::Error::from(err)))
    }
}
