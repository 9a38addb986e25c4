//! 802.1Q on a parent interface (macvlan networks on `IFACE.VLAN`): the switch adds and strips
//! the tag itself, so no kernel sub-interface exists. Frames inside the switch are untagged;
//! the parent's receive path strips (`strip`), its per-VLAN transmit side tags (`push`).
//!
//! Written by hand rather than through etherparse: it is four bytes at a fixed offset on the
//! fast path of every parent frame, moved in place.

/// The 802.1Q tag protocol identifier.
pub const TPID: [u8; 2] = [0x81, 0x00];
/// Bytes a tag adds.
pub const TAG_LEN: usize = 4;
/// VLAN ids a network may claim (0 is "priority only", 4095 reserved).
pub const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

/// The VLAN a frame is on: `Some(0)` untagged, `Some(id)` tagged with `id`, `None` when it is
/// too short to say (a runt, or a tag with nothing after it).
#[inline]
pub fn vlan_of(frame: &[u8]) -> Option<u16> {
    let ty = frame.get(12..14)?;
    if ty != TPID {
        return Some(0);
    }
    let tci = frame.get(14..18)?;
    Some(u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff)
}

/// Removes the tag of the frame in `buf[..len]` in place (the rest moves back four bytes);
/// returns the new length. An untagged frame is left as it is.
#[inline]
pub fn strip(buf: &mut [u8], len: usize) -> usize {
    if len < 14 + TAG_LEN || buf[12..14] != TPID {
        return len;
    }
    buf.copy_within(12 + TAG_LEN..len, 12);
    len - TAG_LEN
}

/// Writes `frame` with a tag for `vlan` (priority 0) after its MAC addresses into `out`.
pub fn push(frame: &[u8], vlan: u16, out: &mut Vec<u8>) {
    out.clear();
    if frame.len() < 12 {
        out.extend_from_slice(frame);
        return;
    }
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&TPID);
    out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
}

/// Parses a parent as given to `--parent`: `IFACE` or `IFACE.VLAN`. Errors say what is wrong.
pub fn parse_parent(s: &str) -> Result<(String, Option<u16>), String> {
    let (iface, vlan) = match s.rsplit_once('.') {
        Some((i, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            let id: u32 = v
                .parse()
                .map_err(|_| format!("VLAN {v:?} of parent {s:?} is out of range (1 to 4094)"))?;
            if !(1..=4094).contains(&id) {
                return Err(format!(
                    "VLAN {id} of parent {s:?} is out of range (1 to 4094)"
                ));
            }
            (i, Some(id as u16))
        }
        _ => (s, None),
    };
    if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ', '\0']) {
        return Err(format!(
            "invalid parent {s:?}: expected an interface name, optionally with .VLAN (eth0, eth0.20)"
        ));
    }
    Ok((iface.to_string(), vlan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[1, 2, 3, 4, 5]);
        f
    }

    #[test]
    fn push_then_strip_gives_the_frame_back() {
        let f = frame();
        assert_eq!(vlan_of(&f), Some(0));
        let mut tagged = Vec::new();
        push(&f, 20, &mut tagged);
        assert_eq!(tagged.len(), f.len() + 4);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 20]);
        assert_eq!(vlan_of(&tagged), Some(20));
        let mut buf = tagged.clone();
        buf.resize(100, 0);
        let n = strip(&mut buf, tagged.len());
        assert_eq!(&buf[..n], &f[..]);
        // Priority bits are not the VLAN.
        tagged[14] |= 0xe0;
        assert_eq!(vlan_of(&tagged), Some(20));
    }

    #[test]
    fn short_frames_are_not_misread() {
        assert_eq!(vlan_of(&[0; 10]), None);
        let mut t = frame()[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0]);
        assert_eq!(vlan_of(&t), None, "a tag cut short");
        let mut buf = t.clone();
        assert_eq!(strip(&mut buf, t.len()), t.len());
    }

    #[test]
    fn parents_parse_with_and_without_vlan() {
        assert_eq!(parse_parent("eth0"), Ok(("eth0".into(), None)));
        assert_eq!(parse_parent("eth0.20"), Ok(("eth0".into(), Some(20))));
        assert_eq!(parse_parent("br.lan"), Ok(("br.lan".into(), None)));
        assert!(parse_parent("eth0.0").unwrap_err().contains("1 to 4094"));
        assert!(parse_parent("eth0.4095").unwrap_err().contains("1 to 4094"));
        assert!(parse_parent("eth0.99999999999").is_err());
        assert!(parse_parent(".20").is_err());
        assert!(parse_parent("a/b").is_err());
    }
}
