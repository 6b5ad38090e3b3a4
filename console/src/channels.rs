//! The channels of the topology and the services at each end: the one
//! table the system map draws its edges from and the journey reads who
//! should publish and consume each message from.

use contracts::Topology;
use dead_letters::Broker;

/// One channel to one consumer (a topic read by three services is three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The queue or topic, with the topology's namespace.
    pub name: String,
    pub broker: Broker,
    pub kind: &'static str,
    /// The services that publish on it.
    pub from: &'static [&'static str],
    pub to: &'static str,
}

pub fn of(topology: &Topology) -> Vec<Channel> {
    let queue = |name: String, kind, from, to| Channel { name, broker: Broker::Rabbitmq, kind, from, to };
    let mut all = vec![
        queue(topology.stock_commands(), "command", &["order"], "stock"),
        queue(topology.payment_commands(), "command", &["order"], "payment"),
        queue(topology.order_replies(), "reply", &["stock", "payment"], "order"),
    ];
    for (service, topics) in topology.subscriptions() {
        for topic in topics {
            let from: &'static [&'static str] =
                if topic == topology.shipments_topic() { &["shipping"] } else { &["order"] };
            all.push(Channel { name: topic, broker: Broker::Kafka, kind: "event", from, to: service });
        }
    }
    all
}

/// The services that consume what is published on `channel`.
pub fn consumers_of(channels: &[Channel], channel: &str) -> Vec<String> {
    channels.iter().filter(|c| c.name == channel).map(|c| c.to.to_owned()).collect()
}

/// The service that publishes `message_type` on `channel`: the channel's
/// one producer, or, where several share it (the replies), the one the
/// type is named after (`stock.StockReserved`).
pub fn producer_of(channels: &[Channel], channel: &str, message_type: &str) -> Option<String> {
    let from = channels.iter().find(|c| c.name == channel)?.from;
    match from {
        [only] => Some((*only).to_owned()),
        several => {
            let sender = message_type.split_once('.').map(|(prefix, _)| prefix)?;
            several.iter().find(|s| **s == sender).map(|s| (*s).to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscription_and_queue_is_a_channel_with_its_producers() {
        let channels = of(&Topology::new("t."));
        let ids: Vec<String> = channels.iter().map(|c| format!("{}:{}", c.name, c.to)).collect();
        assert_eq!(
            ids,
            [
                "t.stock.commands:stock",
                "t.payment.commands:payment",
                "t.order.replies:order",
                "t.shipments:order",
                "t.orders:shipping",
                "t.orders:email",
                "t.shipments:email",
                "t.orders:loyalty"
            ]
        );
        assert_eq!(consumers_of(&channels, "t.orders"), ["shipping", "email", "loyalty"]);
        assert_eq!(producer_of(&channels, "t.order.replies", "payment.PaymentSucceeded").as_deref(), Some("payment"));
        assert_eq!(producer_of(&channels, "t.shipments", "shipments.ShipmentScheduled").as_deref(), Some("shipping"));
        assert_eq!(producer_of(&channels, "t.nowhere", "x.Y"), None);
    }
}
