//! Parsing and building frames.
//!
//! The fast path only needs the Ethernet header (destination, source, type/length), so that view
//! is written by hand here as a zero-copy `Frame<T: AsRef<[u8]>>` in the smoltcp style: one small
//! `mod field` holds the offsets and nothing else touches raw offsets. Protocols the switch answers
//! itself (ARP, DHCP, DNS) use maintained codecs (etherparse, dhcproto, hickory-proto).

pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod gro;
pub mod ipv4;
pub mod mac;
pub mod offload;

pub use ethernet::{EtherType, Frame};
pub use mac::MacAddr;
