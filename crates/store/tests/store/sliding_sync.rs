//! Sliding sync positions on SQLite and PostgreSQL: a connection keeps the position a request
//! came with and the one it answered; the positions their stored forms build on are held (read
//! back, never accepted as a request's position) while a kept one builds on them, and go after.

use myelin_store::{NewSlidingSyncPosition, SlidingSyncConnection, Store};
use myelin_test_support::store_test;

use crate::ALICE;

const MAIN: SlidingSyncConnection<'static> =
    SlidingSyncConnection { user_id: ALICE, device_id: "DEVICE", conn_id: "main" };

async fn save(store: &Store, kept: Option<i64>, kept_builds_on: &[i64], pos: i64, builds_on: &[i64]) -> bool {
    let state = format!("state {pos}");
    let new = NewSlidingSyncPosition { kept, kept_builds_on, pos, builds_on, state: &state };
    store.save_sliding_sync_position(MAIN, new, 1_000 + pos, 10).await.unwrap()
}

/// Per position of `positions`: whether it is kept, and whether its stored form is still held.
async fn standing(store: &Store, positions: &[i64]) -> Vec<(bool, bool)> {
    let mut out = Vec::new();
    for &pos in positions {
        let kept = store.sliding_sync_position_kept(MAIN, pos).await.unwrap();
        let read = store.sliding_sync_position(MAIN, pos).await.unwrap();
        assert_eq!(kept, read.is_some(), "position {pos}: kept and readable as kept agree");
        let held = store.sliding_sync_position_built_on(MAIN, pos).await.unwrap();
        if let Some(held) = &held {
            assert_eq!(held, &format!("state {pos}"));
        }
        out.push((kept, held.is_some()));
    }
    out
}

store_test!(positions_built_on_are_held_but_not_kept_until_nothing_builds_on_them, |store| async move {
    let (kept, held_only, gone) = ((true, true), (false, true), (false, false));
    assert!(save(&store, None, &[], 1, &[]).await, "a fresh start, whole");
    assert!(save(&store, Some(1), &[], 2, &[1]).await, "built on 1");
    assert_eq!(standing(&store, &[1, 2]).await, [kept, kept]);
    assert!(save(&store, Some(2), &[1], 3, &[1, 2]).await, "built on 2 (and so on 1)");
    assert_eq!(standing(&store, &[1, 2, 3]).await, [held_only, kept, kept]);
    // Stored whole from 3: what 3 builds on is still held, as 3 is kept.
    assert!(save(&store, Some(3), &[1, 2], 4, &[]).await);
    assert_eq!(standing(&store, &[1, 2, 3, 4]).await, [held_only, held_only, kept, kept]);
    // Built on 4 from 4: nothing builds on 1, 2 or 3 any more.
    assert!(save(&store, Some(4), &[], 5, &[4]).await);
    assert_eq!(standing(&store, &[1, 2, 3, 4, 5]).await, [gone, gone, gone, kept, kept]);
    // A request retried from 4 again: 5 goes, as a position answered before always did.
    assert!(save(&store, Some(4), &[], 6, &[4]).await);
    assert_eq!(standing(&store, &[4, 5, 6]).await, [kept, gone, kept]);
    // A position built on one no longer stored is not written, and nothing changes.
    assert!(!save(&store, Some(6), &[4], 7, &[4, 5]).await);
    assert_eq!(standing(&store, &[4, 6, 7]).await, [kept, kept, gone]);
    // A fresh start forgets them all.
    assert!(save(&store, None, &[], 8, &[]).await);
    assert_eq!(standing(&store, &[4, 6, 8]).await, [gone, gone, kept]);
});

store_test!(a_device_keeps_its_most_recently_used_connections, |store| async move {
    let on = |conn_id| SlidingSyncConnection { conn_id, ..MAIN };
    let save = async |conn_id, kept: Option<i64>, pos: i64| {
        let new = NewSlidingSyncPosition { kept, kept_builds_on: &[], pos, builds_on: &[], state: "s" };
        assert!(store.save_sliding_sync_position(on(conn_id), new, pos, 2).await.unwrap());
    };
    let kept = async |conn_id, pos| store.sliding_sync_position_kept(on(conn_id), pos).await.unwrap();
    save("a", None, 10).await;
    save("b", None, 20).await;
    // A third connection: the least recently used one goes.
    save("c", None, 30).await;
    assert!(!kept("a", 10).await && kept("b", 20).await && kept("c", 30).await);
    // Used again, `b` is no longer the least recently used when a fourth starts.
    save("b", Some(20), 40).await;
    save("d", None, 50).await;
    assert!(kept("b", 40).await && !kept("c", 30).await && kept("d", 50).await);
});
