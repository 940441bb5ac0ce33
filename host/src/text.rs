//! Small text formatting on the request path, without `fmt`'s machinery where it shows.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Appends `addr` as its `Display` writes it.
pub(crate) fn push_ip(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as its `Display` writes it.
pub(crate) fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(':');
            out.push_str(itoa::Buffer::new().format(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
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
            }
        }
    }
}
