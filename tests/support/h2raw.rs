//! HTTP/2 written by hand, for attacks a well-behaved client library will
//! not send: frames built byte by byte, and HPACK blocks that insert into
//! and then reference the dynamic table (an HPACK bomb).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: the 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The preface and an empty SETTINGS frame.
pub fn hello() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(SETTINGS, 0, 0, &[]));
    v
}

/// An HPACK integer with an `n`-bit prefix; `flags` fills the high bits of
/// the first byte.
pub fn int(n: u8, flags: u8, mut v: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if v < max {
        return vec![flags | v as u8];
    }
    let mut out = vec![flags | max as u8];
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
    out
}

/// A string literal, not Huffman-coded.
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = int(7, 0, s.len());
    out.extend_from_slice(s);
    out
}

/// `GET path` on `authority` over http: static-table method and scheme,
/// path and authority as literals that are not indexed.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend(int(4, 0x00, 4)); // :path, literal without indexing
    b.extend(string(path.as_bytes()));
    b.extend(int(4, 0x00, 1)); // :authority
    b.extend(string(authority.as_bytes()));
    b
}

/// A header added to the dynamic table (literal with incremental
/// indexing, new name): afterwards index 62 refers to it.
pub fn insert(name: &str, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x40];
    b.extend(string(name.as_bytes()));
    b.extend(string(value));
    b
}

/// Connects, sends the preface, and drains whatever the server sends in
/// the background (so the server never waits on this client to read).
pub async fn connect(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::tcp::OwnedWriteHalf> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut rd, mut wr) = s.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    wr.write_all(&hello()).await?;
    Ok(wr)
}

/// Reads one frame: its type, flags, stream and payload.
pub async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    rd.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}

/// How a field of an HPACK block is represented (RFC 7541 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    /// A table entry by index.
    Indexed,
    /// A literal added to the dynamic table.
    Incremental,
    /// A literal left out of the table.
    WithoutIndexing,
    /// A literal no encoder may add to a table, here or downstream.
    NeverIndexed,
    /// A dynamic table size update.
    SizeUpdate,
}

/// The representation of each field in `block`, in order. Strings are
/// skipped by their length, so Huffman-coded ones need no decoding.
pub fn reprs(block: &[u8]) -> Vec<Repr> {
    fn int(b: &[u8], at: &mut usize, n: u8) -> usize {
        let max = (1usize << n) - 1;
        let mut v = usize::from(b[*at]) & max;
        *at += 1;
        if v == max {
            let mut shift = 0;
            loop {
                let byte = b[*at];
                *at += 1;
                v += usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        v
    }
    fn skip_string(b: &[u8], at: &mut usize) {
        let len = int(b, at, 7);
        *at += len;
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let (repr, prefix) = match first {
            f if f & 0x80 != 0 => (Repr::Indexed, 7),
            f if f & 0xc0 == 0x40 => (Repr::Incremental, 6),
            f if f & 0xe0 == 0x20 => (Repr::SizeUpdate, 5),
            f if f & 0xf0 == 0x10 => (Repr::NeverIndexed, 4),
            _ => (Repr::WithoutIndexing, 4),
        };
        let index = int(block, &mut at, prefix);
        if !matches!(repr, Repr::Indexed | Repr::SizeUpdate) {
            if index == 0 {
                skip_string(block, &mut at);
            }
            skip_string(block, &mut at);
        }
        out.push(repr);
    }
    out
}
