//! What the drop log reads of a logged packet: its protocol, addresses and ports. Pure, and
//! never panics on what the kernel copied (a packet may be cut anywhere).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// A packet's flow: protocol number, addresses, and ports for the protocols that have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ports: Option<(u16, u16)>,
}

/// The flow of `packet` (from its network header), of family `NFPROTO_IPV4`/`IPV6`.
pub fn flow(family: u8, packet: &[u8]) -> Option<Flow> {
    let (protocol, src, dst, transport) = match family {
        NFPROTO_IPV4 => ipv4(packet)?,
        NFPROTO_IPV6 => ipv6(packet)?,
        _ => return None,
    };
    let ports = match (protocol, transport) {
        (6 | 17 | 132, Some(t)) => ports(t),
        _ => None,
    };
    Some(Flow {
        protocol,
        src,
        dst,
        ports,
    })
}

type Header<'a> = (u8, IpAddr, IpAddr, Option<&'a [u8]>);

/// Protocol, addresses, and the transport header unless this is a later fragment.
fn ipv4(packet: &[u8]) -> Option<Header<'_>> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes(packet.get(6..8)?.try_into().ok()?) & 0x1fff;
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    let transport = (fragment_offset == 0)
        .then(|| packet.get(header_len..))
        .flatten();
    Some((
        *packet.get(9)?,
        Ipv4Addr::from(src).into(),
        Ipv4Addr::from(dst).into(),
        transport,
    ))
}

/// Protocol (after the extension headers that carry no payload of their own), addresses,
/// and the transport header unless this is a fragment.
fn ipv6(packet: &[u8]) -> Option<Header<'_>> {
    if packet.first()? >> 4 != 6 {
        return None;
    }
    let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    let (mut next, mut at) = (*packet.get(6)?, 40);
    // Hop-by-hop, routing and destination options: skip; a fragment has no ports to read.
    let mut transport = None;
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                next = *packet.get(at)?;
                at += (usize::from(*packet.get(at + 1)?) + 1) * 8;
            }
            44 => {
                next = *packet.get(at)?;
                break;
            }
            _ => {
                transport = packet.get(at..);
                break;
            }
        }
    }
    Some((
        next,
        Ipv6Addr::from(src).into(),
        Ipv6Addr::from(dst).into(),
        transport,
    ))
}

fn ports(transport: &[u8]) -> Option<(u16, u16)> {
    Some((
        u16::from_be_bytes(transport.get(0..2)?.try_into().ok()?),
        u16::from_be_bytes(transport.get(2..4)?.try_into().ok()?),
    ))
}

/// The protocol's name as NetworkPolicy and nft write it, else its number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(fragment: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0];
        p.extend(fragment.to_be_bytes());
        p.extend([64, 6, 0, 0, 10, 1, 0, 5, 10, 1, 0, 7]);
        p.extend([0xa0, 0x00, 0x15, 0x38]); // 40960 → 5432
        p
    }

    #[test]
    fn an_ipv4_segment_gives_its_addresses_and_ports() {
        let read = flow(NFPROTO_IPV4, &tcp4(0)).unwrap();
        assert_eq!(read.protocol, 6);
        assert_eq!(read.src, "10.1.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(read.dst, "10.1.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(read.ports, Some((40960, 5432)));
        // A later fragment has no ports; a packet cut anywhere never panics.
        assert_eq!(flow(NFPROTO_IPV4, &tcp4(0x0010)).unwrap().ports, None);
        let whole = tcp4(0);
        for cut in 0..whole.len() {
            let _ = flow(NFPROTO_IPV4, &whole[..cut]);
        }
        assert_eq!(flow(NFPROTO_IPV4, &whole[..19]), None);
        assert_eq!(flow(NFPROTO_IPV6, &whole), None);
    }

    #[test]
    fn an_ipv6_datagram_is_read_past_its_option_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64]; // next header: hop-by-hop
        p.extend("fd00::5".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("fd00::7".parse::<Ipv6Addr>().unwrap().octets());
        p.extend([17, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, 8 bytes, then UDP
        p.extend([0x00, 0x35, 0x1f, 0x90]); // 53 → 8080
        let read = flow(NFPROTO_IPV6, &p).unwrap();
        assert_eq!((read.protocol, read.ports), (17, Some((53, 8080))));
        assert_eq!(read.dst, "fd00::7".parse::<IpAddr>().unwrap());
        for cut in 0..p.len() {
            let _ = flow(NFPROTO_IPV6, &p[..cut]);
        }
        assert_eq!(protocol_name(17), "udp");
        assert_eq!(protocol_name(47), "47");
    }
}
