//! Link shaper (being written).
