//! The allocation counts every shard of a process shares: the total cap and the
//! per-credential quota (486), locked on Allocate and on deletion only.

use super::*;

/// Counts allocations across every shard of a process: the total cap and the per-credential
/// quota must hold for the whole relay, not per event loop. Called only on Allocate and on
/// allocation deletion, never per packet.
pub trait AllocationLedger: Send + Sync + std::fmt::Debug {
    /// Takes one allocation for `user`. `Err(())` when the user's quota or the total cap is
    /// reached (answered with 486).
    fn try_acquire(&self, user: &str) -> Result<(), QuotaExceeded>;
    /// Gives back one allocation of `user`, when one of its allocations ends.
    fn release(&self, user: &str);
    /// New limits (a configuration reload). Allocations already held stay, even above them;
    /// new ones are refused until the counts are back under.
    fn set_limits(&self, per_user_max: usize, total_max: usize);
}

/// Which limit refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The credential already holds its per-user maximum of allocations.
    User,
    /// The relay already holds its total maximum of allocations.
    Total,
}

/// An in-process [`AllocationLedger`].
#[derive(Debug)]
pub struct LocalLedger {
    per_user_max: AtomicUsize,
    total_max: AtomicUsize,
    total: AtomicUsize,
    // A std Mutex: held only for a map update, never across an await, and only on Allocate
    // and allocation deletion.
    users: Mutex<HashMap<String, usize>>,
}

impl LocalLedger {
    /// A ledger with no allocations and these limits: per credential and for the whole process.
    pub fn new(per_user_max: usize, total_max: usize) -> Self {
        Self {
            per_user_max: AtomicUsize::new(per_user_max),
            total_max: AtomicUsize::new(total_max),
            total: AtomicUsize::new(0),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Allocations held now, across every shard.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl AllocationLedger for LocalLedger {
    fn try_acquire(&self, user: &str) -> Result<(), QuotaExceeded> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.total_max.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::Total);
        }
        let n = users.entry(user.to_owned()).or_insert(0);
        if *n >= self.per_user_max.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::User);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn set_limits(&self, per_user_max: usize, total_max: usize) {
        // Under the map's lock, so no Allocate sees one new limit and one old.
        let _users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        self.per_user_max.store(per_user_max, Ordering::Relaxed);
        self.total_max.store(total_max, Ordering::Relaxed);
    }
}

/// What the servers of one process share: the allocation counts and the relay port range.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The allocation counts (quota and total cap) the shards check on Allocate.
    pub ledger: Arc<dyn AllocationLedger>,
    /// The relay port range the shards draw relayed ports from.
    pub ports: Arc<RelayPorts>,
}

impl Shared {
    /// Shares built from a config: its limits and its relay port range.
    pub fn from_config(config: &ServerConfig, rng: &mut impl rand::RngCore) -> Self {
        Self {
            ledger: Arc::new(LocalLedger::new(
                config.max_allocations_per_user,
                config.max_allocations,
            )),
            ports: Arc::new(RelayPorts::new(config.relay_ports.clone(), rng)),
        }
    }
}
