//! In-process Fly DNS zone (being written).
