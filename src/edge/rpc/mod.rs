//! One file per RPC family: each parses its protobuf request into domain
//! types and maps the domain's answer back.

pub mod job;
pub mod objects;
