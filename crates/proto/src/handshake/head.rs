//! Collecting an HTTP/1.1 header block from chunks of bytes, and converting
//! what `httparse` makes of it into `http` types.
//!
//! Invariants:
//! - The block ends at the first CRLF CRLF; [`HeadReader::push`] consumes
//!   input up to and including it and never a byte beyond.
//! - A LF not preceded by CR is an error as soon as it is seen, so a block
//!   that ends at a bare-LF empty line (which `httparse` would accept) never
//!   hides bytes that belong to the connection.
//! - The buffer never holds more than the size limit: the byte that would
//!   make an unfinished block longer than the limit is an error instead.
//! - The outcome depends only on the concatenated input, not on its split.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Why a header block could not be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// The block is longer than the limit.
    TooLarge,
    /// A line ends in a bare LF.
    BareLf,
}

/// Accumulates one header block, scanning each byte once.
#[derive(Debug, Default)]
pub(crate) struct HeadReader {
    buf: Vec<u8>,
    /// How much of CR LF CR LF the last bytes matched (0..=3).
    matched: u8,
}

impl HeadReader {
    /// Consumes bytes of `input` until the block ends or `input` runs out.
    ///
    /// Returns `Ok(Some(n))` when the block ended at `input[n - 1]` (the block
    /// is then in [`HeadReader::take`]), `Ok(None)` when all of `input` was
    /// consumed and more is needed.
    pub(crate) fn push(&mut self, input: &[u8], limit: usize) -> Result<Option<usize>, HeadError> {
        for (i, &byte) in input.iter().enumerate() {
            if self.buf.len() + i >= limit {
                return Err(HeadError::TooLarge);
            }
            self.matched = match (self.matched, byte) {
                (0, b'\r') => 1,
                (2, b'\r') => 3,
                (_, b'\r') => 1,
                (1, b'\n') => 2,
                (3, b'\n') => {
                    self.buf.extend_from_slice(&input[..=i]);
                    return Ok(Some(i + 1));
                }
                (_, b'\n') => return Err(HeadError::BareLf),
                _ => 0,
            };
        }
        self.buf.extend_from_slice(input);
        Ok(None)
    }

    /// Takes the collected block and starts over with an empty buffer.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.matched = 0;
        std::mem::take(&mut self.buf)
    }

    /// [`HeadReader::push`], then the block itself once it is complete:
    /// `Ok(Some((block, n)))` when it ended at `input[n - 1]`. After a
    /// complete block or an error the reader starts over empty.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        limit: usize,
    ) -> Result<Option<(Vec<u8>, usize)>, HeadError> {
        match self.push(input, limit) {
            Ok(None) => Ok(None),
            Ok(Some(consumed)) => Ok(Some((self.take(), consumed))),
            Err(error) => {
                self.take();
                Err(error)
            }
        }
    }
}

/// Converts the fields `httparse` found into a map, in order.
///
/// `Err` describes the first field `http` refuses (it is stricter than
/// `httparse` about some bytes in values).
pub(crate) fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, &'static str> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| "invalid header value")?;
        map.append(name, value);
    }
    Ok(map)
}

/// A static description of an `httparse` error.
pub(crate) fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Token => "invalid token in the first line",
        httparse::Error::TooManyHeaders => "too many header lines",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(chunks: &[&[u8]], limit: usize) -> Result<Option<usize>, HeadError> {
        let mut reader = HeadReader::default();
        for chunk in chunks {
            if let Some(n) = reader.push(chunk, limit)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    #[test]
    fn ends_at_first_empty_line_and_keeps_the_rest() {
        let mut reader = HeadReader::default();
        assert_eq!(reader.push(b"A\r\n\r\nrest", 100), Ok(Some(5)));
        assert_eq!(reader.take(), b"A\r\n\r\n");
    }

    #[test]
    fn split_terminator() {
        assert_eq!(push_all(&[b"A\r", b"\n\r", b"\nB"], 100), Ok(Some(1)));
    }

    #[test]
    fn cr_cr_lf_is_not_a_line_end_pair() {
        // "\r\r\n\r\n": the first CR is stray, then CRLF CRLF ends the block.
        assert_eq!(push_all(&[b"A\r\r\n\r\n"], 100), Ok(Some(6)));
        assert_eq!(push_all(&[b"A\r\n\r\r\n"], 100), Ok(None));
    }

    #[test]
    fn bare_lf_is_an_error() {
        assert_eq!(push_all(&[b"A\n"], 100), Err(HeadError::BareLf));
        assert_eq!(push_all(&[b"A\r\n\n"], 100), Err(HeadError::BareLf));
    }

    #[test]
    fn limit_counts_the_whole_block() {
        let block = b"AB\r\n\r\n";
        assert_eq!(push_all(&[block], block.len()), Ok(Some(6)));
        assert_eq!(
            push_all(&[block], block.len() - 1),
            Err(HeadError::TooLarge)
        );
        // An unfinished block of exactly the limit waits; one more byte fails.
        assert_eq!(push_all(&[b"ABCD"], 4), Ok(None));
        assert_eq!(push_all(&[b"ABCD", b"E"], 4), Err(HeadError::TooLarge));
    }

    #[test]
    fn take_resets() {
        let mut reader = HeadReader::default();
        assert_eq!(reader.push(b"A\r\n\r", 100), Ok(None));
        reader.take();
        assert_eq!(reader.push(b"\n", 100), Err(HeadError::BareLf));
    }
}
