//! Push notifications: push rules, the push actions every new event produces, unread counts,
//! `/notifications`, pushers and delivery to push gateways.
//!
//! # Layout
//!
//! - [`rules`]: each user's [`Ruleset`] (ruma's, starting from the spec's server-default rules)
//!   is stored as JSON, cached in [`Push`] and mirrored into the `m.push_rules` account data
//!   when it changes. The `/pushrules` endpoints edit it with ruma's `insert` / `remove` /
//!   `set_enabled` / `set_actions`.
//! - [`evaluation`]: [`Services::record_push_actions`] runs after every committed batch of events.
//!   For each event it builds the room context once (joined member count, local members'
//!   display names, the sender's power level, cached per room until a state event arrives) and
//!   runs each local member's rules with ruma's evaluator. Actions that `notify` are stored per
//!   (user, event, thread) in one transaction, which also queues a delivery per pusher. An
//!   event whose evaluation fails is stored without push actions (Synapse instead fails the
//!   persist: its evaluator raises before the write); the failure is logged at warn with the
//!   room and event and counted in `myelin_push_evaluation_failures`.
//! - [`counts`]: unread counts: push actions after the read receipt that covers them (an unthreaded
//!   receipt covers every thread, a threaded one its own thread), per room and per thread, for
//!   `/sync`; and `/notifications`.
//! - [`pushers`]: `/pushers`, `/pushers/set` (HTTP pushers; gateway URLs on blocked IP ranges
//!   are refused, see `ip_range_blacklist`), and delivery: a worker draining the durable queue
//!   with exponential backoff per pusher. Pending rows survive restarts and are retried at
//!   start-up. A gateway that rejects a pushkey loses that pusher. Requests never follow
//!   redirects and connect only to addresses outside the blocked ranges.

use std::num::NonZeroUsize;
use std::sync::Arc;

use parking_lot::Mutex;

use ruma::push::Ruleset;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

pub mod counts;
pub mod evaluation;
pub mod pushers;
pub mod rules;

pub use counts::{Notification, NotificationsPage, UnreadCounts};
pub use pushers::PusherRequest;
pub use rules::{parse_rule_kind, push_rules_content};

use evaluation::RoomPushContext;

/// How many users' rule sets are cached.
const RULES_CACHE_SIZE: NonZeroUsize = NonZeroUsize::MIN.saturating_add(50_000 - 1);
/// How many rooms' evaluation contexts are cached.
const ROOMS_CACHE_SIZE: NonZeroUsize = NonZeroUsize::MIN.saturating_add(2_000 - 1);

/// The thread ID of events outside threads.
const MAIN_THREAD: &str = "main";

/// The in-memory parts of push: caches and the delivery worker's wake-up.
pub struct Push {
    rules: Mutex<RulesCache>,
    /// Per room, what evaluation needs from the room's state.
    rooms: Mutex<lru::LruCache<OwnedRoomId, Arc<RoomPushContext>>>,
    /// Serialises rule set changes (read, change, write).
    rules_write: tokio::sync::Mutex<()>,
    /// Wakes the delivery worker when pushes are queued.
    pub(crate) wakeup: tokio::sync::Notify,
}

/// Rule sets by user; `None` means the server-default rules (nothing stored). `generation`
/// counts writes, so that a rule set read from the store before a write is not cached after it.
struct RulesCache {
    entries: lru::LruCache<OwnedUserId, Option<Arc<Ruleset>>>,
    generation: u64,
}

impl Default for Push {
    fn default() -> Self {
        Push {
            rules: Mutex::new(RulesCache { entries: lru::LruCache::new(RULES_CACHE_SIZE), generation: 0 }),
            rooms: Mutex::new(lru::LruCache::new(ROOMS_CACHE_SIZE)),
            rules_write: tokio::sync::Mutex::new(()),
            wakeup: tokio::sync::Notify::new(),
        }
    }
}

impl Push {
    /// A cached rule set, or the cache generation to pass to [`Push::cache_read_rules`].
    fn cached_rules(&self, user_id: &UserId) -> Result<Option<Arc<Ruleset>>, u64> {
        let mut cache = self.rules.lock();
        let generation = cache.generation;
        cache.entries.get(user_id).cloned().ok_or(generation)
    }

    /// Caches a rule set read from the store, unless a write happened since `generation`.
    fn cache_read_rules(&self, user_id: &UserId, rules: Option<Arc<Ruleset>>, generation: u64) {
        let mut cache = self.rules.lock();
        if cache.generation == generation {
            cache.entries.put(user_id.to_owned(), rules);
        }
    }

    /// Caches a rule set just written to the store.
    fn cache_written_rules(&self, user_id: &UserId, rules: Arc<Ruleset>) {
        let mut cache = self.rules.lock();
        cache.generation += 1;
        cache.entries.put(user_id.to_owned(), Some(rules));
    }

    fn cached_room(&self, room_id: &RoomId) -> Option<Arc<RoomPushContext>> {
        self.rooms.lock().get(room_id).cloned()
    }

    fn cache_room(&self, room_id: &RoomId, context: Arc<RoomPushContext>) {
        self.rooms.lock().put(room_id.to_owned(), context);
    }

    fn forget_room(&self, room_id: &RoomId) {
        self.rooms.lock().pop(room_id);
    }
}
