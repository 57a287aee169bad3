//! A keeper's resident memory: letting go of its start-up's code.
//!
//! A keeper lives as long as its executor (hours, for an AI session) and,
//! once the executor runs, does little: a timer, a wait, a lease renewal.
//! Its start-up did much more (reading the configuration, opening the
//! store, setting up logging and the runtime), and every page of code and
//! read-only data that start-up touched stays mapped: the kernel maps file
//! pages in 64 KB runs around each fault, so a keeper of this 9 MB binary
//! ends start-up with some 4 MB of its code resident, 1 MB of the C
//! library's, for the rest of the run, where the loop needs under one.
//!
//! [`release_clean_file_pages`] unmaps, from this process only, the pages
//! of every read-only private file mapping that holds nothing of its own
//! (no page written, so no anonymous copy): the binary's and the shared
//! libraries' code and constants. They stay in the page cache, shared with
//! the runner and the other keepers, and whatever the keeper touches again
//! is mapped back on its next access, from the same file. What was written
//! (relocated data, the heap, stacks) is never touched: dropping such a
//! page would lose the write. Linux only; elsewhere, or if `/proc` cannot
//! be read, nothing is released.

use std::io;

/// One mapping of `/proc/self/smaps` that may be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Releasable {
    start: usize,
    end: usize,
    resident_kb: u64,
}

/// Unmaps this process's clean, read-only file-backed pages (see the
/// module's documentation); how many kB were resident in them.
pub fn release_clean_file_pages() -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for mapping in releasable(&smaps) {
        // SAFETY: the range is a whole mapping of this process that is
        // private, not writable, backed by a file and has no anonymous
        // (written) page; MADV_DONTNEED on it only drops page-table entries,
        // and any later access maps the same bytes back from the file.
        // Nothing can write into it in between: it is not writable.
        let done = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if done == 0 {
            released += mapping.resident_kb;
        }
    }
    Ok(released)
}

/// The mappings of an smaps text that are private, read-only, backed by a
/// file (an inode) and have no anonymous page.
fn releasable(smaps: &str) -> Vec<Releasable> {
    let mut found = Vec::new();
    // The mapping being read: its range and whether its header qualifies,
    // then its resident and anonymous kB as the fields come.
    let mut current: Option<(Releasable, bool)> = None;
    let mut anonymous: Option<u64> = None;
    let mut finish = |current: Option<(Releasable, bool)>, anonymous: Option<u64>| {
        if let Some((mapping, true)) = current
            && anonymous == Some(0)
        {
            found.push(mapping);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            finish(current.take(), anonymous.take());
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let qualifies = perms.len() == 4
                && perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p')
                && inode != "0";
            current = Some((
                Releasable {
                    start,
                    end,
                    resident_kb: 0,
                },
                qualifies,
            ));
            continue;
        }
        let mut value = || fields.next().and_then(|v| v.parse::<u64>().ok());
        match (first, current.as_mut()) {
            ("Rss:", Some((mapping, _))) => mapping.resident_kb = value().unwrap_or(0),
            ("Anonymous:", Some(_)) => anonymous = value(),
            _ => {}
        }
    }
    finish(current, anonymous);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
556911bbc000-556911ec6000 r--p 00000000 fd:00 1234 /usr/bin/watcher
Size:               3112 kB
Rss:                 848 kB
Anonymous:             0 kB
556911ec6000-556912761000 r-xp 0030a000 fd:00 1234 /usr/bin/watcher
Size:               8812 kB
Rss:                4036 kB
Anonymous:             0 kB
556912761000-5569127ab000 r--p 00ba5000 fd:00 1234 /usr/bin/watcher
Size:                296 kB
Rss:                 296 kB
Anonymous:           296 kB
5569127ab000-5569127ad000 rw-p 00bef000 fd:00 1234 /usr/bin/watcher
Size:                  8 kB
Rss:                   8 kB
Anonymous:             8 kB
556912a94000-556912ad7000 rw-p 00000000 00:00 0 [heap]
Size:                268 kB
Rss:                 144 kB
Anonymous:           144 kB
7f5eb523b000-7f5eb5391000 r-xp 00028000 fd:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1368 kB
Rss:                1172 kB
Anonymous:             0 kB
7f5eb5500000-7f5eb5501000 r--s 00000000 fd:00 77 /some/shared/file
Rss:                   4 kB
Anonymous:             0 kB
7ffc1e9f4000-7ffc1e9f8000 r--p 00000000 00:00 0 [vvar]
Rss:                   0 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_are_released() {
        let found = releasable(SMAPS);
        let kb: Vec<u64> = found.iter().map(|m| m.resident_kb).collect();
        // The binary's constants and code and libc's code; not the relocated
        // (written) read-only data, the writable data, the heap, a shared
        // mapping or the kernel's.
        assert_eq!(kb, [848, 4036, 1172]);
        assert_eq!(found[0].start, 0x5569_11bb_c000);
        assert_eq!(found[0].end, 0x5569_11ec_6000);
    }

    #[test]
    fn a_mapping_without_its_anonymous_field_is_left_alone() {
        // Without the field nobody can say it holds no write.
        let smaps = "7f00-8f00 r-xp 00000000 fd:00 5 /lib/x.so\nRss: 4 kB\n";
        assert!(releasable(smaps).is_empty());
    }

    #[test]
    fn this_process_keeps_running_on_what_is_mapped_back() {
        let resident = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap()
        };
        let before = resident();
        let released = release_clean_file_pages().unwrap();
        let after = resident();
        assert!(released > 0, "nothing was released");
        assert!(
            after < before,
            "file-backed resident memory {before} kB before, {after} kB after"
        );
        // The code and constants come back as they are used: formatting,
        // allocation, parsing and a thread all still work.
        let text = format!("{:?}", (1..=3).map(|n| n * 2).collect::<Vec<u32>>());
        assert_eq!(text, "[2, 4, 6]");
        let joined = std::thread::spawn(|| "0x1f".trim_start_matches("0x").to_owned())
            .join()
            .unwrap();
        assert_eq!(u32::from_str_radix(&joined, 16).unwrap(), 31);
    }
}
