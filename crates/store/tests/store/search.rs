//! Full-text search queries built from hostile input, on SQLite and PostgreSQL: the engines
//! accept them (no parameter, expression depth or full-text query depth limit is reached).
//! Terms are at most 100 words (the service refuses longer ones: PostgreSQL's
//! `websearch_to_tsquery` runs out of stack on 20,000 excluded words).

use myelin_store::EventFilterSql;
use myelin_store::search::{SearchKey, SearchOrder, SearchQuery, SearchRoom};
use myelin_test_support::store_test;

store_test!(hostile_search_queries_run, |store| async move {
    // 99 excluded words, thousands of rooms (some left), 1,000 type patterns and senders.
    let term: String = std::iter::once("martians".to_owned())
        .chain((0..99).map(|i| format!("-word{i}")))
        .collect::<Vec<_>>()
        .join(" ");
    let rooms: Vec<SearchRoom> = (0..3_000)
        .map(|i| SearchRoom { room_id: format!("!room{i}:x"), until: (i % 2 == 0).then_some(i64::from(i)) })
        .collect();
    let filter = EventFilterSql {
        types: Some((0..1_000).map(|i| format!("t{i}.*")).collect()),
        not_types: (0..1_000).map(|i| format!("n{i}")).collect(),
        senders: Some((0..1_000).map(|i| format!("@u{i}:x")).collect()),
        not_senders: (0..1_000).map(|i| format!("@v{i}:x")).collect(),
        contains_url: None,
    };
    for order in [SearchOrder::Rank, SearchOrder::Recent] {
        let query = SearchQuery { term: &term, keys: &SearchKey::ALL, rooms: &rooms, filter: &filter, order };
        assert!(store.search_events(&query, None, 10).await.unwrap().is_empty());
        assert_eq!(store.count_search_matches(&query).await.unwrap(), 0);
    }
});
