//! A bounded record of reconciles (object, start, end), served at
//! `/debug/reconciles` so a test can prove that no object was reconciled
//! by two instances at once.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

const KEPT: usize = 200_000;

#[derive(Clone, Debug, Serialize)]
pub struct Reconcile {
    pub object: String,
    /// Unix time in microseconds.
    pub start: u128,
    pub end: u128,
}

#[derive(Default)]
pub struct ReconcileLog {
    entries: Mutex<VecDeque<Reconcile>>,
}

pub fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

impl ReconcileLog {
    pub fn record(&self, object: &str, start: u128, end: u128) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == KEPT {
            entries.pop_front();
        }
        entries.push_back(Reconcile {
            object: object.to_string(),
            start,
            end,
        });
    }

    pub fn snapshot(&self) -> Vec<Reconcile> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
