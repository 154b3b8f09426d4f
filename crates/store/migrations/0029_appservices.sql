-- Application services' transaction queue, as Synapse's `application_services_state` /
-- `application_services_txns`: per appservice, the room-event stream position handed over to
-- transactions so far and the last transaction ID used; each transaction made and not yet
-- acknowledged, with its event IDs (in stream order) and ephemeral events (JSON arrays). A
-- retry, in this process or after a restart, sends the same transaction under the same ID.
CREATE TABLE appservice_state (
    appservice_id TEXT PRIMARY KEY,
    stream_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL
);

CREATE TABLE appservice_txns (
    appservice_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    event_ids TEXT NOT NULL,
    ephemeral TEXT NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);
