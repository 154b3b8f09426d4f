//! The durable outbound federation queue: PDUs and EDUs per destination, the transaction each
//! is in flight in, the destinations' backoff, and the lease that names the one process
//! sending to a destination.

use crate::{Store, StoreError, Tx, Value, params};

/// A PDU to queue for a destination, in the transaction that persists the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedPdu {
    pub destination: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

/// One transaction's worth of queued rows for a destination.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundBatch {
    pub txn_id: String,
    /// Event IDs, in stream order.
    pub pdus: Vec<String>,
    /// `(type, content JSON)`, in queueing order.
    pub edus: Vec<(String, String)>,
}

/// A destination's backoff, as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationRecord {
    pub destination: String,
    pub retry_last_ts: i64,
    pub retry_interval: i64,
    /// When the current run of failures began; `None` while the destination is up.
    pub failure_ts: Option<i64>,
    pub last_success_ts: Option<i64>,
}

/// Queues PDUs inside a transaction (the event's persisting one). A row already queued stays.
pub(crate) async fn queue_pdus_tx(tx: &mut Tx<'_>, pdus: &[QueuedPdu]) -> Result<(), StoreError> {
    for chunk in pdus.chunks(200) {
        let rows: Vec<String> =
            (0..chunk.len()).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
        let sql = format!(
            "INSERT INTO federation_outbox_pdus (destination, event_id, stream_ordering) VALUES {}
             ON CONFLICT (destination, event_id) DO NOTHING",
            rows.join(", ")
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|p| {
                [
                    Value::from(p.destination.as_str()),
                    Value::from(p.event_id.as_str()),
                    Value::from(p.stream_ordering),
                ]
            })
            .collect();
        tx.execute(&sql, params).await?;
    }
    Ok(())
}

fn destination_record(row: &crate::Row) -> Result<DestinationRecord, StoreError> {
    Ok(DestinationRecord {
        destination: row.string(0)?,
        retry_last_ts: row.i64(1)?,
        retry_interval: row.i64(2)?,
        failure_ts: row.opt_i64(3)?,
        last_success_ts: row.opt_i64(4)?,
    })
}

const DESTINATION_COLUMNS: &str = "destination, retry_last_ts, retry_interval, failure_ts, last_success_ts";

impl Store {
    /// Queues PDUs in a transaction of their own (events persisted before they were queued,
    /// e.g. by a caller outside the write path).
    pub async fn queue_pdus(&self, pdus: &[QueuedPdu]) -> Result<(), StoreError> {
        if pdus.is_empty() {
            return Ok(());
        }
        self.db.transaction(async |tx| queue_pdus_tx(tx, pdus).await).await
    }

    /// Queues an EDU. With a `key`, it replaces the queued EDU of the same destination, type
    /// and key that is not in flight yet.
    pub async fn queue_edu(
        &self,
        destination: &str,
        edu_type: &str,
        content: &str,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                if let Some(key) = key {
                    tx.execute(
                        "DELETE FROM federation_outbox_edus
                         WHERE destination = $1 AND edu_type = $2 AND edu_key = $3 AND txn_id IS NULL",
                        params![destination, edu_type, key],
                    )
                    .await?;
                }
                tx.execute(
                    "INSERT INTO federation_outbox_edus (destination, edu_type, edu_key, content)
                     VALUES ($1, $2, $3, $4)",
                    params![destination, edu_type, key, content],
                )
                .await?;
                Ok(())
            })
            .await
    }

    /// Destinations with queued rows, each with the time it may be sent to (0: now; later
    /// while it backs off).
    pub async fn federation_destinations_with_work(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT w.destination, COALESCE(d.retry_last_ts + d.retry_interval, 0)
                 FROM (SELECT DISTINCT destination FROM federation_outbox_pdus
                       UNION SELECT DISTINCT destination FROM federation_outbox_edus) AS w
                 LEFT JOIN federation_destinations AS d ON d.destination = w.destination",
                params![],
            )
            .await?;
        rows.iter().map(|r| Ok((r.string(0)?, r.i64(1)?))).collect()
    }

    /// The next transaction for `destination`: the one in flight if a previous attempt left
    /// one (the same ID and rows), otherwise up to `max_pdus` PDUs (stream order) and
    /// `max_edus` EDUs put in flight under a new transaction ID. `None`: nothing queued.
    pub async fn next_federation_batch(
        &self,
        destination: &str,
        max_pdus: i64,
        max_edus: i64,
        now: i64,
    ) -> Result<Option<OutboundBatch>, StoreError> {
        self.db
            .transaction(async |tx| {
                let in_flight = tx
                    .query_opt(
                        "SELECT txn_id FROM federation_outbox_pdus WHERE destination = $1 AND txn_id IS NOT NULL
                         UNION SELECT txn_id FROM federation_outbox_edus WHERE destination = $1 AND txn_id IS NOT NULL
                         LIMIT 1",
                        params![destination],
                    )
                    .await?;
                if let Some(row) = in_flight {
                    let txn_id = row.string(0)?;
                    return Ok(Some(batch_rows(tx, destination, &txn_id).await?));
                }
                let pdus = tx
                    .query(
                        "SELECT event_id FROM federation_outbox_pdus WHERE destination = $1
                         ORDER BY stream_ordering LIMIT $2",
                        params![destination, max_pdus],
                    )
                    .await?;
                let edus = tx
                    .query(
                        "SELECT id FROM federation_outbox_edus WHERE destination = $1 ORDER BY id LIMIT $2",
                        params![destination, max_edus],
                    )
                    .await?;
                if pdus.is_empty() && edus.is_empty() {
                    return Ok(None);
                }
                tx.execute(
                    "INSERT INTO federation_destinations (destination, last_txn) VALUES ($1, 1)
                     ON CONFLICT (destination) DO UPDATE SET last_txn = federation_destinations.last_txn + 1",
                    params![destination],
                )
                .await?;
                let counter = tx
                    .query_opt(
                        "SELECT last_txn FROM federation_destinations WHERE destination = $1",
                        params![destination],
                    )
                    .await?
                    .map(|r| r.i64(0))
                    .transpose()?
                    .unwrap_or(1);
                // The time keeps IDs unique even if the destination's row is ever reset.
                let txn_id = format!("{now}_{counter}");
                if !pdus.is_empty() {
                    let mut params: Vec<Value> = vec![Value::from(txn_id.as_str()), Value::from(destination)];
                    for row in &pdus {
                        params.push(Value::from(row.string(0)?));
                    }
                    let sql = format!(
                        "UPDATE federation_outbox_pdus SET txn_id = $1 WHERE destination = $2 AND event_id IN ({})",
                        placeholders_after_two(params.len() - 2)
                    );
                    tx.execute(&sql, params).await?;
                }
                if !edus.is_empty() {
                    let mut params: Vec<Value> = vec![Value::from(txn_id.as_str()), Value::from(destination)];
                    for row in &edus {
                        params.push(Value::from(row.i64(0)?));
                    }
                    let sql = format!(
                        "UPDATE federation_outbox_edus SET txn_id = $1 WHERE destination = $2 AND id IN ({})",
                        placeholders_after_two(params.len() - 2)
                    );
                    tx.execute(&sql, params).await?;
                }
                Ok(Some(batch_rows(tx, destination, &txn_id).await?))
            })
            .await
    }

    /// A transaction was accepted (or dropped): its rows go, and the destination is up.
    pub async fn finish_federation_batch(
        &self,
        destination: &str,
        txn_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute(
                    "DELETE FROM federation_outbox_pdus WHERE destination = $1 AND txn_id = $2",
                    params![destination, txn_id],
                )
                .await?;
                tx.execute(
                    "DELETE FROM federation_outbox_edus WHERE destination = $1 AND txn_id = $2",
                    params![destination, txn_id],
                )
                .await?;
                tx.execute(
                    "UPDATE federation_destinations
                     SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL, last_success_ts = $2
                     WHERE destination = $1",
                    params![destination, now],
                )
                .await?;
                Ok(())
            })
            .await
    }

    /// A destination failed: it is retried after `retry_interval` ms from `now`.
    pub async fn record_destination_failure(
        &self,
        destination: &str,
        now: i64,
        retry_interval: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval, failure_ts)
                 VALUES ($1, $2, $3, $2)
                 ON CONFLICT (destination) DO UPDATE SET retry_last_ts = $2, retry_interval = $3,
                     failure_ts = COALESCE(federation_destinations.failure_ts, $2)",
                params![destination, now, retry_interval],
            )
            .await?;
        Ok(())
    }

    /// One destination's backoff, if it was ever sent to.
    pub async fn federation_destination(
        &self,
        destination: &str,
    ) -> Result<Option<DestinationRecord>, StoreError> {
        let sql = format!("SELECT {DESTINATION_COLUMNS} FROM federation_destinations WHERE destination = $1");
        let row = self.db.query_opt(&sql, params![destination]).await?;
        row.as_ref().map(destination_record).transpose()
    }

    /// Every destination ever sent to, by name.
    pub async fn federation_destinations(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        let sql = format!("SELECT {DESTINATION_COLUMNS} FROM federation_destinations ORDER BY destination");
        let rows = self.db.query(&sql, params![]).await?;
        rows.iter().map(destination_record).collect()
    }

    /// How many PDUs and EDUs are queued for a destination.
    pub async fn federation_queue_len(&self, destination: &str) -> Result<(i64, i64), StoreError> {
        let pdus = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM federation_outbox_pdus WHERE destination = $1",
                params![destination],
            )
            .await?;
        let edus = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM federation_outbox_edus WHERE destination = $1",
                params![destination],
            )
            .await?;
        let count =
            |row: Option<crate::Row>| row.map(|r| r.i64(0)).transpose().map(Option::unwrap_or_default);
        Ok((count(pdus)?, count(edus)?))
    }

    /// Takes or renews the sending lease of `destination` for `holder` until `expires_ts`.
    /// Returns whether `holder` holds it now (another holder's lease that has not expired
    /// by `now` is kept).
    pub async fn acquire_sender_lease(
        &self,
        destination: &str,
        holder: &str,
        now: i64,
        expires_ts: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "INSERT INTO federation_sender_leases (destination, holder, expires_ts) VALUES ($1, $2, $4)
                 ON CONFLICT (destination) DO UPDATE SET holder = $2, expires_ts = $4
                 WHERE federation_sender_leases.holder = $2 OR federation_sender_leases.expires_ts < $3",
                params![destination, holder, now, expires_ts],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Gives the lease up (if `holder` still holds it).
    pub async fn release_sender_lease(&self, destination: &str, holder: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "DELETE FROM federation_sender_leases WHERE destination = $1 AND holder = $2",
                params![destination, holder],
            )
            .await?;
        Ok(())
    }
}

/// `$3, $4, ...`: `n` placeholders after two leading parameters.
fn placeholders_after_two(n: usize) -> String {
    (3..3 + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The rows in flight in `txn_id`.
async fn batch_rows(tx: &mut Tx<'_>, destination: &str, txn_id: &str) -> Result<OutboundBatch, StoreError> {
    let pdus = tx
        .query(
            "SELECT event_id FROM federation_outbox_pdus WHERE destination = $1 AND txn_id = $2
             ORDER BY stream_ordering",
            params![destination, txn_id],
        )
        .await?;
    let edus = tx
        .query(
            "SELECT edu_type, content FROM federation_outbox_edus WHERE destination = $1 AND txn_id = $2
             ORDER BY id",
            params![destination, txn_id],
        )
        .await?;
    Ok(OutboundBatch {
        txn_id: txn_id.to_owned(),
        pdus: pdus.iter().map(|r| r.string(0)).collect::<Result<_, _>>()?,
        edus: edus.iter().map(|r| Ok((r.string(0)?, r.string(1)?))).collect::<Result<_, StoreError>>()?,
    })
}
