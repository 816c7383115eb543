"""Conformance of the exchange simulator with Coinbase's official Python SDK.

Coinbase's `coinbase-advanced-py` (its own JWT signing, request building and response types)
drives the simulator over every endpoint perps-bot uses, the edit-order calls and the market
data WebSocket. A misreading of the API shared by the bot's client and the simulator cannot
hide here: this client was written by Coinbase.

The only change to the SDK is the transport: it always speaks https to `base_url`, and the
simulator serves plain http, so requests to the simulator's host are sent over http. The JWT
(`uri` claim "METHOD host:port/path") and everything else are the SDK's own.

Environment: SIM_HOST (host:port), SIM_WS (ws URL), ES_KEY / ES_SECRET (ES256, SEC1 PEM as
Coinbase issues it), ED_KEY / ED_SECRET (Ed25519, base64), INTX_KEY / INTX_SECRET (a key whose
portfolio is INTX with derivatives). Prints one line per check; exits 1 at the first failure.
"""

import json
import os
import sys
import time
import uuid
from decimal import Decimal

from coinbase.rest import RESTClient
from coinbase.websocket import WSClient

HOST = os.environ["SIM_HOST"]
CHECKS = []
if os.environ.get("CONFORMANCE_DEBUG"):
    import logging

    logging.basicConfig(level=logging.DEBUG)


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    CHECKS.append(name)
    print(f"ok   {name}", flush=True)


def client(key, secret):
    rest = RESTClient(api_key=key, api_secret=secret, base_url=HOST, timeout=20)
    send = rest.session.request

    def over_http(method, url, **kwargs):
        prefix = f"https://{HOST}"
        if url.startswith(prefix):
            url = "http://" + url[len("https://"):]
        return send(method, url, **kwargs)

    rest.session.request = over_http
    return rest


def d(value):
    return Decimal(str(value))


def public_endpoints(rest):
    server = rest.get_unix_time()
    check("GET /time", abs(int(server.epoch_seconds) - time.time()) < 30, server.to_dict())
    products = rest.get_public_products(product_ids=["BTC-USD", "ETH-USD"])
    ids = sorted(p.product_id for p in products.products)
    check("GET /market/products (product_ids)", ids == ["BTC-USD", "ETH-USD"], ids)
    product = rest.get_public_product("BTC-USD")
    check("GET /market/products/{id}", product.product_id == "BTC-USD" and d(product.base_increment) > 0)
    now = int(time.time())
    candles = rest.get_public_candles("BTC-USD", start=str(now - 3600), end=str(now), granularity="ONE_MINUTE")
    starts = [int(c.start) for c in candles.candles]
    check("GET /market/products/{id}/candles", len(starts) >= 59 and starts == sorted(starts, reverse=True), starts[:3])
    book = rest.get_public_product_book("BTC-USD", limit=1)
    check("GET /market/product_book", d(book.pricebook.bids[0]["price"]) < d(book.pricebook.asks[0]["price"]))


def market_data(rest):
    products = rest.get_products(product_ids=["BTC-USD", "SOL-USD"])
    check("GET /products (product_ids)", sorted(p.product_id for p in products.products) == ["BTC-USD", "SOL-USD"])
    spot = rest.get_products(product_type="SPOT")
    check("GET /products (product_type)", all(p.product_type == "SPOT" for p in spot.products) and len(spot.products) >= 10)
    product = rest.get_product("ETH-USD")
    check("GET /products/{id}", product.product_id == "ETH-USD" and product.quote_currency_id == "USD", product.to_dict())
    now = int(time.time())
    candles = rest.get_candles("ETH-USD", start=str(now - 7200), end=str(now), granularity="ONE_HOUR")
    check("GET /products/{id}/candles", 1 <= len(candles.candles) <= 3, candles.to_dict())
    for c in candles.candles:
        check("candle fields", d(c.low) <= d(c.open) <= d(c.high) and d(c.low) <= d(c.close) <= d(c.high), c.to_dict())
    best = rest.get_best_bid_ask(product_ids=["BTC-USD", "ETH-USD"])
    books = {b.product_id: b for b in best.pricebooks}
    check("GET /best_bid_ask", set(books) == {"BTC-USD", "ETH-USD"}, best.to_dict())
    for b in books.values():
        check("best_bid_ask levels", d(b.bids[0]["price"]) < d(b.asks[0]["price"]) and b.time, b.to_dict())
    book = rest.get_product_book("BTC-USD", limit=5)
    check("GET /product_book", len(book.pricebook.bids) == 5 and len(book.pricebook.asks) == 5)


def account(rest):
    permissions = rest.get_api_key_permissions()
    check("GET /key_permissions", permissions.can_view and permissions.can_trade and not permissions.can_transfer)
    first = rest.get_accounts(limit=5)
    seen = [a.currency for a in first.accounts]
    check("GET /accounts (limit)", len(seen) == 5 and first.has_next and first.cursor, first.to_dict())
    cursor = first.cursor
    while cursor:
        page = rest.get_accounts(limit=5, cursor=cursor)
        seen += [a.currency for a in page.accounts]
        cursor = page.cursor if page.has_next else None
    check("GET /accounts (cursor pages)", "USD" in seen and "BTC" in seen and len(seen) == len(set(seen)), seen)
    usd = next(a for a in rest.get_accounts(limit=250).accounts if a.currency == "USD")
    check("account balances", d(usd.available_balance["value"]) == Decimal("100000"), usd.to_dict())
    summary = rest.get_transaction_summary()
    check("GET /transaction_summary", d(summary.fee_tier["taker_fee_rate"]) > 0, summary.to_dict())
    portfolios = rest.get_portfolios()
    check("GET /portfolios", len(portfolios.portfolios) == 1 and portfolios.portfolios[0].uuid, portfolios.to_dict())
    return portfolios.portfolios[0].uuid


def orders(rest):
    quote = rest.get_best_bid_ask(product_ids=["BTC-USD"]).pricebooks[0]
    bid, ask = d(quote.bids[0]["price"]), d(quote.asks[0]["price"])
    preview = rest.preview_market_order_buy(product_id="BTC-USD", base_size="0.001")
    check("POST /orders/preview", preview.errs == [] and d(preview.order_total) > d(preview.commission_total) > 0, preview.to_dict())

    coid = f"sdk-{uuid.uuid4()}"
    market = rest.market_order_buy(client_order_id=coid, product_id="BTC-USD", base_size="0.001")
    check("POST /orders market_market_ioc", market.success and market.success_response["client_order_id"] == coid, market.to_dict())
    order_id = market.success_response["order_id"]
    replay = rest.market_order_buy(client_order_id=coid, product_id="BTC-USD", base_size="0.001")
    check("POST /orders replay returns the original", replay.success_response["order_id"] == order_id, replay.to_dict())
    got = rest.get_order(order_id)
    check("GET /orders/historical/{id}", got.order.status == "FILLED" and d(got.order.filled_size) == Decimal("0.001"), got.order.to_dict())
    fills = rest.get_fills(order_ids=[order_id])
    check("GET /orders/historical/fills", len(fills.fills) >= 1 and all(f.order_id == order_id for f in fills.fills), fills.to_dict())
    check("fill commission", all(d(f.commission) > 0 for f in fills.fills))

    low = str((bid * Decimal("0.8")).quantize(Decimal("0.01")))
    gtc = rest.limit_order_gtc_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="0.001", limit_price=low)
    check("POST /orders limit_limit_gtc", gtc.success, gtc.to_dict())
    resting = gtc.success_response["order_id"]
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    gtd = rest.limit_order_gtd_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="0.001", limit_price=low, end_time=end)
    check("POST /orders limit_limit_gtd", gtd.success, gtd.to_dict())
    high = str((ask * Decimal("1.05")).quantize(Decimal("0.01")))
    fok = rest.limit_order_fok_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="0.001", limit_price=high)
    check("POST /orders limit_limit_fok", fok.success and rest.get_order(fok.success_response["order_id"]).order.status == "FILLED", fok.to_dict())
    ioc = rest.limit_order_ioc_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="0.001", limit_price=high)
    check("POST /orders sor_limit_ioc", ioc.success and rest.get_order(ioc.success_response["order_id"]).order.status == "FILLED", ioc.to_dict())
    stop = str((ask * Decimal("1.1")).quantize(Decimal("0.01")))
    limit = str((ask * Decimal("1.11")).quantize(Decimal("0.01")))
    stop_limit = rest.stop_limit_order_gtc_buy(
        client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="0.001",
        limit_price=limit, stop_price=stop, stop_direction="STOP_DIRECTION_STOP_UP",
    )
    check("POST /orders stop_limit_stop_limit_gtc", stop_limit.success, stop_limit.to_dict())
    refused = rest.market_order_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-USD", base_size="100")
    check("POST /orders refusal", refused.success is False and refused.error_response["error"] == "INSUFFICIENT_FUND", refused.to_dict())

    listed = rest.list_orders(product_ids=["BTC-USD"], order_status=["OPEN"])
    open_ids = {o.order_id for o in listed.orders}
    check("GET /orders/historical/batch (OPEN)", resting in open_ids and len(open_ids) == 3, listed.to_dict())
    everything = rest.list_orders(product_ids=["BTC-USD"], limit=2)
    check("GET /orders/historical/batch (pages)", len(everything.orders) == 2 and everything.has_next and everything.cursor)

    # Edits of the resting GTC order.
    lower = str(d(low) - 1)
    edit_preview = rest.preview_edit_order(order_id=resting, size="0.002", price=lower)
    check("POST /orders/edit_preview", edit_preview.errors == [] and d(edit_preview.base_size) == Decimal("0.002"), edit_preview.to_dict())
    edited = rest.edit_order(order_id=resting, size="0.002", price=lower)
    check("POST /orders/edit", edited.success, edited.to_dict())
    after = rest.get_order(resting).order
    config = after.order_configuration["limit_limit_gtc"]
    check("edited order", config["limit_price"] == lower and config["base_size"] == "0.002" and len(after.edit_history) == 1, after.to_dict())
    same = rest.edit_order(order_id=resting, size="0.002", price=lower)
    check("POST /orders/edit refusal", same.success is False and same.errors[0].edit_failure_reason == "EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST", same.to_dict())

    cancelled = rest.cancel_orders(order_ids=list(open_ids))
    check("POST /orders/batch_cancel", all(r.success for r in cancelled.results) and len(cancelled.results) == 3, cancelled.to_dict())
    again = rest.cancel_orders(order_ids=[resting])
    check("POST /orders/batch_cancel already done", again.results[0].success is False and again.results[0].failure_reason, again.to_dict())


def perpetuals(rest):
    portfolio = rest.get_portfolios().portfolios[0].uuid
    permissions = rest.get_api_key_permissions()
    check("INTX key permissions", permissions.portfolio_type == "INTX" and permissions.portfolio_uuid == portfolio, permissions.to_dict())
    product = rest.get_product("BTC-PERP-INTX")
    check("GET /products/{perp}", product.future_product_details["perpetual_details"]["max_leverage"], product.to_dict())
    order = rest.market_order_buy(client_order_id=f"sdk-{uuid.uuid4()}", product_id="BTC-PERP-INTX", base_size="0.01", leverage="2", margin_type="CROSS")
    check("POST /orders perpetual", order.success, order.to_dict())
    positions = rest.list_perps_positions(portfolio)
    check("GET /intx/positions/{uuid}", len(positions.positions) == 1 and d(positions.positions[0]["net_size"]) == Decimal("0.01"), positions.to_dict())


def websocket(key, secret):
    messages = []
    ws = WSClient(api_key=key, api_secret=secret, base_url=os.environ["SIM_WS"], on_message=messages.append, retry=False)
    ws.open()
    ws.subscribe(product_ids=["BTC-USD", "ETH-USD"], channels=["heartbeats", "ticker", "level2"])
    deadline = time.time() + 20
    while time.time() < deadline:
        channels = {json.loads(m).get("channel") for m in messages}
        if {"heartbeats", "ticker", "l2_data", "subscriptions"} <= channels:
            break
        ws.sleep_with_exception_check(1)
    ws.close()
    parsed = [json.loads(m) for m in messages]
    channels = {m.get("channel") for m in parsed}
    check("WebSocket subscribe with the SDK's JWT", {"heartbeats", "ticker", "l2_data", "subscriptions"} <= channels, channels)
    check("WebSocket has no errors", not any(m.get("type") == "error" for m in parsed), [m for m in parsed if m.get("type") == "error"])
    sequences = [m["sequence_num"] for m in parsed]
    check("WebSocket sequence numbers", sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences[:10])


def main():
    es = client(os.environ["ES_KEY"], os.environ["ES_SECRET"])
    ed = client(os.environ["ED_KEY"], os.environ["ED_SECRET"])
    intx = client(os.environ["INTX_KEY"], os.environ["INTX_SECRET"])
    public_endpoints(es)
    market_data(es)
    account(es)
    orders(es)
    check("Ed25519 keys sign for the SDK", ed.get_api_key_permissions().can_view)
    account(ed)
    perpetuals(intx)
    websocket(os.environ["ES_KEY"], os.environ["ES_SECRET"])
    print(f"{len(CHECKS)} checks passed", flush=True)


if __name__ == "__main__":
    main()
