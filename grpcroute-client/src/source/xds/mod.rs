//! xDS client core (placeholder while building).
#![allow(dead_code)]
