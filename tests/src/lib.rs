//! Test rig for podwall's root integration tests.
