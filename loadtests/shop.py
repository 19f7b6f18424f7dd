"""Shop users: the closed-loop ``ShopUser`` and the open-loop ``ArrivalUser``.

Both send ``X-API-Key``, use the grouped request names of ``NAMES``, and report the time
from placing an order to seeing it terminal as a request event of type ``ORDER`` named
``order completion``: a failure only when the order is still PENDING after
``LOAD_ORDER_TIMEOUT`` seconds (CANCELLED is an outcome of the saga, not a failure).

``ShopUser`` waits for each answer and then ``wait_time``: a slow platform makes it send
less, which hides latency (coordinated omission). ``ArrivalUser`` sends at a constant rate
instead: ``LOAD_USER_RATE`` arrivals a second on a fixed schedule, each in a greenlet of its
own, timed from the moment it was due, at most ``LOAD_MAX_OUTSTANDING`` in flight (an arrival
over the cap is a failure, never dropped).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from locust import FastHttpUser, between, task
from locust.env import Environment

from loadtests.data import ShopData, env_duration, env_float, env_int, load_seed

POST_ORDER = "POST /api/orders"
GET_ORDER = "GET /api/orders/{id}"
LIST_STOCK = "GET /api/stock"
GET_SKU = "GET /api/stock/{sku}"
NOTIFICATIONS = "GET /api/notifications"
NAMES = (POST_ORDER, GET_ORDER, LIST_STOCK, GET_SKU, NOTIFICATIONS)
ORDER = "ORDER"
COMPLETION = "order completion"
TERMINAL = ("CONFIRMED", "CANCELLED")

# What a shopper does, and how often (both modes): browse more than buy.
ACTIONS = ("order", "stock", "sku", "notifications")
WEIGHTS = (2, 3, 4, 1)
# The request an action starts with: an arrival over the cap is reported under it.
FIRST_REQUEST = {
    "order": ("POST", POST_ORDER),
    "stock": ("GET", LIST_STOCK),
    "sku": ("GET", GET_SKU),
    "notifications": ("GET", NOTIFICATIONS),
}


class OrderNotTerminal(Exception):
    """The order did not reach CONFIRMED or CANCELLED in time."""


class OverCapacity(Exception):
    """An open-loop arrival found LOAD_MAX_OUTSTANDING requests in flight."""


@dataclass(frozen=True)
class LoadSettings:
    api_key: str
    seed: int = 1
    order_timeout: float = 60.0
    poll_interval: float = 0.25
    user_rate: float = 5.0
    max_outstanding: int = 500
    decline_share: float = 0.0
    orders_path: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], api_key: str) -> LoadSettings:
        return cls(
            api_key=api_key,
            seed=load_seed(environ),
            order_timeout=env_duration(environ, "LOAD_ORDER_TIMEOUT", 60.0),
            poll_interval=env_float(environ, "LOAD_POLL_INTERVAL", 0.25, exclusive_minimum=True),
            user_rate=env_float(environ, "LOAD_USER_RATE", 5.0, exclusive_minimum=True),
            max_outstanding=env_int(environ, "LOAD_MAX_OUTSTANDING", 500, minimum=1),
            decline_share=env_float(environ, "LOAD_DECLINE_SHARE", 0.0, maximum=1.0),
            orders_path=environ.get("LOAD_ORDERS") or None,
        )


class Shared:
    """What the users of one Locust process share."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        self.user_numbers = itertools.count()  # each user's data stream, in spawn order
        self.outstanding = 0  # open-loop requests in flight (greenlets: no lock needed)
        self.recent_orders: deque[str] = deque(maxlen=200)
        path = settings.orders_path
        self._orders_file = open(path, "a", encoding="utf-8") if path else None

    def accepted(self, order_id: str) -> None:
        self.recent_orders.append(order_id)
        if self._orders_file is not None:
            self._orders_file.write(json.dumps({"id": order_id, "at": time.time()}) + "\n")
            self._orders_file.flush()  # the drills audit this file while the load runs

    def close(self) -> None:
        if self._orders_file is not None:
            self._orders_file.close()
            self._orders_file = None


_shared: Shared | None = None


def configure(settings: LoadSettings) -> Shared:
    """Set what every user of this process uses; the locustfile calls it at Locust's init."""
    global _shared
    if _shared is not None:
        _shared.close()
    _shared = Shared(settings)
    return _shared


def shared() -> Shared:
    if _shared is None:
        raise RuntimeError("shop.configure() was not called: run loadtests/locustfile.py")
    return _shared


def error_of(response: Any) -> str:
    """A short reason for a failed answer: the HTTP status and the API's error code."""
    if not response.status_code:
        error = getattr(response, "error", None)
        return f"{type(error).__name__}: {error}" if error else "no answer"
    try:
        code = response.json()["error"]["code"]
    except Exception:  # not the API's error shape (a proxy, a crash page)
        code = ""
    return f"HTTP {response.status_code} {code}".strip()


class ShopClient:
    """The shop's API as a user calls it: one method per request, grouped names, JSON back."""

    def __init__(self, user: FastHttpUser, state: Shared) -> None:
        self.user = user
        self.state = state
        self.headers = {"X-API-Key": state.settings.api_key}
        stream = next(state.user_numbers)
        self.data = ShopData(state.settings.seed, stream, state.settings.decline_share)
        self.last_order: str | None = None

    def call(
        self,
        method: str,
        path: str,
        name: str,
        expect: int,
        body: Any = None,
        due: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; its JSON answer, or None after reporting a failure. With ``due`` (a
        ``perf_counter`` time) the response time counts from then, not from the send."""
        with self.user.client.request(
            method,
            path,
            name=name,
            json=body,
            headers={**self.headers, **headers} if headers else self.headers,
            catch_response=True,
        ) as response:
            if due is not None:
                # Waiting for a free connection or a late start is latency the shopper sees.
                response.request_meta["response_time"] = (time.perf_counter() - due) * 1000
            if response.status_code != expect:
                response.failure(error_of(response))
                return None
            try:
                return response.json()
            except ValueError:
                response.failure("answer is not JSON")
                return None

    def list_stock(self, due: float | None = None) -> None:
        self.call("GET", "/api/stock", LIST_STOCK, 200, due=due)

    def get_sku(self, due: float | None = None) -> None:
        self.call("GET", f"/api/stock/{self.data.sku()}", GET_SKU, 200, due=due)

    def place_order(self, due: float | None = None) -> str | None:
        # A new key per order, as a careful client sends: the gateway may then retry the POST
        # on another replica when the first one dies mid-request, and orders creates it once.
        key = {"Idempotency-Key": uuid.uuid4().hex}
        body = self.data.order()
        order = self.call("POST", "/api/orders", POST_ORDER, 202, body=body, due=due, headers=key)
        if order is None:
            return None
        self.last_order = order["id"]
        self.state.accepted(order["id"])
        return str(order["id"])

    def get_order(self, order_id: str) -> str | None:
        order = self.call("GET", f"/api/orders/{order_id}", GET_ORDER, 200)
        return None if order is None else str(order["status"])

    def notifications(self, order_id: str | None = None, due: float | None = None) -> None:
        recent = self.state.recent_orders
        order_id = order_id or self.last_order or (recent[-1] if recent else None)
        query = f"order_id={order_id}" if order_id else f"customer_id={self.data.customer()}"
        self.call("GET", f"/api/notifications?{query}", NOTIFICATIONS, 200, due=due)

    def follow(self, order_id: str, placed: float, limit_in_flight: bool = False) -> bool:
        """Poll the order until it is terminal, then report its completion time (from
        ``placed``, a ``perf_counter`` time). ``limit_in_flight``: open loop, where a poll
        waits for the next round while LOAD_MAX_OUTSTANDING requests are in flight."""
        settings = self.state.settings
        deadline = placed + settings.order_timeout
        status = "PENDING"
        while time.perf_counter() < deadline:
            gevent.sleep(settings.poll_interval)
            if limit_in_flight and self.state.outstanding >= settings.max_outstanding:
                continue
            self.state.outstanding += 1
            try:
                status = self.get_order(order_id) or status
            finally:
                self.state.outstanding -= 1
            if status in TERMINAL:
                self.report_completion(placed, None, status)
                return True
        late = OrderNotTerminal(f"not terminal after {settings.order_timeout:g}s ({status})")
        self.report_completion(placed, late, status)
        return False

    def report_completion(self, placed: float, exception: Exception | None, status: str) -> None:
        self.user.environment.events.request.fire(
            request_type=ORDER,
            name=COMPLETION,
            response_time=(time.perf_counter() - placed) * 1000,
            response_length=0,
            exception=exception,
            context={"status": status},
        )


class ShopUser(FastHttpUser):
    """A shopper who waits for each answer: browses stock, orders, watches the order until
    it is terminal, reads its notification."""

    wait_time = between(0.5, 1.5)
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.shop = ShopClient(self, shared())

    @task(WEIGHTS[ACTIONS.index("order")])
    def order(self) -> None:
        placed = time.perf_counter()
        order_id = self.shop.place_order()
        if order_id is not None and self.shop.follow(order_id, placed):
            self.shop.notifications(order_id)

    @task(WEIGHTS[ACTIONS.index("stock")])
    def stock(self) -> None:
        self.shop.list_stock()

    @task(WEIGHTS[ACTIONS.index("sku")])
    def sku(self) -> None:
        self.shop.get_sku()

    @task(WEIGHTS[ACTIONS.index("notifications")])
    def read_notifications(self) -> None:
        self.shop.notifications()


class ArrivalUser(FastHttpUser):
    """An arrival source: LOAD_USER_RATE shopper actions a second on a fixed schedule,
    whatever the answers take (open loop)."""

    network_timeout = 30.0
    connection_timeout = 10.0
    # Connections of this user's pool; more arrivals in flight wait for one, and that wait
    # counts in their response time.
    concurrency = 50

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.shop = ShopClient(self, shared())
        self.interval = 1.0 / self.shop.state.settings.user_rate
        # A random phase, so that the users' schedules do not all fire at the same instant.
        self.next_due = time.perf_counter() + self.shop.data.rng.random() * self.interval

    def wait_time(self) -> float:
        # Waiting between arrivals (not sleeping inside a task) lets Locust stop the user at
        # once, even with --stop-timeout.
        return max(0.0, self.next_due - time.perf_counter())

    @task
    def arrivals(self) -> None:
        # Behind schedule (a busy CPU), the missed arrivals go at once: they were due.
        while self.next_due <= time.perf_counter():
            self.arrive(self.next_due)
            self.next_due += self.interval

    def arrive(self, due: float) -> None:
        state = self.shop.state
        action = self.shop.data.pick(ACTIONS, WEIGHTS)
        if state.outstanding >= state.settings.max_outstanding:
            method, name = FIRST_REQUEST[action]
            self.environment.events.request.fire(
                request_type=method,
                name=name,
                response_time=(time.perf_counter() - due) * 1000,
                response_length=0,
                exception=OverCapacity(
                    f"over LOAD_MAX_OUTSTANDING ({state.settings.max_outstanding} in flight)"
                ),
                context={},
            )
            return
        state.outstanding += 1  # counted now: arrivals of this same instant see it
        gevent.spawn(self.run_action, action, due)

    def run_action(self, action: str, due: float) -> None:
        state = self.shop.state
        order_id = None
        try:
            if action == "order":
                order_id = self.shop.place_order(due)
            elif action == "stock":
                self.shop.list_stock(due)
            elif action == "sku":
                self.shop.get_sku(due)
            else:
                self.shop.notifications(due=due)
        finally:
            state.outstanding -= 1
        if action == "order" and order_id is not None:
            self.shop.follow(order_id, due, limit_in_flight=True)
