//! In-memory streams for tests (see `memory_stream_pair`).
