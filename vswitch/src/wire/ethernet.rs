//! Zero-copy view of an Ethernet II / 802.3 frame header (hand-written: it is all the fast path
//! reads, and a fixed-offset view costs nothing per packet).

use super::MacAddr;

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet header without a VLAN tag.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Values of the type/length field.
pub struct EtherType;

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    /// Values up to 1500 are an 802.3 length; 1536 and above are an EtherType.
    pub const MAX_8023_LENGTH: u16 = 1500;
    pub const MIN_ETHERTYPE: u16 = 0x0600;
}

/// Why a frame could not be read as Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than an Ethernet header.
    Runt,
    /// The 802.3 length field is invalid (1501..1535) or claims more bytes than the frame holds.
    BadLength,
}

/// A read-only view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking the header is present and the length field is consistent.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, FrameError> {
        let frame = Frame::new_unchecked(buffer);
        frame.check()?;
        Ok(frame)
    }

    fn check(&self) -> Result<(), FrameError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(FrameError::Runt);
        }
        let ty = self.ethertype();
        if ty < EtherType::MIN_ETHERTYPE {
            // 802.3 frame: the field is the payload length.
            if ty > EtherType::MAX_8023_LENGTH || usize::from(ty) > data.len() - HEADER_LEN {
                return Err(FrameError::BadLength);
            }
        }
        Ok(())
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SOURCE])
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ty: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ty.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:42:ac:11:00:02 for 172.17.0.3, as a kernel sends it from a TAP.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02, //
        0xac, 0x11, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x00, 0x03,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src().to_string(), "02:42:ac:11:00:02");
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 42];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst(MacAddr::BROADCAST);
        f.set_src("02:42:ac:11:00:02".parse().unwrap());
        f.set_ethertype(EtherType::ARP);
        buf[14..].copy_from_slice(&ARP_REQUEST[14..]);
        assert_eq!(buf, ARP_REQUEST);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Frame::new_checked(&ARP_REQUEST[..13]).unwrap_err(),
            FrameError::Runt
        );
        let mut f = ARP_REQUEST;
        f[12..14].copy_from_slice(&100u16.to_be_bytes()); // 802.3 length beyond the 28 bytes held
        assert_eq!(
            Frame::new_checked(&f[..]).unwrap_err(),
            FrameError::BadLength
        );
        f[12..14].copy_from_slice(&1510u16.to_be_bytes()); // neither a length nor a type
        assert_eq!(
            Frame::new_checked(&f[..]).unwrap_err(),
            FrameError::BadLength
        );
        f[12..14].copy_from_slice(&20u16.to_be_bytes());
        assert!(Frame::new_checked(&f[..]).is_ok());
    }
}
