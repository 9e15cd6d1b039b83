//! `serve_listeners`, `serve_tcp`.
