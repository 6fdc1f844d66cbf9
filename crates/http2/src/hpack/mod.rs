//! HPACK (RFC 7541): the header compression of HTTP/2.
//!
//! [`Decoder`] reads the header blocks a client sends, keeping the dynamic table they build up.
//! [`Encoder`] writes response header blocks from the static table and literals only: it never
//! adds to the peer's dynamic table, so whatever table size the peer allows is enough.

pub mod huffman;
mod table;

use bytes::{BufMut, Bytes, BytesMut};

use table::{entry_size, Dynamic, STATIC};

/// The dynamic table size HTTP/2 starts with (RFC 9113 §6.5.2, `SETTINGS_HEADER_TABLE_SIZE`).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// One field of a decoded header block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// As sent: HTTP/2 requires it in lower case, which the caller checks.
    pub name: Bytes,
    /// As sent, shared with the header block when it was not Huffman-coded.
    pub value: Bytes,
    /// Sent as "never indexed" (§6.2.3): a value an intermediary must not compress either.
    pub sensitive: bool,
}

/// Why a header block could not be decoded; every one is a `COMPRESSION_ERROR` for the whole
/// connection (RFC 9113 §4.3), since the tables of both ends no longer agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The block ends inside a field.
    Truncated,
    /// An integer longer than any this decoder accepts.
    Integer,
    /// An index of no table entry (or 0).
    Index(usize),
    /// A Huffman-coded string that does not decode.
    Huffman,
    /// A dynamic table size update above the limit this end set.
    TableSize(usize),
    /// A dynamic table size update after the first field of a block.
    LateTableSize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("header block ends inside a field"),
            DecodeError::Integer => f.write_str("integer too long in header block"),
            DecodeError::Index(i) => write!(
                f,
                "header block refers to table entry {i}, which does not exist"
            ),
            DecodeError::Huffman => f.write_str("invalid Huffman string in header block"),
            DecodeError::TableSize(n) => {
                write!(f, "header table size update to {n} is above the limit")
            }
            DecodeError::LateTableSize => {
                f.write_str("header table size update after the first field")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// What decoding a block came to, beyond its fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The header list is larger (in the §6.5.2 sense of `SETTINGS_MAX_HEADER_LIST_SIZE`) than
    /// the limit given: the fields past it were decoded, to keep the table right, but not handed
    /// on.
    pub oversize: bool,
}

/// The decoding side of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: Dynamic,
    /// The table size this end allows (`SETTINGS_HEADER_TABLE_SIZE` as sent).
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    /// A decoder for a connection that allows a dynamic table of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            table: Dynamic::new(limit),
            limit,
        }
    }

    /// Decodes one complete header block, handing each field to `emit` while the list stays
    /// within `max_list` bytes.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list: usize,
        mut emit: impl FnMut(Field),
    ) -> Result<Decoded, DecodeError> {
        let mut at = 0;
        let mut list = 0usize;
        let mut out = Decoded::default();
        let mut seen_field = false;
        while at < block.len() {
            let first = block[at];
            let field = if first & 0x80 != 0 {
                // §6.1: an indexed field.
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                Field {
                    name,
                    value,
                    sensitive: false,
                }
            } else if first & 0x40 != 0 {
                // §6.2.1: a literal added to the table.
                let (name, value) = self.literal(block, &mut at, 6)?;
                // Copied: an entry may outlive the read buffer its block came in by a long way.
                self.table.insert(owned(&name), owned(&value));
                Field {
                    name,
                    value,
                    sensitive: false,
                }
            } else if first & 0x20 != 0 {
                // §6.3: a table size update, only before the block's first field (§4.2).
                if seen_field {
                    return Err(DecodeError::LateTableSize);
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(DecodeError::TableSize(size));
                }
                self.table.resize(size);
                continue;
            } else {
                // §6.2.2 and §6.2.3: a literal not added, and one never to be added.
                let sensitive = first & 0x10 != 0;
                let (name, value) = self.literal(block, &mut at, 4)?;
                Field {
                    name,
                    value,
                    sensitive,
                }
            };
            seen_field = true;
            list = list.saturating_add(entry_size(&field.name, &field.value));
            if list > max_list {
                out.oversize = true;
            }
            if !out.oversize {
                emit(field);
            }
        }
        Ok(out)
    }

    /// The entry at `index` of the static table, then of the dynamic one.
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecodeError> {
        if index == 0 {
            return Err(DecodeError::Index(0));
        }
        if let Some((name, value)) = STATIC.get(index - 1) {
            return Ok((
                Bytes::from_static(name.as_bytes()),
                Bytes::from_static(value.as_bytes()),
            ));
        }
        self.table
            .get(index - STATIC.len() - 1)
            .cloned()
            .ok_or(DecodeError::Index(index))
    }

    /// A literal field whose name index has a `prefix`-bit integer (0: a literal name follows).
    fn literal(
        &self,
        block: &Bytes,
        at: &mut usize,
        prefix: u8,
    ) -> Result<(Bytes, Bytes), DecodeError> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            string(block, at)?
        } else {
            self.entry(index)?.0
        };
        Ok((name, string(block, at)?))
    }

    /// The dynamic table's current size limit.
    pub fn table_size(&self) -> usize {
        self.table.max()
    }
}

/// A copy of `b` of its own, unless it is static already.
fn owned(b: &Bytes) -> Bytes {
    if b.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(b)
    }
}

/// The largest integer a block may hold: far above any length or index that can be valid, and
/// small enough that no arithmetic on it overflows.
const MAX_INTEGER: usize = 1 << 24;

/// Reads an integer with a `prefix`-bit first part (§5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1u8 << prefix) - 1;
    let first = *block.get(*at).ok_or(DecodeError::Truncated)? & mask;
    *at += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = usize::from(mask);
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(DecodeError::Integer);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        // Continuation bytes that add nothing (0x80) could otherwise go on, and shift, forever.
        if shift > 21 {
            return Err(DecodeError::Integer);
        }
    }
}

/// Reads a string literal (§5.2): raw strings are shared with the block, Huffman-coded ones
/// decoded into their own buffer.
fn string(block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
    let huffman = *block.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).filter(|&e| e <= block.len());
    let end = end.ok_or(DecodeError::Truncated)?;
    let raw = &block[*at..end];
    let s = if huffman {
        let mut out = Vec::with_capacity(len + len / 2);
        huffman::decode(raw, &mut out).map_err(|_| DecodeError::Huffman)?;
        Bytes::from(out)
    } else {
        block.slice(*at..end)
    };
    *at = end;
    Ok(s)
}

/// The encoding side of one connection: fields are written as static-table references and
/// literals that are not indexed, so the peer's table stays empty.
#[derive(Debug, Default)]
pub struct Encoder {}

impl Encoder {
    /// Writes the `:status` pseudo-field.
    pub fn status(&mut self, status: u16, dst: &mut BytesMut) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                // A literal with the name of entry 8 (`:status`).
                put_integer(dst, 0x00, 4, 8);
                let mut digits = [b'0'; 3];
                let mut s = status.min(999);
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (s % 10) as u8;
                    s /= 10;
                }
                put_string(dst, &digits);
                return;
            }
        };
        put_integer(dst, 0x80, 7, index);
    }

    /// Writes one field; `name` must already be lower case. A `sensitive` field is marked never
    /// to be indexed by whoever passes it on.
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut BytesMut) {
        let flags = if sensitive { 0x10 } else { 0x00 };
        match static_name(name) {
            Some(index) => put_integer(dst, flags, 4, index),
            None => {
                dst.put_u8(flags);
                put_string(dst, name);
            }
        }
        put_string(dst, value);
    }
}

/// The static-table index of the first entry named `name`: the names a response carries
/// most are tried first, then the whole table.
fn static_name(name: &[u8]) -> Option<usize> {
    let common = match name {
        b"date" => Some(33),
        b"content-type" => Some(31),
        b"content-length" => Some(28),
        b"server" => Some(54),
        b"cache-control" => Some(24),
        b"set-cookie" => Some(55),
        _ => None,
    };
    common.or_else(|| {
        STATIC[14..]
            .iter()
            .position(|(n, _)| n.as_bytes() == name)
            .map(|i| i + 15)
    })
}

/// Writes an integer with a `prefix`-bit first part, over `flags` in the first byte's high bits.
fn put_integer(dst: &mut BytesMut, flags: u8, prefix: u8, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Writes a raw (not Huffman-coded) string literal.
fn put_string(dst: &mut BytesMut, s: &[u8]) {
    put_integer(dst, 0x00, 7, s.len());
    dst.extend_from_slice(s);
}

#[cfg(test)]
mod tests;
