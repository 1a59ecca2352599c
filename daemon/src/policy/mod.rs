//! The NetworkPolicy compiler and evaluator: pure, no I/O.
