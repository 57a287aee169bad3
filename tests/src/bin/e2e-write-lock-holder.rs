//! Holds a ledger file's write lock, as another process in the middle of a
//! long write transaction would: `e2e-write-lock-holder LEDGER SECS`. It
//! opens the file the way every inflight process does (redb's multi-writer
//! mode), takes the write transaction, prints `LOCKED`, waits SECS seconds
//! and lets the transaction go without committing.

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(secs)) = (args.next(), args.next()) else {
        eprintln!("usage: e2e-write-lock-holder LEDGER SECS");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECS is a number of seconds");
    let mut builder = redb::Builder::new();
    builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    let db = builder.open(&path).expect("the ledger opens");
    let txn = db.begin_write().expect("the write lock");
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(secs));
    drop(txn);
}
