//! Inbound federation transactions already processed (`PUT /send/{txnId}`), with their answer.

use crate::{Store, StoreError, params};

impl Store {
    /// The answer given to a transaction already processed, if it was.
    pub async fn inbound_transaction_response(
        &self,
        origin: &str,
        txn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT response FROM federation_inbound_transactions WHERE origin = $1 AND txn_id = $2",
                params![origin, txn_id],
            )
            .await?;
        row.map(|r| r.string(0)).transpose()
    }

    /// Records the answer to a processed transaction (a second record of it changes nothing).
    pub async fn record_inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO federation_inbound_transactions (origin, txn_id, response, received_ts)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                params![origin, txn_id, response, crate::now_ms()],
            )
            .await?;
        Ok(())
    }
}

impl Store {
    /// Forgets the answers to transactions received before `before_ts` (Synapse keeps a day's:
    /// a server retrying a transaction does so within minutes). Returns how many went.
    pub async fn prune_inbound_transactions(&self, before_ts: i64) -> Result<u64, StoreError> {
        self.db
            .execute("DELETE FROM federation_inbound_transactions WHERE received_ts < $1", params![before_ts])
            .await
    }
}
