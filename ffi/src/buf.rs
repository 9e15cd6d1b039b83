//! The check every pointer + length argument pair goes through before a
//! slice is made of it or a byte is copied through it.
//!
//! A Rust slice may not be longer than `isize::MAX` bytes nor wrap around
//! the address space (`std::slice::from_raw_parts`), and no C object can
//! be either: a `len` above `PTRDIFF_MAX`, or one that runs past the end of
//! the address space from `buf`, is a bug in the caller (often a negative
//! `ssize_t` converted to `size_t`). Such a pair is refused with
//! `TRIO_EINVAL` and a detail naming the function and the argument, as is
//! a NULL `buf` with a nonzero `len`.

use std::ffi::c_int;

use crate::error::{TRIO_EINVAL, set_error};

/// Checks that `buf` and `len` (the names C gives them are `buf_name` and
/// `len_name`, in function `func`) can describe a real buffer: `len` at
/// most `isize::MAX` (`PTRDIFF_MAX`), `buf` not NULL unless `len` is 0, and
/// `buf + len` not past the end of the address space.
///
/// # Errors
/// `TRIO_EINVAL`, with a detail such as "trio_send_all: len is
/// 18446744073709551615, more than PTRDIFF_MAX (no buffer is that long)".
#[inline]
pub(crate) fn check<T>(func: &str, buf: *const T, buf_name: &str, len: usize, len_name: &str) -> Result<(), c_int> {
    // The common case in a few instructions; the detail is built out of line.
    let fits = len <= isize::MAX as usize && (buf as usize).checked_add(len).is_some();
    if fits && (!buf.is_null() || len == 0) {
        return Ok(());
    }
    refuse(func, buf, buf_name, len, len_name)
}

/// [`check`]'s error, or `Ok` (unreachable from `check`).
#[cold]
#[inline(never)]
fn refuse<T>(func: &str, buf: *const T, buf_name: &str, len: usize, len_name: &str) -> Result<(), c_int> {
    if isize::try_from(len).is_err() {
        return Err(set_error(
            TRIO_EINVAL,
            format_args!("{func}: {len_name} is {len}, more than PTRDIFF_MAX (no buffer is that long)"),
        ));
    }
    if buf.is_null() {
        if len != 0 {
            return Err(set_error(TRIO_EINVAL, format_args!("{func}: {buf_name} is NULL but {len_name} is {len}")));
        }
        return Ok(());
    }
    if (buf as usize).checked_add(len).is_none() {
        return Err(set_error(
            TRIO_EINVAL,
            format_args!("{func}: {buf_name} ({buf:p}) + {len_name} ({len}) runs past the end of the address space"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::trio_last_error;

    fn detail() -> String {
        let mut buf = [0 as std::ffi::c_char; 256];
        unsafe { trio_last_error(buf.as_mut_ptr(), buf.len()) };
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn real_buffers_pass() {
        let b = [0_u8; 4];
        assert_eq!(check("f", b.as_ptr(), "buf", 4, "len"), Ok(()));
        assert_eq!(check("f", b.as_ptr(), "buf", 0, "len"), Ok(()));
        assert_eq!(check::<u8>("f", std::ptr::null(), "buf", 0, "len"), Ok(()));
    }

    #[test]
    fn impossible_lengths_and_null_buffers_are_refused() {
        let b = [0_u8; 4];
        for len in [usize::MAX, isize::MAX as usize + 1] {
            assert_eq!(check("trio_send_all", b.as_ptr(), "buf", len, "len"), Err(TRIO_EINVAL));
            assert_eq!(
                detail(),
                format!("trio_send_all: len is {len}, more than PTRDIFF_MAX (no buffer is that long)")
            );
        }
        assert_eq!(check::<u8>("f", std::ptr::null(), "out", 3, "size"), Err(TRIO_EINVAL));
        assert_eq!(detail(), "f: out is NULL but size is 3");
        let high = (usize::MAX - 2) as *const u8;
        assert_eq!(check("f", high, "buf", 8, "len"), Err(TRIO_EINVAL));
        assert!(detail().contains("runs past the end of the address space"), "{}", detail());
    }
}
