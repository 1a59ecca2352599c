//! What can be wrong with an API object: a [`ModelError`] names the object and the field,
//! its [`Problem`] says what is wrong, and `Errors` collects them while one object is
//! converted.
//!
//! Every converter (label selectors, ipBlocks, the model's policies and pods) reports through
//! this module, so it depends on nothing else in the crate.

/// A field of an object that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {object}: {field}: {problem}")]
pub struct ModelError {
    /// `networkpolicy`, `pod` or `namespace`.
    pub kind: &'static str,
    /// `namespace/name` (or the name of a namespace).
    pub object: String,
    /// The path of the field, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing")]
    Missing,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("invalid cidr {0:?}")]
    InvalidCidr(String),
    #[error("{except} is not inside cidr {cidr}")]
    ExceptOutsideCidr { except: String, cidr: String },
    #[error("invalid IP address {0:?}")]
    InvalidIp(String),
    #[error("endPort {end_port} is below port {port}")]
    EndPortBelowPort { port: u16, end_port: u16 },
    #[error("endPort cannot be used with named port {0:?}")]
    EndPortWithNamedPort(String),
    #[error("endPort needs a numeric port")]
    EndPortWithoutPort,
    #[error("port {0} is outside 1-65535")]
    PortOutOfRange(i32),
    #[error("invalid port name {0:?}")]
    InvalidPortName(String),
    #[error("unknown protocol {0:?}, expected TCP, UDP or SCTP")]
    UnknownProtocol(String),
    #[error("unknown operator {0:?}, expected In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    #[error("operator {0} needs at least one value")]
    OperatorNeedsValues(String),
    #[error("operator {0} takes no values")]
    OperatorTakesNoValues(String),
    #[error("unknown policy type {0:?}, expected Ingress or Egress")]
    UnknownPolicyType(String),
    #[error("a peer needs podSelector, namespaceSelector or ipBlock")]
    EmptyPeer,
    #[error("ipBlock cannot be combined with podSelector or namespaceSelector")]
    IpBlockWithSelector,
}

/// Collects the errors of one object while it is converted.
pub(crate) struct Errors {
    kind: &'static str,
    object: String,
    list: Vec<ModelError>,
}

impl Errors {
    pub(crate) fn new(kind: &'static str, object: String) -> Self {
        Errors {
            kind,
            object,
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.list.push(ModelError {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            problem,
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<ModelError> {
        self.list
    }
}
