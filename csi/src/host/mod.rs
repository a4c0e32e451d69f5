//! Host helpers under everything else: running commands and blocking work ([`exec`]),
//! filesystem types ([`fs`]), mounts ([`mount`]), the paths node requests may name
//! ([`paths`]) and step timing ([`step`]).
//!
//! A leaf: nothing here imports another module of the crate except [`crate::error`] (the one
//! error type, itself a leaf), so every other module may use these helpers without tying a
//! circle.

pub mod exec;
pub mod fs;
pub mod mount;
pub mod paths;
pub mod step;
