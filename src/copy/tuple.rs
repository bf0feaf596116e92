//! Splits a binary COPY stream into tuples, whatever the chunk boundaries are.
//!
//! Format (PostgreSQL docs, "COPY, Binary Format"): an 11-byte signature, a 32-bit flags
//! field and a header extension; then tuples, each an int16 field count followed by, per
//! field, an int32 length (-1 for NULL) and that many bytes; then the int16 trailer -1.

/// The 11-byte signature that opens every binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The 19-byte header that opens a binary COPY stream: signature, no flags, no extension.
pub const EMPTY_STREAM_HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The stream is not well-formed binary COPY data.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The stream does not start with the binary COPY signature.
    #[error("the COPY stream does not start with the binary signature")]
    Signature,
    /// A field count or length is negative where it may not be.
    #[error("the COPY stream has a malformed tuple (negative field count or length)")]
    Malformed,
    /// Bytes follow the trailer.
    #[error("the COPY stream has data after its trailer")]
    TrailingData,
    /// The stream ended inside the header or a tuple, or without the trailer.
    #[error("the COPY stream ended early (no trailer)")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Tuples,
    Done,
}

/// Incremental tuple splitter; feed it the chunks of one COPY stream in order.
#[derive(Debug)]
pub struct TupleSplitter {
    state: State,
    /// Bytes of an incomplete header or tuple carried over to the next chunk.
    carry: Vec<u8>,
    /// Tuples seen so far.
    pub tuples: u64,
}

impl Default for TupleSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl TupleSplitter {
    /// A splitter at the start of a stream.
    pub fn new() -> Self {
        Self {
            state: State::Header,
            carry: Vec::new(),
            tuples: 0,
        }
    }

    /// Feeds the next chunk; calls `on_tuple` with each complete tuple (field count
    /// included), in stream order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        on_tuple: &mut impl FnMut(&[u8]),
    ) -> Result<(), FormatError> {
        if self.carry.is_empty() {
            let used = self.parse(chunk, on_tuple)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            let used = self.parse(&data, on_tuple)?;
            data.drain(..used);
            self.carry = data;
        }
        Ok(())
    }

    /// Checks that the stream ended with its trailer.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.state == State::Done && self.carry.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Truncated)
        }
    }

    /// Parses as much of `data` as is complete; returns how many bytes were consumed.
    fn parse(
        &mut self,
        data: &[u8],
        on_tuple: &mut impl FnMut(&[u8]),
    ) -> Result<usize, FormatError> {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.state {
                State::Header => {
                    if rest.len() < 19 {
                        return Ok(pos);
                    }
                    if &rest[..11] != SIGNATURE {
                        return Err(FormatError::Signature);
                    }
                    let ext = be_i32(&rest[15..19]);
                    let ext = usize::try_from(ext).map_err(|_| FormatError::Malformed)?;
                    if rest.len() < 19 + ext {
                        return Ok(pos);
                    }
                    pos += 19 + ext;
                    self.state = State::Tuples;
                }
                State::Tuples => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    let count = i16::from_be_bytes([rest[0], rest[1]]);
                    if count == -1 {
                        pos += 2;
                        self.state = State::Done;
                        continue;
                    }
                    let count = usize::try_from(count).map_err(|_| FormatError::Malformed)?;
                    let Some(len) = tuple_len(rest, count)? else {
                        return Ok(pos);
                    };
                    on_tuple(&rest[..len]);
                    self.tuples += 1;
                    pos += len;
                }
                State::Done => {
                    return if rest.is_empty() {
                        Ok(pos)
                    } else {
                        Err(FormatError::TrailingData)
                    };
                }
            }
        }
    }
}

/// Length of the tuple at the start of `data` with `count` fields, or `None` if `data`
/// does not hold all of it yet.
fn tuple_len(data: &[u8], count: usize) -> Result<Option<usize>, FormatError> {
    let mut p = 2;
    for _ in 0..count {
        if data.len() < p + 4 {
            return Ok(None);
        }
        let len = be_i32(&data[p..p + 4]);
        p += 4;
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| FormatError::Malformed)?;
        if data.len() < p + len {
            return Ok(None);
        }
        p += len;
    }
    Ok(Some(p))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The fields of one tuple: `None` for NULL.
pub fn fields(tuple: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let count = if tuple.len() >= 2 {
        i16::from_be_bytes([tuple[0], tuple[1]]).max(0) as usize
    } else {
        0
    };
    let mut p = 2;
    (0..count).map(move |_| {
        let len = be_i32(&tuple[p..p + 4]);
        p += 4;
        if len < 0 {
            None
        } else {
            let field = &tuple[p..p + len as usize];
            p += len as usize;
            Some(field)
        }
    })
}

/// Which of `positions` hold a value (are not NULL) in the tuple, in field order; reads
/// the tuple without copying it.
pub fn non_null_among<'a>(
    tuple: &'a [u8],
    positions: &'a [usize],
) -> impl Iterator<Item = usize> + 'a {
    fields(tuple)
        .enumerate()
        .filter_map(move |(i, v)| (v.is_some() && positions.contains(&i)).then_some(i))
}

/// The encoded key of a tuple whose first `key_len` fields are the key: the bytes of
/// those fields with their length words, an unambiguous encoding usable as a map key.
pub fn key_bytes(tuple: &[u8], key_len: usize) -> &[u8] {
    let mut p = 2;
    for _ in 0..key_len {
        let len = be_i32(&tuple[p..p + 4]);
        p += 4 + len.max(0) as usize;
    }
    &tuple[2..p]
}

/// Splits a non-NULL `int4` last column off a tuple: the tuple one field shorter, and
/// the value.
pub fn split_int4(tuple: &[u8]) -> Option<(Vec<u8>, i32)> {
    let mut row = Vec::with_capacity(tuple.len());
    let value = push_without_int4(&mut row, tuple)?;
    Some((row, value))
}

/// Appends `tuple` without its last column, a non-NULL `int4`, to `out`; returns the
/// value, or `None` (and appends nothing) when the tuple does not end in one.
pub fn push_without_int4(out: &mut Vec<u8>, tuple: &[u8]) -> Option<i32> {
    let fields = i16::from_be_bytes(tuple.get(..2)?.try_into().ok()?);
    let end = tuple.len().checked_sub(8)?;
    if fields < 1 || end < 2 || tuple[end..end + 4] != 4i32.to_be_bytes() {
        return None;
    }
    let value = i32::from_be_bytes(tuple[end + 4..].try_into().ok()?);
    out.extend_from_slice(&(fields - 1).to_be_bytes());
    out.extend_from_slice(&tuple[2..end]);
    Some(value)
}

/// Builds one tuple from fields (used for key-only staging rows).
pub fn encode_tuple<'a>(
    out: &mut Vec<u8>,
    fields: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
) {
    out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        match f {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut s = EMPTY_STREAM_HEADER.to_vec();
        for r in rows {
            encode_tuple(&mut s, r.iter().copied());
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    #[test]
    fn tuples_are_found_whatever_the_chunk_boundaries() {
        let rows = vec![
            vec![Some(&b"\0\0\0\x01"[..]), None, Some(&b"abc"[..])],
            vec![
                Some(&b"\0\0\0\x02"[..]),
                Some(&b""[..]),
                Some("東北".as_bytes()),
            ],
        ];
        let data = stream(&rows);
        for chunk in 1..data.len() {
            let mut split = TupleSplitter::new();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            for c in data.chunks(chunk) {
                split.feed(c, &mut |t| seen.push(t.to_vec())).unwrap();
            }
            split.finish().unwrap();
            assert_eq!(seen.len(), 2, "chunk size {chunk}");
            let f: Vec<_> = fields(&seen[1]).collect();
            assert_eq!(f, rows[1]);
            assert_eq!(key_bytes(&seen[0], 1), &b"\0\0\0\x04\0\0\0\x01"[..]);
        }
    }

    #[test]
    fn truncated_or_foreign_streams_are_errors() {
        let data = stream(&[vec![Some(&b"x"[..])]]);
        let mut split = TupleSplitter::new();
        split.feed(&data[..data.len() - 1], &mut |_| {}).unwrap();
        assert!(split.finish().is_err());
        let mut split = TupleSplitter::new();
        assert!(split.feed(b"id,name\n1,abc\n2,def\n", &mut |_| {}).is_err());
    }
}
