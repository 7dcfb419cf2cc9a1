"""The naive client a user would write from the vendor's page: requests + sseclient-py, and one
autocommitted INSERT ... ON CONFLICT per odd through psycopg2. Prints its count on SIGTERM.

    naive.py STREAM_URL DSN LEAGUE...
"""

import json
import signal
import sys
import time

import psycopg2
import requests
import sseclient

UPSERT = """
INSERT INTO naive_odds (id, fixture_id, market, name, price, points, status, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (id) DO UPDATE SET price = EXCLUDED.price, points = EXCLUDED.points,
    status = EXCLUDED.status, updated_at = now()
"""
STATUS = {
    "copilot-odds": "open",
    "copilot-locked-odds": "locked",
    "copilot-settled-odds": "settled",
}


def main() -> None:
    url, dsn, leagues = sys.argv[1], sys.argv[2], sys.argv[3:]
    count = 0
    started = time.monotonic()

    def report(*_: object) -> None:
        elapsed = time.monotonic() - started
        print(json.dumps({"odds": count, "seconds": elapsed}), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    r = requests.get(url, params={"league": leagues}, stream=True)
    client = sseclient.SSEClient(r)  # type: ignore[arg-type]  # a response, as its README does
    for event in client.events():
        if event.event in STATUS:
            data = json.loads(event.data)
            for odd in data["data"]:
                cur.execute(
                    UPSERT,
                    (
                        odd["id"],
                        odd.get("fixture_id"),
                        odd.get("market"),
                        odd.get("name"),
                        odd.get("price"),
                        odd.get("points"),
                        STATUS[event.event],
                    ),
                )
                count += 1


if __name__ == "__main__":
    main()
