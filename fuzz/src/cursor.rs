//! A little-endian byte cursor for targets that decode their own input format, and the matching
//! encoder that builds seed inputs.
//!
//! Decoding never fails part-way: a field that does not fit in the remaining bytes ends the input
//! (`None`), so every prefix of a valid input is itself a valid, shorter input.

/// Reads fixed-width fields from the front of the input.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.data.split_first_chunk::<N>()?;
        self.data = rest;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        self.u8().map(|b| b & 1 != 0)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// Up to `n` bytes (fewer when the input ends first).
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A byte string with a one-byte length prefix.
    pub(crate) fn short_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        Some(self.bytes(usize::from(len)))
    }

    /// A byte string with a two-byte length prefix, at most `max` bytes long.
    pub(crate) fn long_bytes(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u16()?;
        Some(self.bytes(usize::from(len).min(max)))
    }
}

/// Writes fields in the layout [`Cursor`] reads.
#[derive(Default)]
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn short_bytes(&mut self, bytes: &[u8]) {
        let len = u8::try_from(bytes.len()).expect("at most 255 bytes");
        self.u8(len);
        self.raw(bytes);
    }

    pub(crate) fn long_bytes(&mut self, bytes: &[u8]) {
        let len = u16::try_from(bytes.len()).expect("at most 65535 bytes");
        self.u16(len);
        self.raw(bytes);
    }
}

/// The first byte of a scripted input: the rest is an explicit `[tag][fields...]` list of the
/// target's operations instead of `arbitrary` data. Seeds use it so that their bytes keep meaning
/// the same sequence whatever `arbitrary` does with a byte string.
pub(crate) const SCRIPT: u8 = 0xe5;
