//! diff (being written).
