//! Fills an existing room with messages through the service layer's bulk write path, for the
//! scale benchmark (`bench/scale.sh`): a million events over HTTP would take most of an hour,
//! this writes them through the same persistence code in batches. The server must be stopped
//! while it runs (it opens the database as the only writer).
//!
//!   seed_room CONFIG ROOM_ID SENDER COUNT
//!
//! Prints one JSON object: the rate, and the IDs of the first, middle and last events.

use std::time::Instant;

use myelin_service::Services;
use myelin_service::rooms::EventDraft;
use ruma::{RoomId, UserId};
use serde_json::json;

const BATCH: usize = 500;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, room_id, sender, count] = &args[..] else {
        anyhow::bail!("usage: seed_room CONFIG ROOM_ID SENDER COUNT");
    };
    let count: usize = count.parse()?;
    let room_id = <&RoomId>::try_from(room_id.as_str())?.to_owned();
    let sender = <&UserId>::try_from(sender.as_str())?.to_owned();
    let loaded = myelin_config::load(&[config.into()])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let services = Services::build(loaded.config).await?;
        let started = Instant::now();
        let (mut first, mut middle, mut last) = (String::new(), String::new(), String::new());
        let mut sent = 0;
        while sent < count {
            let n = BATCH.min(count - sent);
            let drafts = (sent..sent + n)
                .map(|i| {
                    EventDraft::message(
                        "m.room.message",
                        json!({"msgtype": "m.text", "body": format!("scale message {i}: the quick brown fox jumps over the lazy dog")}),
                    )
                })
                .collect();
            let pdus = services.send_events_in_one_commit(&room_id, &sender, drafts).await?;
            for (offset, pdu) in pdus.iter().enumerate() {
                let i = sent + offset;
                if i == 0 {
                    first = pdu.event_id.to_string();
                }
                if i == count / 2 {
                    middle = pdu.event_id.to_string();
                }
                if i + 1 == count {
                    last = pdu.event_id.to_string();
                }
            }
            sent += n;
            if sent % 100_000 == 0 {
                eprintln!("seeded {sent} events ({:.0}/s)", sent as f64 / started.elapsed().as_secs_f64());
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let report = json!({
            "events": count,
            "seconds": (seconds * 10.0).round() / 10.0,
            "events_per_s": (count as f64 / seconds).round(),
            "first_event": first,
            "middle_event": middle,
            "last_event": last,
        });
        println!("{report}");
        anyhow::Ok(())
    })
}
