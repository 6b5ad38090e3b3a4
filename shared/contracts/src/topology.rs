//! Names of every queue, topic and consumer group, under an optional namespace
//! prefix so that tests running side by side on one broker never share a queue.

/// Kafka partitions per event topic: several, so orders spread, while the
/// order-id key keeps each order's events on one partition, in order.
pub const EVENT_TOPIC_PARTITIONS: i32 = 4;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
}

impl Topology {
    /// `namespace` is prepended verbatim (e.g. `t42.`); empty in production.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn name(&self, base: &str) -> String {
        format!("{}{}", self.namespace, base)
    }

    /// Command queue of the stock service.
    pub fn stock_commands(&self) -> String {
        self.name("stock.commands")
    }

    /// Command queue of the payment service.
    pub fn payment_commands(&self) -> String {
        self.name("payment.commands")
    }

    /// Return address for replies to the order service's commands.
    pub fn order_replies(&self) -> String {
        self.name("order.replies")
    }

    /// The queues a command may name as its return address.
    pub fn reply_queues(&self) -> Vec<String> {
        vec![self.order_replies()]
    }

    /// Every RabbitMQ queue that receives commands or replies.
    pub fn command_queues(&self) -> Vec<String> {
        vec![self.stock_commands(), self.payment_commands(), self.order_replies()]
    }

    /// Events of the order aggregate.
    pub fn orders_topic(&self) -> String {
        self.name("orders")
    }

    /// Events of shipments, keyed by order id.
    pub fn shipments_topic(&self) -> String {
        self.name("shipments")
    }

    pub fn event_topics(&self) -> Vec<String> {
        vec![self.orders_topic(), self.shipments_topic()]
    }

    /// Consumer group of a subscribing service.
    pub fn consumer_group(&self, service: &str) -> String {
        self.name(service)
    }

    /// Dead-letter queue of a command queue.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// Dead-letter topic of one consumer group on one topic.
    pub fn dead_letter_topic(topic: &str, group: &str) -> String {
        format!("{topic}.{group}.dlq")
    }

    /// The Kafka subscriptions of the whole system: `(service, topics)`.
    pub fn subscriptions(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![
            ("order", vec![self.shipments_topic()]),
            ("shipping", vec![self.orders_topic()]),
            ("email", vec![self.orders_topic(), self.shipments_topic()]),
            ("loyalty", vec![self.orders_topic()]),
        ]
    }

    /// Every topic to create: the event topics and each group's dead-letter topic.
    pub fn all_topics(&self) -> Vec<String> {
        let mut topics = self.event_topics();
        for (service, subscribed) in self.subscriptions() {
            let group = self.consumer_group(service);
            topics.extend(subscribed.iter().map(|t| Self::dead_letter_topic(t, &group)));
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_prefixes_every_name() {
        let t = Topology::new("t7.");
        assert_eq!(t.stock_commands(), "t7.stock.commands");
        assert_eq!(t.orders_topic(), "t7.orders");
        assert_eq!(Topology::dead_letter_queue(&t.stock_commands()), "t7.stock.commands.dlq");
        assert!(t.all_topics().contains(&"t7.orders.t7.email.dlq".to_string()));
        assert_eq!(Topology::default().order_replies(), "order.replies");
    }
}
