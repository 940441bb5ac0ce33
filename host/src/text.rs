//! Small text formatting on the request path, without `fmt`'s machinery where it shows.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// Appends `addr` as its `Display` writes it.
pub(crate) fn push_ip(out: &mut impl Write, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char('.');
                }
                let _ = out.write_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as its `Display` writes it.
pub(crate) fn push_socket_addr(out: &mut impl Write, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            let _ = out.write_char(':');
            let _ = out.write_str(itoa::Buffer::new().format(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Room for any socket address as `Display` writes it: `[`, the longest IPv6 text (39 bytes:
/// eight groups of four digits), `%` and a 10-digit scope id, `]:` and a 5-digit port — 58.
pub(crate) const ADDRESS_TEXT_BYTES: usize = 64;

/// A short text written on the stack: an address per request without an allocation.
pub(crate) struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub(crate) const fn new() -> StackText<N> {
        StackText {
            bytes: [0; N],
            len: 0,
        }
    }

    /// The text's bytes, UTF-8: for a reader that takes bytes, without checking them again.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole `str`s are written, so the bytes are UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl<const N: usize> Write for StackText<N> {
    /// Fails, writing nothing, when `s` does not fit.
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes = seed.to_le_bytes();
            let v4 = std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
            let port = u16::from_le_bytes([bytes[4], bytes[5]]);
            let v6 = std::net::Ipv6Addr::from(u128::from(seed) << 64 | u128::from(seed >> 3));
            for ip in [
                IpAddr::V4(v4),
                IpAddr::V6(v6),
                IpAddr::V6(v4.to_ipv6_mapped()),
            ] {
                let mut text = String::new();
                push_ip(&mut text, ip);
                assert_eq!(text, ip.to_string());
                let mut text = String::new();
                push_socket_addr(&mut text, SocketAddr::new(ip, port));
                assert_eq!(text, SocketAddr::new(ip, port).to_string());
                let mut text = StackText::<ADDRESS_TEXT_BYTES>::new();
                push_socket_addr(&mut text, SocketAddr::new(ip, port));
                assert_eq!(text.as_str(), SocketAddr::new(ip, port).to_string());
            }
        }
    }

    #[test]
    fn the_longest_addresses_fit_on_the_stack() {
        let longest_ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let longest = SocketAddr::V6(std::net::SocketAddrV6::new(
            std::net::Ipv6Addr::from([0xffff; 8]),
            65535,
            0,
            u32::MAX,
        ));
        assert_eq!(longest.to_string().len(), 58);
        let mut text = StackText::<ADDRESS_TEXT_BYTES>::new();
        push_ip(&mut text, longest_ip);
        assert_eq!(text.as_str(), longest_ip.to_string());
        for addr in [longest, SocketAddr::new(longest_ip, 65535)] {
            let mut text = StackText::<ADDRESS_TEXT_BYTES>::new();
            push_socket_addr(&mut text, addr);
            assert_eq!(text.as_str(), addr.to_string());
        }
        // What does not fit is not written, never written in part.
        let mut small = StackText::<4>::new();
        assert!(small.write_str("12345").is_err());
        assert!(small.write_str("1234").is_ok());
        assert_eq!(small.as_str(), "1234");
    }
}
