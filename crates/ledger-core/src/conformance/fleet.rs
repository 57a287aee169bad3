//! The fleet contract's checks ([`FleetStore`]): budgets, pauses, the
//! board snapshot and its hints.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use super::*;

pub fn a_budget_takes_up_to_its_limit_then_waits_for_the_oldest_take(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    for (i, secs) in [0, 10, 20].into_iter().enumerate() {
        assert_eq!(
            ledger.take_budget("key-a", 3, MINUTE, at(secs)).unwrap(),
            BudgetAnswer::Taken {
                in_window: i as u32 + 1
            }
        );
    }
    // Full: the take made at 0 s leaves the window at 60 s.
    assert_eq!(
        ledger.take_budget("key-a", 3, MINUTE, at(30)).unwrap(),
        BudgetAnswer::Wait {
            wait: Duration::from_secs(30),
            in_window: 3,
            paused: false
        }
    );
    // A refused take is not recorded: at 60 s exactly one slot is free.
    assert_eq!(
        ledger.take_budget("key-a", 3, MINUTE, at(60)).unwrap(),
        BudgetAnswer::Taken { in_window: 3 }
    );
    assert!(matches!(
        ledger.take_budget("key-a", 3, MINUTE, at(61)).unwrap(),
        BudgetAnswer::Wait { wait, in_window: 3, .. } if wait == Duration::from_secs(9)
    ));
    // Another key has a budget of its own.
    assert_eq!(
        ledger.take_budget("key-b", 3, MINUTE, at(61)).unwrap(),
        BudgetAnswer::Taken { in_window: 1 }
    );
    // A limit lowered below what the window holds waits until enough of
    // the oldest have left: with 10 s, 20 s and 60 s held and a limit of
    // 2, the takes made at 10 s and 20 s must leave (the later at 80 s).
    assert_eq!(
        ledger.take_budget("key-a", 2, MINUTE, at(62)).unwrap(),
        BudgetAnswer::Wait {
            wait: Duration::from_secs(18),
            in_window: 3,
            paused: false
        }
    );
}

pub fn a_pause_holds_every_take_of_its_key_and_is_never_shortened(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    ledger.take_budget("key-a", 60, MINUTE, at(0)).unwrap();
    ledger
        .pause_budget("key-a", Duration::from_secs(40), at(0))
        .unwrap();
    // A shorter pause later does not cut the first one short.
    ledger
        .pause_budget("key-a", Duration::from_secs(5), at(10))
        .unwrap();
    assert_eq!(
        ledger.take_budget("key-a", 60, MINUTE, at(30)).unwrap(),
        BudgetAnswer::Wait {
            wait: Duration::from_secs(10),
            in_window: 1,
            paused: true
        }
    );
    assert_eq!(
        ledger.take_budget("key-b", 60, MINUTE, at(30)).unwrap(),
        BudgetAnswer::Taken { in_window: 1 },
        "another key is not paused"
    );
    assert_eq!(
        ledger.take_budget("key-a", 60, MINUTE, at(40)).unwrap(),
        BudgetAnswer::Taken { in_window: 2 }
    );
}

pub fn a_budget_is_read_as_it_stands_without_a_take(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    let state = |secs| ledger.budget_state("key-a", MINUTE, at(secs)).unwrap();
    assert_eq!(
        state(0),
        BudgetState::default(),
        "a budget never taken from"
    );
    for secs in [0, 10, 20] {
        ledger.take_budget("key-a", 60, MINUTE, at(secs)).unwrap();
    }
    assert_eq!(
        state(30),
        BudgetState {
            in_window: 3,
            paused_until: None
        }
    );
    assert_eq!(
        state(30),
        BudgetState {
            in_window: 3,
            paused_until: None
        },
        "reading took nothing"
    );
    ledger
        .pause_budget("key-a", Duration::from_secs(40), at(30))
        .unwrap();
    assert_eq!(
        state(65),
        BudgetState {
            in_window: 2,
            paused_until: Some(at(70))
        },
        "the first take left the window; the pause holds"
    );
    assert_eq!(
        state(85),
        BudgetState {
            in_window: 0,
            paused_until: None
        },
        "all gone, the pause over"
    );
    assert_eq!(
        ledger.budget_state("key-b", MINUTE, at(30)).unwrap(),
        BudgetState::default()
    );
}

pub fn takers_racing_on_one_budget_never_exceed_it(subject: &Subject) {
    let store = subject.shared();
    let taken: Vec<u32> = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                scope.spawn(move || {
                    let mut taken = 0;
                    for _ in 0..10 {
                        if let BudgetAnswer::Taken { .. } =
                            store.take_budget("shared", 25, MINUTE, T0).unwrap()
                        {
                            taken += 1;
                        }
                    }
                    taken
                })
            })
            .collect();
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(taken.iter().sum::<u32>(), 25, "{taken:?}");
}

pub fn requests_plane_counted_from_outside_the_fleet_fill_the_window(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    for _ in 0..3 {
        ledger.take_budget("outside", 10, MINUTE, at(0)).unwrap();
    }
    // Plane counts 3: nothing came from outside.
    assert_eq!(
        ledger
            .note_budget_used("outside", 3, MINUTE, at(1))
            .unwrap(),
        0
    );
    // Plane counts 8: 5 were someone else's, and the window is full at 10.
    assert_eq!(
        ledger
            .note_budget_used("outside", 8, MINUTE, at(2))
            .unwrap(),
        5
    );
    assert_eq!(
        ledger.take_budget("outside", 10, MINUTE, at(3)).unwrap(),
        BudgetAnswer::Taken { in_window: 9 }
    );
    ledger.take_budget("outside", 10, MINUTE, at(3)).unwrap();
    let BudgetAnswer::Wait {
        in_window, wait, ..
    } = ledger.take_budget("outside", 10, MINUTE, at(4)).unwrap()
    else {
        panic!("the window is full");
    };
    assert_eq!(in_window, 10);
    // The fleet's first takes leave first (at 60 s), the outside ones at
    // 62 s: they were learnt of at 2 s.
    assert_eq!(wait, Duration::from_secs(56));
    assert_eq!(
        ledger.take_budget("outside", 10, MINUTE, at(61)).unwrap(),
        BudgetAnswer::Taken { in_window: 8 }
    );
    // Another key is untouched.
    assert_eq!(
        ledger.take_budget("other", 10, MINUTE, at(61)).unwrap(),
        BudgetAnswer::Taken { in_window: 1 }
    );
}

pub fn one_caller_lists_the_board_and_every_other_is_served_its_snapshot(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    let (max_age, listing_for) = (Duration::from_secs(30), Duration::from_secs(20));
    // No snapshot yet: the first caller lists, the next waits for it.
    let BoardLook::YoursToList {
        listed_at,
        events_seen,
        until,
        previous: None,
    } = ledger
        .board_look("board", max_age, listing_for, at(0))
        .unwrap()
    else {
        panic!("the first look lists");
    };
    assert_eq!(until, at(20));
    assert_eq!(
        ledger
            .board_look("board", max_age, listing_for, at(1))
            .unwrap(),
        BoardLook::BeingListed {
            previous: None,
            until: at(20)
        }
    );
    // An admission made while it lists is numbered above what it saw.
    let started = admitted(
        ledger
            .admit(&request("claude", "t1", "r1"), &limits(2), at(1))
            .unwrap(),
    );
    assert_eq!(listed_at, at(0));
    ledger
        .put_board("board", listed_at, events_seen, b"items-1", at(2))
        .unwrap();
    let fresh = BoardSnapshot {
        listed_at: at(0),
        events_seen,
        body: b"items-1".to_vec(),
    };
    assert_eq!(
        ledger
            .board_look("board", max_age, listing_for, at(29))
            .unwrap(),
        BoardLook::Fresh(fresh.clone())
    );
    let starts_since: Vec<_> = ledger
        .events_after(fresh.events_seen, 100)
        .unwrap()
        .into_iter()
        .filter(
            |e| matches!(&e.kind, EventKind::Started { run_id, .. } if *run_id == started.run_id),
        )
        .collect();
    assert_eq!(
        starts_since.len(),
        1,
        "the start after the listing is found"
    );
    // Old: one caller lists again, the others get the old one meanwhile.
    let BoardLook::YoursToList {
        previous: Some(old),
        ..
    } = ledger
        .board_look("board", max_age, listing_for, at(30))
        .unwrap()
    else {
        panic!("an old snapshot is listed again");
    };
    assert_eq!(old, fresh);
    assert_eq!(
        ledger
            .board_look("board", max_age, listing_for, at(31))
            .unwrap(),
        BoardLook::BeingListed {
            previous: Some(fresh.clone()),
            until: at(50)
        }
    );
    // A lister that never comes back is given up on when its time is out.
    let BoardLook::YoursToList {
        listed_at,
        events_seen,
        ..
    } = ledger
        .board_look("board", max_age, listing_for, at(50))
        .unwrap()
    else {
        panic!("a listing given up on is asked of the next caller");
    };
    ledger
        .put_board("board", listed_at, events_seen, b"items-2", at(51))
        .unwrap();
    // The late lister's older listing does not replace the newer one.
    ledger
        .put_board("board", at(30), events_seen, b"late", at(52))
        .unwrap();
    let BoardLook::Fresh(now) = ledger
        .board_look("board", max_age, listing_for, at(53))
        .unwrap()
    else {
        panic!("the new snapshot is fresh");
    };
    assert_eq!(now.body, b"items-2");
    // Another board is another snapshot.
    assert!(matches!(
        ledger
            .board_look("other", max_age, listing_for, at(53))
            .unwrap(),
        BoardLook::YoursToList { previous: None, .. }
    ));
}

pub fn a_lister_holds_its_claim_while_it_lists_and_gives_it_up_when_it_stops(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    let (max_age, listing_for) = (Duration::from_secs(30), Duration::from_secs(4));
    let BoardLook::YoursToList { until, .. } = ledger
        .board_look("held", max_age, listing_for, at(0))
        .unwrap()
    else {
        panic!("the first look lists");
    };
    // Held past the claim's first end: the others still wait.
    let held = ledger
        .hold_listing("held", until, listing_for, at(3))
        .unwrap();
    assert_eq!(held, Some(at(7)));
    assert_eq!(
        ledger
            .board_look("held", max_age, listing_for, at(5))
            .unwrap(),
        BoardLook::BeingListed {
            previous: None,
            until: at(7)
        }
    );
    // A hold by its old end is not this claim's any more.
    assert_eq!(
        ledger
            .hold_listing("held", until, listing_for, at(5))
            .unwrap(),
        None
    );
    // Given up: the next look lists at once, not at the claim's end.
    assert_eq!(
        ledger
            .hold_listing("held", at(7), Duration::ZERO, at(6))
            .unwrap(),
        Some(at(6))
    );
    let BoardLook::YoursToList { until: again, .. } = ledger
        .board_look("held", max_age, listing_for, at(6))
        .unwrap()
    else {
        panic!("a claim given up is anyone's");
    };
    assert_eq!(again, at(10));
    // Not held (it died): after its end, another lister takes over, and
    // the dead one's hold finds the claim gone.
    let BoardLook::YoursToList { until: third, .. } = ledger
        .board_look("held", max_age, listing_for, at(10))
        .unwrap()
    else {
        panic!("a lapsed claim is anyone's");
    };
    assert_eq!(third, at(14));
    assert_eq!(
        ledger
            .hold_listing("held", again, listing_for, at(11))
            .unwrap(),
        None
    );
    // A stored snapshot ends the claim: holding it finds nothing.
    ledger
        .put_board("held", at(10), 0, b"items", at(12))
        .unwrap();
    assert_eq!(
        ledger
            .hold_listing("held", third, listing_for, at(12))
            .unwrap(),
        None
    );
}

pub fn board_hints_are_read_in_order_per_board_and_dropped_when_old(subject: &Subject) {
    let ledger = subject.store();
    let at = |secs: u64| T0.saturating_add(Duration::from_secs(secs));
    assert_eq!(
        ledger.board_hints_after("board", u64::MAX).unwrap(),
        BoardHints::default()
    );
    let numbers: Vec<u64> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            ledger
                .add_board_hint("board", h.as_bytes(), at(i as u64))
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    ledger.add_board_hint("other", b"x", at(3)).unwrap();
    let all = ledger.board_hints_after("board", 0).unwrap();
    assert_eq!(all.hints, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(all.last, numbers[2]);
    let later = ledger.board_hints_after("board", numbers[0]).unwrap();
    assert_eq!(later.hints, [b"b".to_vec(), b"c".to_vec()]);
    // A reader starting out learns where the log stands, and nothing else.
    let start = ledger.board_hints_after("board", u64::MAX).unwrap();
    assert_eq!((start.hints.len(), start.last), (0, numbers[2]));
    // A hint older than the retention is gone once another is added.
    let late = at(2)
        .saturating_add(HINT_RETENTION)
        .saturating_add(Duration::from_secs(1));
    let d = ledger.add_board_hint("board", b"d", late).unwrap();
    assert!(d > numbers[2]);
    assert_eq!(
        ledger.board_hints_after("board", 0).unwrap().hints,
        [b"d".to_vec()]
    );
    assert_eq!(
        ledger.board_hints_after("other", 0).unwrap().hints,
        [b"x".to_vec()],
        "another board's hints are its own"
    );
}
