//! `open_tcp_stream` with happy eyeballs (RFC 6555/8305).
