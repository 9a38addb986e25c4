//! `bpf(2)`, the few commands the daemon uses (maps, program load, test runs), and a small
//! assembler with labels for the XDP programs it writes itself.
//!
//! The programs are short and hand-assembled on purpose: compiling C to BPF would need clang
//! and an object loader (libbpf's wants bpffs and pins; aya's programs need a nightly toolchain)
//! on every machine that builds vswitchd, for two programs of a few dozen instructions. The
//! assembler resolves jump labels so the programs read top to bottom.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// XDP verdicts.
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

/// Helper function numbers (`enum bpf_func_id`).
pub const HELPER_MAP_LOOKUP: i32 = 1;
pub const HELPER_MAP_UPDATE: i32 = 2;
pub const HELPER_REDIRECT_MAP: i32 = 51;

/// `union bpf_attr`, as a zeroed 128-byte buffer the commands' fields are written into.
#[repr(C, align(8))]
pub struct BpfAttr(pub [u8; 128]);

impl BpfAttr {
    pub fn new() -> BpfAttr {
        BpfAttr([0; 128])
    }
    pub fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn name(&mut self, off: usize, name: &str) -> &mut Self {
        let n = name.len().min(15);
        self.0[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap_or([0; 4]))
    }
}

impl Default for BpfAttr {
    fn default() -> Self {
        BpfAttr::new()
    }
}

/// `bpf(cmd, attr, sizeof attr)`.
pub fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a 128-byte, 8-aligned buffer laid out as `union bpf_attr` for `cmd`;
    // every pointer written into it refers to memory that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: `rc` is a fd the kernel just returned to us (bpf succeeded); nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

/// A new map of `kind` with `key`- and `value`-byte entries, at most `max` of them.
pub fn map_create(kind: u32, key: u32, value: u32, max: u32, name: &str) -> io::Result<OwnedFd> {
    bpf(
        BPF_MAP_CREATE,
        BpfAttr::new()
            .u32(0, kind)
            .u32(4, key)
            .u32(8, value)
            .u32(12, max)
            .name(28, name),
    )
    .map(bpf_fd)
}

/// Sets `key` to `value` (their sizes are the map's).
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    bpf(
        BPF_MAP_UPDATE_ELEM,
        BpfAttr::new()
            .u32(0, map.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_ptr() as u64),
    )
    .map(|_| ())
}

/// Reads `key` into `value`; false when the map has no such key.
pub fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> bool {
    bpf(
        BPF_MAP_LOOKUP_ELEM,
        BpfAttr::new()
            .u32(0, map.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_mut_ptr() as u64),
    )
    .is_ok()
}

pub fn map_delete(map: &OwnedFd, key: &[u8]) {
    let _ = bpf(
        BPF_MAP_DELETE_ELEM,
        BpfAttr::new()
            .u32(0, map.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64),
    );
}

/// Loads an XDP program; on a verifier error its log is in the error.
pub fn prog_load_xdp(insns: &[[u8; 8]], name: &str) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let load = |log: &mut Vec<u8>| {
        bpf(
            BPF_PROG_LOAD,
            BpfAttr::new()
                .u32(0, BPF_PROG_TYPE_XDP)
                .u32(4, insns.len() as u32)
                .u64(8, insns.as_ptr() as u64)
                .u64(16, license.as_ptr() as u64)
                .u32(24, u32::from(!log.is_empty()))
                .u32(28, log.len() as u32)
                .u64(32, log.as_mut_ptr() as u64)
                .name(48, name),
        )
        .map(bpf_fd)
    };
    load(&mut Vec::new()).or_else(|e| {
        // Again with the verifier's log, for the error message.
        let mut log = vec![0u8; 64 * 1024];
        match load(&mut log) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; verifier: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ))
            }
        }
    })
}

/// Runs `prog` once on `packet` (`BPF_PROG_TEST_RUN`) and returns its verdict.
pub fn test_run(prog: &OwnedFd, packet: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = BpfAttr::new();
    attr.u32(0, prog.as_raw_fd() as u32)
        .u32(8, packet.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, packet.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, 1);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.get_u32(4))
}

/// One `struct bpf_insn`: opcode, dst/src registers, offset, immediate.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// Load/store sizes.
#[derive(Clone, Copy)]
pub enum Size {
    B,
    H,
    W,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
        }
    }
}

/// Conditional jumps (64-bit compares, unsigned unless said).
#[derive(Clone, Copy)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `dst & imm != 0`.
    Set,
}

impl Cond {
    fn op(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ge => 0x30,
            Cond::Set => 0x40,
            Cond::Ne => 0x50,
            Cond::Lt => 0xa0,
            Cond::Le => 0xb0,
        }
    }
}

/// Where a frame a steering program takes goes: the `slot` of `xsks` (production), or back
/// out with `XDP_TX` (the verdict tests look for; `BPF_PROG_TEST_RUN` cannot redirect to a
/// socket).
pub enum Take<'a> {
    Redirect {
        xsks: &'a OwnedFd,
        slot: u32,
    },
    #[cfg(test)]
    Tx,
}

impl Take<'_> {
    /// The program's ending for a frame it takes.
    pub fn emit(&self, a: &mut Asm) {
        match self {
            Take::Redirect { xsks, slot } => a
                .ld_map(1, xsks)
                .mov(2, *slot as i32)
                .mov(3, XDP_PASS)
                .call(HELPER_REDIRECT_MAP)
                .exit(),
            #[cfg(test)]
            Take::Tx => a.mov(0, XDP_TX).exit(),
        };
    }
}

/// An instruction list with symbolic jump targets.
#[derive(Default)]
pub struct Asm {
    insns: Vec<[u8; 8]>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, i: [u8; 8]) -> &mut Self {
        self.insns.push(i);
        self
    }

    pub fn label(&mut self, name: &'static str) -> &mut Self {
        let at = self.insns.len();
        assert!(
            self.labels.insert(name, at).is_none(),
            "label {name} defined twice"
        );
        self
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(0x61 | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(0x63 | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(insn(0x62 | size.bits(), dst, 0, off, imm))
    }

    pub fn mov(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(0xb7, dst, 0, 0, imm))
    }

    pub fn mov_reg(&mut self, dst: u8, src: u8) -> &mut Self {
        self.push(insn(0xbf, dst, src, 0, 0))
    }

    pub fn add(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(0x07, dst, 0, 0, imm))
    }

    pub fn and(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(0x57, dst, 0, 0, imm))
    }

    /// Network to host order of the low 16 bits (a no-op on big-endian hosts).
    pub fn be16(&mut self, dst: u8) -> &mut Self {
        self.push(insn(0xdc, dst, 0, 0, 16))
    }

    /// `if dst <cond> imm goto label` (64-bit compare; `imm` is sign-extended).
    pub fn jmp(&mut self, cond: Cond, dst: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.push(insn(0x05 | cond.op(), dst, 0, 0, imm))
    }

    /// `if (u32)dst <cond> (u32)imm goto label`.
    pub fn jmp32(&mut self, cond: Cond, dst: u8, imm: i32, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.push(insn(0x06 | cond.op(), dst, 0, 0, imm))
    }

    /// `if dst <cond> src goto label`.
    pub fn jmp_reg(&mut self, cond: Cond, dst: u8, src: u8, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.push(insn(0x0d | cond.op(), dst, src, 0, 0))
    }

    pub fn goto(&mut self, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.push(insn(0x05, 0, 0, 0, 0))
    }

    /// `dst = map` (a 64-bit load of the map's fd, `BPF_PSEUDO_MAP_FD`).
    pub fn ld_map(&mut self, dst: u8, map: &OwnedFd) -> &mut Self {
        self.push(insn(0x18, dst, 1, 0, map.as_raw_fd()));
        self.push(insn(0, 0, 0, 0, 0))
    }

    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(insn(0x85, 0, 0, 0, helper))
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(0x95, 0, 0, 0, 0))
    }

    /// The instructions, every jump resolved.
    pub fn finish(&self) -> Result<Vec<[u8; 8]>, String> {
        let mut out = self.insns.clone();
        for &(at, label) in &self.jumps {
            let target = *self
                .labels
                .get(label)
                .ok_or_else(|| format!("no label {label}"))?;
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off).map_err(|_| format!("jump to {label} too far"))?;
            out[at][2..4].copy_from_slice(&off.to_le_bytes());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // ldxw r2, [r1 + 16]
        assert_eq!(insn(0x61, 2, 1, 16, 0), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // stxw [r10 - 4], r2: a negative offset, little-endian
        assert_eq!(
            insn(0x63, 10, 2, -4, 0),
            [0x63, 0x2a, 0xfc, 0xff, 0, 0, 0, 0]
        );
        // call 51
        assert_eq!(insn(0x85, 0, 0, 0, 51), [0x85, 0, 0, 0, 51, 0, 0, 0]);
        let mut a = BpfAttr::new();
        a.u32(4, 0x0102_0304).name(28, "a_name_longer_than_sixteen");
        assert_eq!(&a.0[4..8], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&a.0[28..43], b"a_name_longer_t");
        assert_eq!(a.0[43], 0, "names stay NUL-terminated");
    }

    #[test]
    fn the_assembler_resolves_labels_both_ways() {
        let mut a = Asm::new();
        a.label("top")
            .ldx(Size::H, 2, 7, 12)
            .jmp(Cond::Ne, 2, 8, "out")
            .jmp32(Cond::Eq, 2, -1, "top")
            .goto("out")
            .label("out")
            .mov(0, XDP_PASS)
            .exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0], [0x69, 0x72, 12, 0, 0, 0, 0, 0], "ldxh r2, [r7 + 12]");
        assert_eq!(p[1], insn(0x55, 2, 0, 2, 8), "jne forward over two");
        assert_eq!(p[2], insn(0x16, 2, 0, -3, -1), "jeq32 back to the top");
        assert_eq!(p[3], insn(0x05, 0, 0, 0, 0), "ja to the next one");
        let mut bad = Asm::new();
        bad.goto("nowhere");
        assert!(bad.finish().is_err());
    }
}
