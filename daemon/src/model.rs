//! podwall's own Pod, Namespace and Policy types.
