//! The in-process broker: publishing is a direct call into this node's hub.

use std::sync::{OnceLock, Weak};

use async_trait::async_trait;

use super::{Broker, BrokerError, Control, Deliver, RoomEvent};
use crate::store::StoredMessage;

/// In-process [`Broker`] for a single node.
#[derive(Default)]
pub struct LocalBroker {
    receiver: OnceLock<Weak<dyn Deliver>>,
}

#[async_trait]
impl Broker for LocalBroker {
    fn register(&self, receiver: Weak<dyn Deliver>) {
        // A second registration is a programming error; the first receiver stays.
        let _ = self.receiver.set(receiver);
    }

    async fn publish(&self, room: &str, event: RoomEvent) -> Result<(), BrokerError> {
        let receiver = self
            .receiver
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::NoReceiver)?;
        receiver.deliver(room, event);
        Ok(())
    }

    async fn publish_control(&self, control: Control) -> Result<(), BrokerError> {
        let receiver = self
            .receiver
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::NoReceiver)?;
        receiver.deliver_control(&control);
        Ok(())
    }

    async fn publish_messages(&self, messages: &[StoredMessage]) -> Result<(), BrokerError> {
        let receiver = self
            .receiver
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::NoReceiver)?;
        receiver.deliver_messages(messages).await;
        Ok(())
    }
}
