//! Fly DNS discovery (being written).
