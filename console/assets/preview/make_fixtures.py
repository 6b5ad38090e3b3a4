#!/usr/bin/env python3
"""Writes the preview fixtures under api/: a map sample, a list of recent
orders and two journeys (one complete, one where shipping never answered).

The numbers follow a real order through the saga (POST /orders, ReserveStock,
StockReserved, ProcessPayment, PaymentSucceeded, OrderPaid, ShipmentScheduled,
OrderCompleted) with the span names the services emit. Run it again after
editing; serve.py only reads the JSON it writes.
"""

import datetime
import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
API = os.path.join(HERE, "api")

COMPLETE_ID = "0193e8a4-5b1c-7d2e-9f4a-8c31d7e60b52"
MISSING_ID = "0193e8a4-61f0-7a83-b2c5-1e9d04f7a3c8"
TRACE_COMPLETE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_MISSING = "9e107d9d372bb6826bd81d3542a419d6"
STARTED_MS = 1796580000123.0  # 2026-12-06T18:00:00.123Z

URLS = {
    "order": "http://127.0.0.1:8080",
    "stock": "http://127.0.0.1:8081",
    "payment": "http://127.0.0.1:8082",
    "shipping": "http://127.0.0.1:8083",
    "email": "http://127.0.0.1:8084",
    "loyalty": "http://127.0.0.1:8085",
}
DATABASE = {s: s for s in URLS}


def write(path, data):
    full = os.path.join(API, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(full, HERE))


class Journey:
    """Collects spans and hops in the shape of GET /api/orders/{id}."""

    def __init__(self, order_id, trace_id):
        self.order_id = order_id
        self.trace_id = trace_id
        self.spans = {}  # service -> [span]
        self.hops = []
        self.counter = 0

    def span(self, service, name, kind, start, duration, parent="", error=False, **attributes):
        self.counter += 1
        span_id = hashlib.sha1(f"{self.trace_id}/{self.counter}".encode()).hexdigest()[:16]
        attrs = {"order_id": self.order_id}
        attrs.update({k.replace("__", "."): v for k, v in attributes.items()})
        span = {
            "span_id": span_id,
            "parent_span_id": parent,
            "trace_id": self.trace_id,
            "name": name,
            "kind": kind,
            "start_ms": round(start, 1),
            "duration_ms": round(duration, 1),
            "error": error,
            "attributes": attrs,
        }
        self.spans.setdefault(service, []).append(span)
        return span

    def db(self, service, operation, start, duration, parent):
        return self.span(service, f"{operation} {DATABASE[service]}", "client", start, duration, parent["span_id"],
                         **{"db__system__name": "postgresql", "db__namespace": DATABASE[service],
                            "db__operation__name": operation, "server__address": "127.0.0.1", "server__port": 21432})

    def publish(self, service, destination, system, message_type, message_id, start, duration, parent):
        attrs = {"messaging__system": system, "messaging__operation__type": "send",
                 "messaging__destination__name": destination, "messaging__message__id": message_id,
                 "messaging__message__conversation_id": self.order_id, "message_type": message_type}
        if system == "kafka":
            attrs["messaging__destination__partition__id"] = "2"
            attrs["messaging__kafka__offset"] = 1840 + self.counter
        return self.span(service, f"send {destination}", "producer", start, duration, parent["span_id"], **attrs)

    def consume(self, service, destination, system, message_type, message_id, start, duration, parent, attempt=1):
        attrs = {"messaging__system": system, "messaging__operation__type": "process",
                 "messaging__destination__name": destination, "messaging__message__id": message_id,
                 "messaging__message__conversation_id": self.order_id, "messaging__consumer__group__name": service,
                 "message_type": message_type}
        if system == "kafka":
            attrs["messaging__destination__partition__id"] = "2"
            attrs["messaging__kafka__offset"] = 1840 + self.counter
        if attempt > 1:
            attrs["messaging.delivery_attempt"] = attempt
        return self.span(service, f"process {destination}", "consumer", start, duration, parent["span_id"], **attrs)

    def hop(self, message_type, destination, system, producer_service, producer, outbox_wait, consumers, expected):
        consumed = {c[0] for c in consumers}
        self.hops.append({
            "message_id": producer["attributes"]["messaging.message.id"],
            "message_type": message_type,
            "destination": destination,
            "system": system,
            "producer": {"service": producer_service, "span_id": producer["span_id"], "start_ms": producer["start_ms"],
                         "end_ms": round(producer["start_ms"] + producer["duration_ms"], 1)},
            "outbox_wait_ms": outbox_wait,
            "consumers": [
                {"service": service, "span_id": span["span_id"], "start_ms": span["start_ms"],
                 "end_ms": round(span["start_ms"] + span["duration_ms"], 1),
                 "broker_wait_ms": round(span["start_ms"] - (producer["start_ms"] + producer["duration_ms"]), 1),
                 "attempt": attempt}
                for service, span, attempt in consumers
            ],
            "expected_consumers": expected,
            "not_consumed_by": [s for s in expected if s not in consumed],
        })

    def body(self, status, history, missing, complete):
        order = ["order", "stock", "payment", "shipping", "email", "loyalty"]
        services = [{"name": s, "spans": sorted(self.spans[s], key=lambda x: x["start_ms"])} for s in order if s in self.spans]
        end = max(sp["start_ms"] + sp["duration_ms"] for lane in services for sp in lane["spans"])
        links = [
            {"service": "order", "url": f"{URLS['order']}/orders/{self.order_id}"},
            {"service": "stock", "url": f"{URLS['stock']}/reservations?order_id={self.order_id}"},
            {"service": "payment", "url": f"{URLS['payment']}/payments?order_id={self.order_id}"},
            {"service": "shipping", "url": f"{URLS['shipping']}/shipments?order_id={self.order_id}"},
            {"service": "email", "url": f"{URLS['email']}/emails?order_id={self.order_id}"},
            {"service": "loyalty", "url": f"{URLS['loyalty']}/customers/c-42/loyalty"},
        ]
        return {
            "order_id": self.order_id,
            "status": status,
            "status_error": None,
            "history": history,
            "links": links,
            "trace_ids": [self.trace_id],
            "started_at_unix_ms": STARTED_MS,
            "duration_ms": round(end, 1),
            "services": services,
            "hops": self.hops,
            "missing": missing,
            "complete": complete,
        }


def at(ms):
    """ISO time of an offset from the journey's start."""
    t = datetime.datetime.fromtimestamp((STARTED_MS + ms) / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}Z"


def saga(j, with_shipping=True):
    """The happy path; without shipping it stops once OrderPaid is out."""
    R, K = "rabbitmq", "kafka"
    kafka_consumers = ["shipping", "email", "loyalty"] if with_shipping else ["email", "loyalty"]
    expected_orders = ["shipping", "email", "loyalty"]

    http = j.span("order", "POST /orders", "server", 0.0, 14.6, **{
        "http__request__method": "POST", "http__route": "/orders", "url__path": "/orders", "url__scheme": "http",
        "http__response__status_code": 202})
    j.db("order", "INSERT", 3.1, 9.4, http)
    p1 = j.publish("order", "stock.commands", R, "stock.ReserveStock", "m-01-reserve", 16.8, 2.9, http)
    p2 = j.publish("order", "orders", K, "orders.OrderPlaced", "m-02-placed", 17.4, 4.1, http)

    # stock reserves
    c1 = j.consume("stock", "stock.commands", R, "stock.ReserveStock", "m-01-reserve", 22.6, 11.8, p1)
    j.db("stock", "TRANSACTION", 23.4, 10.1, c1)
    p3 = j.publish("stock", "order.replies", R, "stock.StockReserved", "m-03-reserved", 38.9, 2.2, c1)
    j.hop("stock.ReserveStock", "stock.commands", R, "order", p1, 4.3, [("stock", c1, 1)], ["stock"])

    # OrderPlaced reaches the event consumers, which only record it
    placed = []
    for service, start in zip(["shipping", "email", "loyalty"], [24.3, 25.1, 26.0]):
        if service in kafka_consumers:
            placed.append((service, j.consume(service, "orders", K, "orders.OrderPlaced", "m-02-placed", start, 1.2 + 0.3 * len(placed), p2), 1))
    j.hop("orders.OrderPlaced", "orders", K, "order", p2, 4.9, placed, expected_orders)

    # order applies StockReserved, asks for the payment
    c3 = j.consume("order", "order.replies", R, "stock.StockReserved", "m-03-reserved", 43.9, 13.5, p3)
    t3 = j.db("order", "TRANSACTION", 44.6, 11.9, c3)
    j.span("order", "saga: StockReserved", "internal", 47.2, 2.1, t3["span_id"], **{"saga.from": "PLACED", "saga.to": "STOCK_RESERVED"})
    p4 = j.publish("order", "payment.commands", R, "payment.ProcessPayment", "m-04-pay", 61.2, 2.6, c3)
    j.hop("stock.StockReserved", "order.replies", R, "stock", p3, 5.4, [("order", c3, 1)], ["order"])

    # payment charges the card
    c4 = j.consume("payment", "payment.commands", R, "payment.ProcessPayment", "m-04-pay", 66.9, 128.4, p4)
    t4 = j.db("payment", "TRANSACTION", 67.5, 126.9, c4)
    j.span("payment", "authorize card", "internal", 70.2, 118.0, t4["span_id"], **{"payment.method": "card", "payment.amount_cents": 6042})
    p5 = j.publish("payment", "order.replies", R, "payment.PaymentSucceeded", "m-05-paid", 200.1, 2.4, c4)
    j.hop("payment.ProcessPayment", "payment.commands", R, "order", p4, 4.7, [("payment", c4, 1)], ["payment"])

    # order applies PaymentSucceeded, publishes OrderPaid
    c5 = j.consume("order", "order.replies", R, "payment.PaymentSucceeded", "m-05-paid", 205.4, 12.7, p5)
    t5 = j.db("order", "TRANSACTION", 206.0, 11.6, c5)
    j.span("order", "saga: PaymentSucceeded", "internal", 208.1, 1.8, t5["span_id"], **{"saga.from": "STOCK_RESERVED", "saga.to": "PAID"})
    p6 = j.publish("order", "orders", K, "orders.OrderPaid", "m-06-orderpaid", 222.3, 3.9, c5)
    j.hop("payment.PaymentSucceeded", "order.replies", R, "payment", p5, 4.8, [("order", c5, 1)], ["order"])

    paid = []
    if with_shipping:
        s6 = j.consume("shipping", "orders", K, "orders.OrderPaid", "m-06-orderpaid", 229.8, 16.2, p6)
        j.db("shipping", "TRANSACTION", 230.5, 14.9, s6)
        paid.append(("shipping", s6, 1))
    e6 = j.consume("email", "orders", K, "orders.OrderPaid", "m-06-orderpaid", 236.4, 9.4, p6, attempt=2)
    te6 = j.db("email", "TRANSACTION", 237.0, 8.3, e6)
    j.span("email", "compose order confirmation", "internal", 238.1, 2.6, te6["span_id"], **{"email.kind": "order_confirmation"})
    paid.append(("email", e6, 2))
    l6 = j.consume("loyalty", "orders", K, "orders.OrderPaid", "m-06-orderpaid", 231.9, 7.9, p6)
    tl6 = j.db("loyalty", "TRANSACTION", 232.4, 6.8, l6)
    j.span("loyalty", "credit points", "internal", 233.6, 1.9, tl6["span_id"], **{"loyalty.points": 60, "customer_id": "c-42"})
    paid.append(("loyalty", l6, 1))
    j.hop("orders.OrderPaid", "orders", K, "order", p6, 4.6, paid, expected_orders)

    if not with_shipping:
        return

    # shipping schedules; order and email hear of it
    p7 = j.publish("shipping", "shipments", K, "shipments.ShipmentScheduled", "m-07-shipped", 251.3, 3.3, s6)
    o7 = j.consume("order", "shipments", K, "shipments.ShipmentScheduled", "m-07-shipped", 258.6, 12.8, p7)
    t7 = j.db("order", "TRANSACTION", 259.2, 11.7, o7)
    j.span("order", "saga: ShipmentScheduled", "internal", 261.0, 1.6, t7["span_id"], **{"saga.from": "PAID", "saga.to": "COMPLETED"})
    e7 = j.consume("email", "shipments", K, "shipments.ShipmentScheduled", "m-07-shipped", 259.9, 8.1, p7)
    te7 = j.db("email", "TRANSACTION", 260.4, 7.2, e7)
    j.span("email", "compose shipment notice", "internal", 261.3, 2.2, te7["span_id"], **{"email.kind": "shipment_notice"})
    j.hop("shipments.ShipmentScheduled", "shipments", K, "shipping", p7, 5.3, [("order", o7, 1), ("email", e7, 1)], ["order", "email"])

    p8 = j.publish("order", "orders", K, "orders.OrderCompleted", "m-08-completed", 276.1, 3.5, o7)
    done = []
    for service, start in zip(["shipping", "email", "loyalty"], [283.0, 283.6, 284.3]):
        done.append((service, j.consume(service, "orders", K, "orders.OrderCompleted", "m-08-completed", start, 1.0 + 0.2 * len(done), p8), 1))
    j.hop("orders.OrderCompleted", "orders", K, "order", p8, 5.2, done, expected_orders)


def journeys():
    j = Journey(COMPLETE_ID, TRACE_COMPLETE)
    saga(j, with_shipping=True)
    history = [
        {"from_status": None, "to_status": "PLACED", "at": at(11.9), "message_type": None, "note": None},
        {"from_status": "PLACED", "to_status": "STOCK_RESERVED", "at": at(55.8), "message_type": "stock.StockReserved", "note": None},
        {"from_status": "STOCK_RESERVED", "to_status": "PAID", "at": at(217.1), "message_type": "payment.PaymentSucceeded", "note": None},
        {"from_status": "PAID", "to_status": "COMPLETED", "at": at(270.4), "message_type": "shipments.ShipmentScheduled", "note": None},
    ]
    body = j.body("COMPLETED", history, [], True)
    write(f"orders/{COMPLETE_ID}.json", body)
    print("  spans:", sum(len(s["spans"]) for s in body["services"]), "hops:", len(body["hops"]))

    m = Journey(MISSING_ID, TRACE_MISSING)
    saga(m, with_shipping=False)
    history = history[:3]
    body = m.body("PAID", [dict(e, at=e["at"]) for e in history], [
        {"service": "shipping", "reason": "no spans from shipping: expected to consume orders.OrderPaid from orders"},
    ], False)
    write(f"orders/{MISSING_ID}.json", body)
    print("  spans:", sum(len(s["spans"]) for s in body["services"]), "hops:", len(body["hops"]))


def map_sample():
    def service(name, state="ready", detail=None, pending=0, oldest=0.0, pub=1.0, con=1.0):
        down = state == "down"
        return {"name": name, "kind": "service", "url": URLS[name], "state": state, "detail": detail,
                "outbox": None if down else {"pending": pending, "oldest_age_seconds": oldest},
                "published_per_second": None if down else pub, "consumed_per_second": None if down else con}

    def infra(name, state="ready", detail=None):
        return {"name": name, "kind": "infrastructure", "url": None, "state": state, "detail": detail, "outbox": None,
                "published_per_second": None, "consumed_per_second": None}

    def edge(channel, broker, kind, frm, to, waiting, per_second):
        return {"id": f"{channel}:{to}", "channel": channel, "broker": broker, "kind": kind, "from": frm, "to": to,
                "waiting": waiting, "waiting_label": "ready messages" if broker == "rabbitmq" else "consumer lag",
                "per_second": per_second}

    sample = {
        "sampled_at": "2026-12-06T18:00:00.123Z",
        "control": {"enabled": True, "reason": None, "token_required": False},
        "components": [
            service("order", pending=3, oldest=0.42, pub=12.5, con=7.5),
            service("stock", pub=2.5, con=2.5),
            service("payment", pub=2.5, con=2.5),
            service("shipping", pub=2.5, con=7.5),
            service("email", state="down", detail="connection refused"),
            service("loyalty", state="not_ready", detail="kafka consumer rejoining its group", pending=0, pub=0.0, con=4.8),
            infra("postgres"),
            infra("rabbitmq"),
            infra("kafka"),
        ],
        "edges": [
            edge("stock.commands", "rabbitmq", "command", "order", "stock", 0, 2.5),
            edge("payment.commands", "rabbitmq", "command", "order", "payment", 1, 2.5),
            edge("order.replies", "rabbitmq", "reply", "stock,payment", "order", 0, 5.0),
            edge("orders", "kafka", "event", "order", "shipping", 0, 7.5),
            edge("orders", "kafka", "event", "order", "email", 38, 0.0),
            edge("orders", "kafka", "event", "order", "loyalty", 4, 4.8),
            edge("shipments", "kafka", "event", "shipping", "order", 0, 2.5),
            edge("shipments", "kafka", "event", "shipping", "email", 12, 0.0),
        ],
        "dead_letters": [
            {"destination": "stock.commands.dlq", "broker": "rabbitmq", "from": "stock", "pending": 0},
            {"destination": "payment.commands.dlq", "broker": "rabbitmq", "from": "payment", "pending": 0},
            {"destination": "order.replies.dlq", "broker": "rabbitmq", "from": "order", "pending": 0},
            {"destination": "orders.shipping.dlq", "broker": "kafka", "from": "shipping", "pending": 0},
            {"destination": "orders.email.dlq", "broker": "kafka", "from": "email", "pending": 2},
            {"destination": "orders.loyalty.dlq", "broker": "kafka", "from": "loyalty", "pending": 0},
            {"destination": "shipments.order.dlq", "broker": "kafka", "from": "order", "pending": 0},
            {"destination": "shipments.email.dlq", "broker": "kafka", "from": "email", "pending": 0},
        ],
        "problems": ["email: GET http://127.0.0.1:8084/health/ready: connection refused"],
    }
    write("map.json", sample)


def orders_list():
    statuses = ["PAID", "COMPLETED", "COMPLETED", "STOCK_RESERVED", "COMPLETED", "CANCELLED", "COMPLETED", None,
                "COMPLETED", "COMPLETED", "PLACED", "COMPLETED", "COMPLETED", "CANCELLED", "COMPLETED", "COMPLETED",
                "COMPLETED", "COMPLETED"]
    all_services = ["order", "stock", "payment", "shipping", "email", "loyalty"]
    orders = []
    for i, status in enumerate(statuses):
        if i == 0:
            order_id, services, spans, status = MISSING_ID, ["order", "stock", "payment", "email", "loyalty"], 25, "PAID"
        elif i == 1:
            order_id, services, spans = COMPLETE_ID, all_services, 40
        else:
            order_id = f"0193e8a3-{0xf000 - i * 0x1b3:04x}-7{i:03x}-8{(i * 7919) % 0xfff:03x}-{(i * 0x9e3779b1) % (16 ** 12):012x}"
            services = {
                "PLACED": ["order"], "STOCK_RESERVED": ["order", "stock"], "CANCELLED": ["order", "stock", "payment", "shipping", "email", "loyalty"],
                "PAID": ["order", "stock", "payment", "email"],
            }.get(status, all_services)
            spans = {6: 40, 5: 36, 4: 22, 2: 9, 1: 4}.get(len(services), 30)
        t = 1796580000.0 - i * 7.3
        first = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        orders.append({"order_id": order_id, "first_seen": first, "status": status, "services": services, "spans": spans})
    write("orders.json", {"orders": orders})


if __name__ == "__main__":
    journeys()
    map_sample()
    orders_list()
