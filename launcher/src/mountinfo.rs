//! The mount table as `/proc/<pid>/mountinfo` shows it (see proc_pid_mountinfo(5)).
//!
//! Used to read a bpffs delegation back the way the kernel stored it, and to list the bpffs
//! instances a caller can see.

use std::path::PathBuf;

use nix::unistd::Pid;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options, where bpffs shows `delegate_*`.
    pub super_options: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `36 35 0:40 / /sys/fs/bpf rw,relatime shared:7 - bpf bpf rw,delegate_cmds=any`: the
/// optional fields before ` - ` vary in number, so the line is split there first.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let _device = fields.next()?;
    let _root = fields.next()?;
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let mut rest = after.split(' ');
    let fs_type = unescape(rest.next()?);
    let source = unescape(rest.next()?);
    let super_options = unescape(rest.next().unwrap_or(""));
    Some(MountEntry {
        mount_id,
        parent_id,
        mount_point,
        fs_type,
        source,
        super_options,
    })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && octal.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                octal
                    .iter()
                    .fold(0u8, |acc, b| acc.wrapping_mul(8) + (b - b'0')),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table of `pid` (or of the caller).
pub fn read(pid: Option<Pid>) -> std::io::Result<Vec<MountEntry>> {
    let path = pid.map_or_else(
        || "/proc/self/mountinfo".to_owned(),
        |p| format!("/proc/{p}/mountinfo"),
    );
    Ok(parse(&std::fs::read_to_string(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpffs_line_with_optional_fields() {
        let text = "22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                    36 22 0:40 / /sys/fs/bpf rw,relatime shared:9 master:1 - bpf bpf rw,uid=0,delegate_cmds=map_create:prog_load,delegate_maps=any\n";
        let entries = parse(text);
        assert_eq!(entries.len(), 2);
        let bpf = &entries[1];
        assert_eq!(bpf.mount_id, 36);
        assert_eq!(bpf.parent_id, 22);
        assert_eq!(bpf.mount_point, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(bpf.fs_type, "bpf");
        assert_eq!(
            bpf.super_options,
            "rw,uid=0,delegate_cmds=map_create:prog_load,delegate_maps=any"
        );
    }

    #[test]
    fn escaped_mount_points_and_junk() {
        let entries = parse("40 1 0:50 / /tmp/a\\040b rw - bpf none rw\nnot a line\n");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].mount_point, PathBuf::from("/tmp/a b"));
    }
}
