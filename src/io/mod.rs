//! The only place that touches paths: resolving and scanning inputs, writing
//! outputs atomically, and the manifest file.

pub mod cloud;
pub mod csv;
pub mod input;
pub mod output;
pub mod parquet;
pub mod remote;
pub mod side;
pub mod table;
pub mod url;
