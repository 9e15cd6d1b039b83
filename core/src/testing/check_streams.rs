//! Conformance checks for stream implementations (see `check_one_way_stream`).
