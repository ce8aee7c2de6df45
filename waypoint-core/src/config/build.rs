//! Building the indexes of a Config (placeholder: being written).
