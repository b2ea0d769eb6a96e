//! The channels of a [`crate::MediaServer`]: member lists in a slab (a member refers to its
//! channel by index, so forwarding does no string hashing), found by `app_id/channel` on join.

use std::collections::HashMap;

use crate::endpoint::{Endpoint, MemberKey};

#[derive(Debug)]
struct Channel {
    key: String,
    members: Vec<Endpoint>,
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    slots: Vec<Option<Channel>>,
    free: Vec<usize>,
    /// `app_id/channel` ('/' appears in neither) -> slot.
    by_key: HashMap<String, usize>,
}

impl Channels {
    /// Channels with at least one member.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn find(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The members of channel `i` (empty for a free slot).
    pub(crate) fn members(&self, i: usize) -> &[Endpoint] {
        match self.slots.get(i) {
            Some(Some(c)) => &c.members,
            _ => &[],
        }
    }

    pub(crate) fn members_mut(&mut self, i: usize) -> Option<&mut Vec<Endpoint>> {
        self.slots
            .get_mut(i)
            .and_then(Option::as_mut)
            .map(|c| &mut c.members)
    }

    /// Adds `r` to the channel named `key`, making the channel if missing: `(slot, members)`.
    pub(crate) fn join(&mut self, key: &str, r: Endpoint) -> (usize, usize) {
        let slot = match self.by_key.get(key) {
            Some(&i) => i,
            None => {
                let channel = Some(Channel {
                    key: key.to_owned(),
                    members: Vec::new(),
                });
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = channel;
                        i
                    }
                    None => {
                        self.slots.push(channel);
                        self.slots.len() - 1
                    }
                };
                self.by_key.insert(key.to_owned(), i);
                i
            }
        };
        let members = self.members_mut(slot).expect("found or made above");
        members.push(r);
        (slot, members.len())
    }

    /// Takes `member` out of channel `i`; the channel goes when it is empty.
    pub(crate) fn leave(&mut self, i: usize, member: MemberKey) {
        let Some(c) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if let Some(pos) = c.members.iter().position(|r| r.key() == member) {
            c.members.swap_remove(pos);
        }
        if c.members.is_empty() {
            self.by_key.remove(&c.key);
            self.slots[i] = None;
            self.free.push(i);
        }
    }
}
