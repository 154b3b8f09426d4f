-- The admin room list's search (`search_term`: a room's name or canonical alias containing
-- the term) through a trigram index instead of a scan of every room. `room_stats_search`
-- holds each room's name and alias, tokenized into trigrams; its rowid is the room's number
-- in `room_stats_search_ids` (an INTEGER PRIMARY KEY, which VACUUM keeps, unlike the implicit
-- rowid of `room_stats`). The triggers keep both tables with `room_stats` in the same
-- statement as its writes. The index only narrows the rooms down: the list still checks the
-- search's own conditions on every room it finds. (PostgreSQL has no such migration: a
-- `pg_trgm` index, measured on 10,000 rooms with look-alike names, took 1.4 ms against a 3 ms
-- scan, its planner kept the scan, and it would be written on every member count change.)
CREATE TABLE room_stats_search_ids (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE room_stats_search USING fts5(name, canonical_alias, tokenize = 'trigram');
-- Merge the index's segments as soon as two of a level exist (the default waits for four): a
-- search reads every segment, and rooms named one by one leave many (measured on 10,000: a
-- search 1.1 ms with the default, 0.19 ms with this, as after a full merge).
INSERT INTO room_stats_search (room_stats_search, rank) VALUES ('automerge', 2);

CREATE TRIGGER room_stats_search_insert AFTER INSERT ON room_stats BEGIN
    INSERT INTO room_stats_search_ids (room_id) VALUES (new.room_id);
    INSERT INTO room_stats_search (rowid, name, canonical_alias)
    SELECT id, new.name, new.canonical_alias FROM room_stats_search_ids WHERE room_id = new.room_id;
END;

CREATE TRIGGER room_stats_search_update AFTER UPDATE OF name, canonical_alias ON room_stats
WHEN old.name IS NOT new.name OR old.canonical_alias IS NOT new.canonical_alias BEGIN
    UPDATE room_stats_search SET name = new.name, canonical_alias = new.canonical_alias
    WHERE rowid = (SELECT id FROM room_stats_search_ids WHERE room_id = new.room_id);
END;

CREATE TRIGGER room_stats_search_delete AFTER DELETE ON room_stats BEGIN
    DELETE FROM room_stats_search WHERE rowid = (SELECT id FROM room_stats_search_ids WHERE room_id = old.room_id);
    DELETE FROM room_stats_search_ids WHERE room_id = old.room_id;
END;

INSERT INTO room_stats_search_ids (room_id) SELECT room_id FROM room_stats ORDER BY room_id;
INSERT INTO room_stats_search (rowid, name, canonical_alias)
SELECT i.id, s.name, s.canonical_alias FROM room_stats_search_ids i JOIN room_stats s ON s.room_id = i.room_id;
