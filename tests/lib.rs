//! Shared helpers for the end-to-end tests live in `libraries/test-support`; this crate only hosts the tests.
