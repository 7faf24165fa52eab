//! Kubelets before 1.25 dial CSI and registration sockets with grpc-go versions that send the
//! socket's path as the HTTP/2 `:authority` (kubernetes/kubernetes#108254). That is not a
//! valid authority, and h2 (under tonic) resets every such stream with PROTOCOL_ERROR, so
//! registration and every CSI call would fail. Each connection is therefore passed through
//! here: frames from the kubelet are copied to the gRPC server as they are, except request
//! header blocks, which are decoded and encoded again with `:authority: localhost` in place of
//! an invalid one. Replies go back untouched.

use std::pin::Pin;
use std::task::{Context, Poll};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest maximum frame size a peer may have (RFC 9113 §4.2): re-encoded header blocks
/// are split to fit it.
const MAX_FRAME: usize = 16_384;

/// One connection's header codecs: the decoder follows the kubelet's encoder, the encoder
/// feeds the server's decoder.
#[derive(Default)]
pub struct HeaderFix {
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl HeaderFix {
    /// The header block `block` again, with an invalid `:authority` replaced.
    pub fn block(&mut self, block: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut headers = self
            .decoder
            .decode(block)
            .map_err(|e| std::io::Error::other(format!("HPACK: {e:?}")))?;
        for (name, value) in &mut headers {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                *value = b"localhost".to_vec();
            }
        }
        Ok(self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))))
    }
}

/// The header block of a HEADERS frame's payload: without padding and priority fields.
fn header_fragment(flags: u8, payload: &[u8]) -> std::io::Result<&[u8]> {
    let bad = || std::io::Error::other("malformed HEADERS frame");
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or_else(bad)?);
        start += 1;
        end = end.checked_sub(pad).ok_or_else(bad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end).ok_or_else(bad)
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

/// A header block as a HEADERS frame and as many CONTINUATION frames as it needs.
pub fn header_frames(block: &[u8], end_stream: bool, stream: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 18);
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![&[]]
    } else {
        block.chunks(MAX_FRAME).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let (kind, mut flags) = if i == 0 {
            (HEADERS, if end_stream { END_STREAM } else { 0 })
        } else {
            (CONTINUATION, 0)
        };
        if i + 1 == chunks.len() {
            flags |= END_HEADERS;
        }
        out.extend_from_slice(&frame_header(chunk.len(), kind, flags, stream));
        out.extend_from_slice(chunk);
    }
    out
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<([u8; 9], Vec<u8>)>> {
    let mut header = [0u8; 9];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((header, payload)))
}

/// Copies the kubelet's side of a connection to the server's, fixing request headers.
async fn requests<R, W>(mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    let mut fix = HeaderFix::default();
    while let Some((header, payload)) = read_frame(&mut from).await? {
        if header[3] != HEADERS {
            to.write_all(&header).await?;
            to.write_all(&payload).await?;
            continue;
        }
        let (flags, stream) = (
            header[4],
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]),
        );
        let mut block = header_fragment(flags, &payload)?.to_vec();
        let mut end_headers = flags & END_HEADERS != 0;
        while !end_headers {
            let (h, p) = read_frame(&mut from)
                .await?
                .ok_or_else(|| std::io::Error::other("connection closed inside a header block"))?;
            if h[3] != CONTINUATION {
                return Err(std::io::Error::other("header block not continued"));
            }
            block.extend_from_slice(&p);
            end_headers = h[4] & END_HEADERS != 0;
        }
        let fixed = fix.block(&block)?;
        to.write_all(&header_frames(&fixed, flags & END_STREAM != 0, stream))
            .await?;
    }
    to.shutdown().await
}

/// A connection as the gRPC server sees it: one end of an in-memory pipe whose other end
/// [`fix_authority`] feeds.
pub struct Fixed(DuplexStream);

impl tonic::transport::server::Connected for Fixed {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Fixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Fixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Starts passing `client` through; returns the server's end.
pub fn fix_authority(client: UnixStream) -> Fixed {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (client_read, mut client_write) = client.into_split();
    let (server_read, server_write) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut server_read = server_read;
        let up = requests(client_read, server_write);
        let down = async {
            tokio::io::copy(&mut server_read, &mut client_write).await?;
            client_write.shutdown().await
        };
        if let Err(e) = tokio::try_join!(up, down) {
            tracing::debug!(error = %e, "gRPC connection ended");
        }
    });
    Fixed(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    /// The headers of a HEADERS (+ CONTINUATION) sequence, and the first frame's flags.
    fn decode_frames(bytes: &[u8]) -> (Headers, u8) {
        let mut decoder = Decoder::new();
        let (mut block, mut rest, mut first_flags) = (Vec::new(), bytes, None);
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            first_flags.get_or_insert(rest[4]);
            block.extend_from_slice(&rest[9..9 + len]);
            rest = &rest[9 + len..];
        }
        (decoder.decode(&block).unwrap(), first_flags.unwrap())
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_stays() {
        let mut kubelet = Encoder::new();
        let mut fix = HeaderFix::default();
        let request = |path: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            vec![
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path),
                (
                    b":authority",
                    b"/var/lib/kubelet/plugins_registry/x-reg.sock",
                ),
                (b"content-type", b"application/grpc"),
            ]
        };
        // Twice on one connection: the second request refers to the first's table entries.
        for path in [
            &b"/pluginregistration.Registration/GetInfo"[..],
            b"/csi.v1.Node/NodeGetInfo",
        ] {
            let block = kubelet.encode(request(path));
            let fixed = fix.block(&block).unwrap();
            let (headers, flags) = decode_frames(&header_frames(&fixed, true, 1));
            assert_eq!(flags & (END_STREAM | END_HEADERS), END_STREAM | END_HEADERS);
            let get = |n: &[u8]| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            assert_eq!(get(b":authority").unwrap(), b"localhost");
            assert_eq!(get(b":path").unwrap(), path);
            assert_eq!(get(b"content-type").unwrap(), b"application/grpc");
        }
        // A valid authority is kept.
        let block = kubelet.encode(vec![(&b":authority"[..], &b"localhost:50051"[..])]);
        let (headers, _) = decode_frames(&header_frames(&fix.block(&block).unwrap(), false, 3));
        assert_eq!(headers[0].1, b"localhost:50051");
    }

    #[test]
    fn padding_and_priority_are_dropped_and_big_blocks_are_continued() {
        let payload = [2u8, 0, 0, 0, 1, 16, b'a', b'b', 0, 0];
        assert_eq!(header_fragment(PADDED | PRIORITY, &payload).unwrap(), b"ab");
        assert!(header_fragment(PADDED, &[9, 1]).is_err());
        let big = vec![7u8; MAX_FRAME + 10];
        let frames = header_frames(&big, false, 5);
        assert_eq!(frames.len(), big.len() + 18);
        assert_eq!(frames[3], HEADERS);
        assert_eq!(frames[4] & END_HEADERS, 0);
        let second = 9 + MAX_FRAME;
        assert_eq!(frames[second + 3], CONTINUATION);
        assert_eq!(frames[second + 4], END_HEADERS);
    }
}
