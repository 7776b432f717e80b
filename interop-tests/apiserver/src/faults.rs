//! Fault-injection state shared by the accept loop, request handlers and watches.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::resources::Resource;

/// How long a fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Window {
    #[default]
    Off,
    Until(Instant),
    Forever,
}

impl Window {
    /// `Some(d)`: for `d` from now; `None`: until cleared.
    pub(crate) fn from_duration(duration: Option<Duration>) -> Self {
        match duration {
            Some(d) => Self::Until(Instant::now() + d),
            None => Self::Forever,
        }
    }

    fn active(self) -> bool {
        match self {
            Self::Off => false,
            Self::Until(t) => Instant::now() < t,
            Self::Forever => true,
        }
    }
}

/// The three timed faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultState {
    /// The listener is closed (connections are refused) while active.
    pub(crate) refuse: Window,
    /// Every request is answered with 500 while active.
    pub(crate) fail: Window,
    /// Requests are held unanswered, and watches deliver nothing, while active.
    pub(crate) stall: Window,
}

/// Which fault a caller asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Refuse,
    Fail,
    Stall,
}

impl FaultState {
    fn window(&self, fault: Fault) -> Window {
        match fault {
            Fault::Refuse => self.refuse,
            Fault::Fail => self.fail,
            Fault::Stall => self.stall,
        }
    }
}

/// An order to stall the watches open when it is given: of one resource, or of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StallWatches {
    /// `None`: every resource.
    pub(crate) resource: Option<Resource>,
}

impl StallWatches {
    pub(crate) fn applies_to(self, resource: Resource) -> bool {
        self.resource.is_none_or(|r| r == resource)
    }
}

/// Fault state plus the connection epoch (bumped to drop every open connection) and the
/// last order to stall open watches.
#[derive(Debug)]
pub(crate) struct Faults {
    state: watch::Sender<FaultState>,
    conn_epoch: watch::Sender<u64>,
    stall_watches: watch::Sender<StallWatches>,
}

impl Faults {
    pub(crate) fn new() -> Self {
        Self {
            state: watch::channel(FaultState::default()).0,
            conn_epoch: watch::channel(0).0,
            stall_watches: watch::channel(StallWatches::default()).0,
        }
    }

    pub(crate) fn set(&self, fault: Fault, window: Window) {
        self.state.send_modify(|s| match fault {
            Fault::Refuse => s.refuse = window,
            Fault::Fail => s.fail = window,
            Fault::Stall => s.stall = window,
        });
    }

    pub(crate) fn clear(&self) {
        self.state.send_replace(FaultState::default());
    }

    pub(crate) fn active(&self, fault: Fault) -> bool {
        self.state.borrow().window(fault).active()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<FaultState> {
        self.state.subscribe()
    }

    /// Resolves once `fault` is no longer active (its deadline passed or it was cleared).
    pub(crate) async fn over(&self, fault: Fault) {
        let mut rx = self.state.subscribe();
        loop {
            let window = rx.borrow_and_update().window(fault);
            match window {
                Window::Off => return,
                Window::Until(deadline) if Instant::now() >= deadline => return,
                Window::Until(deadline) => {
                    tokio::select! {
                        () = sleep_until(deadline) => {}
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
                Window::Forever => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Drops every open connection (each connection task watches this).
    pub(crate) fn drop_connections(&self) {
        self.conn_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub(crate) fn connection_epoch(&self) -> watch::Receiver<u64> {
        self.conn_epoch.subscribe()
    }

    /// Stalls every watch open now (of `resource`, or of all): see
    /// [`ApiServerHandle::stall_open_watches`](crate::ApiServerHandle::stall_open_watches).
    pub(crate) fn stall_open_watches(&self, resource: Option<Resource>) {
        // `send_replace` notifies even an order equal to the last: each order counts.
        self.stall_watches.send_replace(StallWatches { resource });
    }

    /// Orders to stall watches given from now on (a watch subscribes when it starts, so
    /// earlier orders do not reach it).
    pub(crate) fn stall_orders(&self) -> watch::Receiver<StallWatches> {
        self.stall_watches.subscribe()
    }
}
