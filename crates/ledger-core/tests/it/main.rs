use ledger_core::*;
fn hash(p: &std::path::Path) -> Vec<u8> { std::fs::read(p).unwrap() }
const META: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
#[test]
fn experiment() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.redb");
    drop(Ledger::open(&p).unwrap());
    {
        let mut b = redb::Builder::new();
        b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let db = b.open(&p).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(META).unwrap().insert("schema_version", "99").unwrap();
        t.commit().unwrap();
    }
    let before = hash(&p);
    let r = Ledger::open(&p);
    println!("{:?}", r.err());
    let after = hash(&p);
    println!("unchanged: {}", before == after);
    if before != after { for (i,(a,b)) in before.iter().zip(&after).enumerate() { if a!=b { println!("diff at {i}: {a} {b}"); } } }
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    let r = b.open_read_only(&p);
    println!("ro open: {:?}", r.err());
    println!("unchanged: {}", before == hash(&p));
}
